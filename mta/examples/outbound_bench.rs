//! Outbound delivery benchmark: queues N messages for a remote domain, then lets the outbound
//! runner deliver them to an SMTP sink on loopback through the relay host setting, and prints
//! the messages per second delivered and the connections used (connection reuse).
//!
//! ```text
//! cargo run --release -p hermod-mta --example outbound_bench -- \
//!     [--messages 10000] [--size 5120] [--recipients 1] [--sink 127.0.0.1:PORT]
//! ```
//!
//! Without `--sink` an in-process sink (the one of the outbound tests, PIPELINING, 250 to
//! everything) listens on 127.0.0.2. With `--sink` an outside one is used, e.g. Postfix's
//! `smtp-sink -c 127.0.0.1:2526 1000`, the same sink Postfix can be measured against.

#[path = "../tests/outbound_support/sink.rs"]
#[allow(dead_code)]
mod sink;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hermod_common::{Config, Context};
use hermod_mta::envelope::Notify;
use hermod_mta::outbound::{OutboundRunner, OutboundSettings};
use hermod_mta::queue::Destination;
use hermod_mta::{Envelope, EnvelopeRecipient, Queue, QueueId, queue_dir};
use tokio_util::sync::CancellationToken;

struct Options {
    messages: usize,
    size: usize,
    recipients: usize,
    sink: Option<SocketAddr>,
}

fn options() -> Options {
    let mut o = Options {
        messages: 10_000,
        size: 5 * 1024,
        recipients: 1,
        sink: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--messages" => o.messages = value.parse().expect("--messages N"),
            "--size" => o.size = value.parse().expect("--size BYTES"),
            "--recipients" => o.recipients = value.parse().expect("--recipients N"),
            "--sink" => o.sink = Some(value.parse().expect("--sink IP:PORT")),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn message(size: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: bench@hermod.test\r\nTo: user{n}@remote.test\r\nSubject: outbound {n}\r\n\
         Message-ID: <{n}@hermod.test>\r\n\r\n"
    )
    .into_bytes();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

#[tokio::main]
async fn main() {
    let o = options();
    let tmp = tempfile::tempdir().expect("temporary directory");

    let local_sink = match o.sink {
        Some(_) => None,
        None => Some(
            sink::Sink::start("127.0.0.2:0".parse().unwrap(), sink::SinkOptions::default()).await,
        ),
    };
    let sink_addr = o
        .sink
        .unwrap_or_else(|| local_sink.as_ref().map(|s| s.addr).unwrap());

    let mut config = Config::defaults(true);
    config.data_dir = tmp.path().to_path_buf();
    config.myhostname = "bench.hermod.test".into();
    config.listen = Vec::new();
    config.relayhost = Some(
        format!("[{}]:{}", sink_addr.ip(), sink_addr.port())
            .parse()
            .unwrap(),
    );
    let ctx = Context::open(config).await.expect("context");
    let queue = Arc::new(Queue::open(queue_dir(&ctx.config)).await.expect("queue"));

    // Queue everything first (many writers at once, as SMTP sessions would).
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    let per_writer = o.messages.div_ceil(50);
    for w in 0..50 {
        let queue = queue.clone();
        let (size, recipients, total) = (o.size, o.recipients, o.messages);
        writers.spawn(async move {
            for n in (w * per_writer)..((w + 1) * per_writer).min(total) {
                let envelope = Envelope {
                    sender: "bench@hermod.test".into(),
                    recipients: (0..recipients)
                        .map(|r| EnvelopeRecipient {
                            address: format!("user{n}.{r}@remote.test"),
                            local: false,
                            notify: Notify::default(),
                            orcpt: None,
                        })
                        .collect(),
                    client: "[127.0.0.1] bench".into(),
                    ..Envelope::default()
                };
                queue
                    .enqueue(&QueueId::generate(), &envelope, &message(size, n))
                    .await
                    .expect("enqueue");
            }
        });
    }
    while writers.join_next().await.is_some() {}
    let queued_in = started.elapsed();
    println!(
        "queued {} messages of {} bytes ({} recipient(s) each) in {:.2} s",
        o.messages,
        o.size,
        o.recipients,
        queued_in.as_secs_f64()
    );

    let settings = OutboundSettings::from_config(&ctx.config);
    let runner = OutboundRunner::new(ctx.clone(), queue.clone(), settings).expect("runner");
    let stats = runner.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runner.run(shutdown.clone()));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        let settled = stats.recipients_sent.load(Ordering::Relaxed)
            + stats.recipients_bounced.load(Ordering::Relaxed);
        let done = settled as usize >= o.messages * o.recipients
            && queue
                .next_due(Destination::Remote)
                .await
                .expect("queue")
                .is_none();
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = task.await;

    let sent = stats.messages_sent.load(Ordering::Relaxed);
    println!(
        "delivered {sent} messages in {elapsed:.2} s: {:.0} messages/s",
        sent as f64 / elapsed
    );
    println!(
        "connections used: {} (runner), {} messages per connection",
        stats.connections.load(Ordering::Relaxed),
        sent / stats.connections.load(Ordering::Relaxed).max(1)
    );
    if let Some(s) = &local_sink {
        println!(
            "sink: {} messages over {} connections",
            s.count(),
            s.connections()
        );
    }
    println!(
        "recipients: {} sent, {} deferred, {} bounced",
        stats.recipients_sent.load(Ordering::Relaxed),
        stats.recipients_deferred.load(Ordering::Relaxed),
        stats.recipients_bounced.load(Ordering::Relaxed)
    );
}
