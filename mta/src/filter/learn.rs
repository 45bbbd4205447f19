//! Junk that learns: what users move into Junk over IMAP goes to rspamd's controller as spam
//! (`POST /learnspam`), what they move out of it as ham (`/learnham`).
//!
//! The IMAP command only queues a report ([`Learner`] implements
//! [`JunkFeedback`]): one task reads the messages and talks to the controller, one message at
//! a time. The queue is bounded; a report that does not fit is dropped with a log line, so a
//! slow or absent controller never slows IMAP.

use std::sync::Arc;
use std::time::Duration;

use hermod_common::junk_feedback::{JunkFeedback, JunkReport};
use hermod_common::{Config, Shutdown};
use hyper::StatusCode;
use hyper::body::Bytes;
use tokio::sync::mpsc;

use super::FilterSetupError;
use super::http::Endpoint;

/// Reports waiting for the controller at most.
pub const QUEUE: usize = 256;
/// Messages learnt per report at most (a user selecting a whole folder).
const MAX_PER_REPORT: usize = 1000;
const MAX_REPLY: usize = 64 * 1024;

pub struct Learner {
    queue: mpsc::Sender<JunkReport>,
}

impl Learner {
    /// Starts the learning task when `[spam] rspamd_controller_url` is set.
    pub fn start(
        config: &Config,
        shutdown: &Shutdown,
    ) -> Result<Option<Arc<Learner>>, FilterSetupError> {
        let Some(url) = &config.spam.rspamd_controller_url else {
            return Ok(None);
        };
        let controller = Controller {
            endpoint: Endpoint::parse(url, 11334).map_err(FilterSetupError)?,
            password: config.spam.rspamd_password.clone(),
            timeout: Duration::from_secs(config.spam.rspamd_timeout.max(1)),
            max_size: config.spam.max_scan_size,
        };
        let (queue, reports) = mpsc::channel(QUEUE);
        let stop = shutdown.clone();
        shutdown.spawn(async move {
            tokio::select! {
                _ = controller.run(reports) => {}
                _ = stop.triggered() => {}
            }
        });
        Ok(Some(Arc::new(Learner { queue })))
    }
}

impl JunkFeedback for Learner {
    fn report(&self, report: JunkReport) {
        if let Err(e) = self.queue.try_send(report) {
            let report = match &e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            tracing::warn!(user = %report.address, messages = report.uids.len(),
                spam = report.spam, "rspamd learning queue full: report dropped");
        }
    }
}

struct Controller {
    endpoint: Endpoint,
    password: Option<String>,
    timeout: Duration,
    max_size: u64,
}

impl Controller {
    async fn run(self, mut reports: mpsc::Receiver<JunkReport>) {
        while let Some(report) = reports.recv().await {
            for uid in report.uids.iter().take(MAX_PER_REPORT) {
                self.learn(&report, *uid).await;
            }
        }
    }

    async fn learn(&self, report: &JunkReport, uid: u32) {
        let path = if report.spam {
            "/learnspam"
        } else {
            "/learnham"
        };
        let message = match report.user.read(&report.mailbox, uid).await {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(user = %report.address, uid, error = %e, "not learnt: cannot read");
                return;
            }
        };
        if u64::try_from(message.len()).unwrap_or(u64::MAX) > self.max_size {
            tracing::info!(user = %report.address, uid, "not learnt: bigger than max_scan_size");
            return;
        }
        let mut headers: Vec<(&'static str, &str)> = vec![("deliver-to", report.address.as_str())];
        if let Some(password) = &self.password {
            headers.push(("password", password.as_str()));
        }
        let result = self
            .endpoint
            .post(
                path,
                &headers,
                Bytes::from(message),
                MAX_REPLY,
                self.timeout,
            )
            .await;
        match result {
            Ok((StatusCode::OK, _)) => {
                tracing::info!(user = %report.address, uid, filter = "rspamd", "learnt as {}",
                    if report.spam { "spam" } else { "ham" });
            }
            Ok((status, body)) => {
                // 208: already learnt; anything else is the controller's refusal.
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
                tracing::info!(user = %report.address, uid, %status, reply = %text.escape_debug(),
                    "rspamd did not learn {path}");
            }
            Err(e) => {
                tracing::warn!(user = %report.address, uid, error = %e, "rspamd learning failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hermod_common::store::{Store, StoreConfig};

    use super::*;

    /// A report that does not fit in the queue is dropped at once: the IMAP command that
    /// made it never waits for the controller.
    #[tokio::test]
    async fn a_full_queue_drops_reports_without_waiting() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(StoreConfig::maildir(tmp.path()));
        let user = store.user("bob", "example.org").await.unwrap();
        let (queue, mut reports) = mpsc::channel(1);
        let learner = Learner { queue };
        let report = |uid| JunkReport {
            user: user.clone(),
            address: "bob@example.org".into(),
            mailbox: "Junk".into(),
            uids: vec![uid],
            spam: true,
        };
        learner.report(report(1));
        learner.report(report(2));
        assert_eq!(reports.recv().await.unwrap().uids, vec![1]);
        assert!(reports.try_recv().is_err());
    }
}
