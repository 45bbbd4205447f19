//! What the outbound tests share: a fake DNS server, SMTP sinks, and a "world" with a
//! context, a queue, the outbound runner and a local runner that files bounces into a
//! mailbox.

#![allow(dead_code)]

pub mod dns;
pub mod sink;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermod_common::{Config, Context};
use hermod_mta::envelope::Notify;
use hermod_mta::outbound::{OutboundRunner, OutboundSettings, OutboundStats};
use hermod_mta::session::BackendError;
use hermod_mta::{
    DeliveryError, Envelope, EnvelopeRecipient, LocalDelivery, LocalDomains, LocalRunner, Queue,
    QueueId, RunnerSettings, queue_dir,
};
use tokio_util::sync::CancellationToken;

use dns::FakeDns;

pub const LOCAL_DOMAIN: &str = "hermod.test";
pub const MYHOSTNAME: &str = "mx.hermod.test";

/// Local mailboxes: what the local runner delivered (bounces, here).
#[derive(Default)]
pub struct Mailbox {
    pub delivered: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl LocalDelivery for Mailbox {
    async fn deliver(
        &self,
        sender: &str,
        recipient: &str,
        message: &[u8],
    ) -> Result<(), DeliveryError> {
        self.delivered
            .lock()
            .unwrap()
            .push((sender.into(), recipient.into(), message.to_vec()));
        Ok(())
    }
}

impl LocalDomains for Mailbox {
    async fn is_local_domain(&self, domain: &str) -> Result<bool, BackendError> {
        Ok(domain == LOCAL_DOMAIN)
    }
}

pub struct World {
    pub tmp: tempfile::TempDir,
    pub ctx: Arc<Context>,
    pub queue: Arc<Queue>,
    pub dns: FakeDns,
    /// The port every sink listens on (`[delivery] remote_port`).
    pub port: u16,
    _port_holder: std::net::TcpListener,
    pub mailbox: Arc<Mailbox>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl World {
    pub async fn new(configure: impl FnOnce(&mut Config, &SocketAddr, u16)) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dns = FakeDns::start().await;
        // Holding the port on 127.0.0.1 keeps other tests from picking it.
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = holder.local_addr().unwrap().port();
        let mut config = Config::defaults(true);
        config.data_dir = tmp.path().to_path_buf();
        config.myhostname = MYHOSTNAME.into();
        config.mydomain = LOCAL_DOMAIN.into();
        config.myorigin = LOCAL_DOMAIN.into();
        config.listen = Vec::new();
        config.dns.nameservers = vec![hermod_common::config::ListenAddrString(
            dns.addr.to_string(),
        )];
        config.delivery.remote_port = port;
        config.delivery.minimal_backoff_time = 1;
        config.delivery.maximal_backoff_time = 2;
        configure(&mut config, &dns.addr, port);
        let ctx = Context::open(config).await.unwrap();
        ctx.directory.add_domain(LOCAL_DOMAIN).await.unwrap();
        ctx.directory
            .add_user("alice@hermod.test", "secret", 0)
            .await
            .unwrap();
        let queue = Arc::new(Queue::open(queue_dir(&ctx.config)).await.unwrap());
        World {
            tmp,
            ctx,
            queue,
            dns,
            port,
            _port_holder: holder,
            mailbox: Arc::default(),
            shutdown: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// The config's settings, made quick for tests.
    pub fn settings(&self) -> OutboundSettings {
        let mut s = OutboundSettings::from_config(&self.ctx.config);
        s.poll_interval = Duration::from_millis(100);
        s.timeouts.connect = Duration::from_secs(3);
        s.timeouts.command = Duration::from_secs(10);
        s.timeouts.data = Duration::from_secs(10);
        s.connection_idle = Duration::from_millis(300);
        s
    }

    /// Starts the outbound runner (and the local runner that delivers bounces).
    pub fn start(&mut self, settings: OutboundSettings) -> Arc<OutboundStats> {
        let runner = OutboundRunner::new(self.ctx.clone(), self.queue.clone(), settings).unwrap();
        let stats = runner.stats();
        self.tasks
            .push(tokio::spawn(runner.run(self.shutdown.clone())));
        // The daemon's settings (myorigin, backoff, delay_warning_time), polling faster.
        let mut local: RunnerSettings = hermod_mta::server::runner_settings(&self.ctx.config);
        local.poll_interval = Duration::from_millis(100);
        let local = LocalRunner::new(
            self.queue.clone(),
            self.mailbox.clone(),
            self.mailbox.clone(),
            local,
        );
        self.tasks
            .push(tokio::spawn(local.run(self.shutdown.clone())));
        stats
    }

    /// Stops the runners, waiting for them.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("runner did not stop")
                .unwrap();
        }
        self.shutdown = CancellationToken::new();
    }

    /// A sink address on loopback address `ip` and the shared port.
    pub fn at(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), self.port)
    }

    /// Queues a message as the SMTP server would.
    pub async fn send(&self, sender: &str, recipients: &[&str], content: &[u8]) -> QueueId {
        let recipients: Vec<(&str, Notify)> =
            recipients.iter().map(|r| (*r, Notify::default())).collect();
        self.send_with_notify(sender, &recipients, content).await
    }

    /// Queues a message whose recipients came with these `NOTIFY=` parameters.
    pub async fn send_with_notify(
        &self,
        sender: &str,
        recipients: &[(&str, Notify)],
        content: &[u8],
    ) -> QueueId {
        let id = QueueId::generate();
        let envelope = Envelope {
            sender: sender.into(),
            recipients: recipients
                .iter()
                .map(|(r, notify)| EnvelopeRecipient {
                    address: r.to_string(),
                    local: r.ends_with(&format!("@{LOCAL_DOMAIN}")),
                    notify: *notify,
                    orcpt: None,
                })
                .collect(),
            client: "[127.0.0.1] test".into(),
            ..Envelope::default()
        };
        self.queue.enqueue(&id, &envelope, content).await.unwrap();
        id
    }

    /// Bounces filed into local mailboxes.
    pub fn bounces(&self) -> Vec<(String, String, Vec<u8>)> {
        self.mailbox.delivered.lock().unwrap().clone()
    }

    pub async fn queue_is_empty(&self) -> bool {
        self.queue.list().await.unwrap().is_empty()
    }
}

/// Polls `check` until it gives a value (15 s at most).
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A message with a line that needs dot-stuffing and 7-bit content.
pub const MESSAGE: &[u8] = b"From: alice@hermod.test\r\nTo: bob@remote.test\r\nSubject: hello\r\nMessage-ID: <1@hermod.test>\r\n\r\nHello Bob.\r\n.\r\n..leading dots\r\nBye.\r\n";
