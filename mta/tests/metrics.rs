//! The MTA's Prometheus metrics, end to end on loopback: `hermod_queue_size` follows the
//! queue (start-up, enqueue, delivery, bounce, a delete by another process), and remote
//! deliveries move the delivered/deferred/bounced counters and the latency histogram as
//! local ones do. One test in its own binary: the metrics are process-wide.

mod outbound_support;

use std::sync::Arc;

use hermod_common::metrics::{self, Counter, Gauge};
use hermod_mta::Queue;
use outbound_support::sink::{Sink, SinkOptions};
use outbound_support::{MESSAGE, World, wait_for};

/// The delivery latency observations so far, as `/metrics` shows them.
fn latency_count() -> u64 {
    metrics::render(|_| 0)
        .lines()
        .find_map(|l| l.strip_prefix("hermod_delivery_latency_seconds_count "))
        .and_then(|v| v.parse().ok())
        .expect("the latency histogram")
}

fn queue_gauge() -> i64 {
    metrics::gauge(Gauge::QueueSize)
}

#[tokio::test]
async fn queue_size_gauge_and_delivery_counters() {
    let mut w = World::new(|_, _, _| {}).await;
    for (domain, ip) in [
        ("ok.test", "127.0.0.30"),
        ("busy.test", "127.0.0.31"),
        ("gone.test", "127.0.0.32"),
    ] {
        w.dns.mx(domain, 10, &format!("mx.{domain}"));
        w.dns.address(&format!("mx.{domain}"), ip);
    }
    let ok = Sink::start(w.at("127.0.0.30"), SinkOptions::default()).await;
    let _busy = Sink::start(
        w.at("127.0.0.31"),
        SinkOptions {
            rcpt: Arc::new(|_| "451 4.3.0 Try again later".into()),
            ..SinkOptions::default()
        },
    )
    .await;
    let _gone = Sink::start(
        w.at("127.0.0.32"),
        SinkOptions {
            rcpt: Arc::new(|_| "550 5.1.1 No such user".into()),
            ..SinkOptions::default()
        },
    )
    .await;
    let delivered = metrics::get(Counter::MessagesDelivered);
    let deferred = metrics::get(Counter::MessagesDeferred);
    let bounced = metrics::get(Counter::MessagesBounced);
    let latencies = latency_count();

    // Start-up: messages queued before the daemon started are counted.
    let mut waiting = Vec::new();
    for i in 0..3 {
        waiting.push(
            w.send("alice@hermod.test", &[&format!("u{i}@busy.test")], MESSAGE)
                .await,
        );
    }
    w.start(w.settings());
    wait_for("the gauge after start-up", async || {
        (queue_gauge() == 3).then_some(())
    })
    .await;
    for id in &waiting {
        wait_for("a deferral", async || {
            let m = w.queue.show(id).await.unwrap()?;
            (m.recipients[0].attempts >= 1).then_some(())
        })
        .await;
    }
    assert_eq!(queue_gauge(), 3, "deferred messages stay counted");

    // Enqueue: counted at once (this one will wait too: nothing can take it away).
    waiting.push(
        w.send("alice@hermod.test", &["u3@busy.test"], MESSAGE)
            .await,
    );
    assert_eq!(queue_gauge(), 4);
    // Delivered remotely, bounced (the bounce is filed locally), delivered locally: all
    // leave the queue.
    w.send("alice@hermod.test", &["bob@ok.test"], MESSAGE).await;
    w.send("alice@hermod.test", &["x@gone.test"], MESSAGE).await;
    w.send("bob@example.net", &["alice@hermod.test"], MESSAGE)
        .await;
    wait_for("delivery, the bounce and local delivery", async || {
        let done = !ok.messages().is_empty()
            && w.bounces().len() == 2
            && w.queue.list().await.unwrap().len() == 4;
        done.then_some(())
    })
    .await;
    assert_eq!(queue_gauge(), 4);
    assert_eq!(queue_gauge(), w.queue.list().await.unwrap().len() as i64);

    // Counters: the remote copy delivered, the remote failure bounced, the busy server's
    // replies deferred; latency for the remote and the two local deliveries.
    assert_eq!(metrics::get(Counter::MessagesDelivered) - delivered, 1);
    assert_eq!(metrics::get(Counter::MessagesBounced) - bounced, 1);
    assert!(metrics::get(Counter::MessagesDeferred) - deferred >= 4);
    assert_eq!(latency_count() - latencies, 3);

    // `hermod queue delete` in another process: seen at the next sweep.
    let cli = Queue::open(w.queue.dir()).await.unwrap();
    assert!(cli.delete(&waiting[0]).await.unwrap());
    wait_for("the gauge after a delete elsewhere", async || {
        (queue_gauge() == 3).then_some(())
    })
    .await;
    // And a delete in this process at once.
    assert!(w.queue.delete(&waiting[1]).await.unwrap());
    assert_eq!(queue_gauge(), 2);
    w.stop().await;
}
