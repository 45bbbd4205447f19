//! Aggregate reports hermod sends to other domains, both off by default:
//!
//! - DMARC aggregate reports (RFC 7489 7.2): the DMARC results of mail received on port 25,
//!   per source address and result, once a day to the `rua` of each domain that asks for them
//!   (an address outside that domain only with its `_report._dmarc` authorization).
//! - TLS reports (RFC 8460): the outcome of outbound TLS sessions per recipient domain and
//!   policy (MTA-STS or none), once a day to the `rua` of the domain's `_smtp._tls` record.
//!
//! The SMTP server and the outbound runner record results in memory ([`Reports::dmarc`],
//! [`Reports::tls`]); [`Reports::run`] writes them to `<data_dir>/reports.db` every minute and,
//! after each UTC day, builds the reports ([`build`]) and puts them in the normal queue,
//! DKIM-signed like any mail of ours, so they show in `hermod queue list`.

pub mod build;
pub mod store;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermod_common::{Config, Context};
use hickory_resolver::TokioResolver;
use mail_auth::report::Record;
use mail_auth::report::tlsrpt::{FailureDetails, PolicyDetails};
use tokio_util::sync::CancellationToken;

use super::sign::DkimSigning;
use crate::envelope::{Envelope, EnvelopeRecipient, QueueId};
use crate::queue::Queue;
pub use build::{DmarcTarget, Reporter};
use store::{Kind, ReportStore, RowKey};

/// Distinct rows kept in memory between flushes; past it, results are dropped (and logged):
/// a flood of distinct sources must not grow memory without end.
const MAX_PENDING: usize = 100_000;
const FLUSH_EVERY: Duration = Duration::from_secs(60);
/// How often finished days are looked for.
const SEND_EVERY: Duration = Duration::from_secs(3600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Days since the Unix epoch, UTC.
pub fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        / 86_400
}

/// What verification saw of one message, for its From domain's DMARC report; the action
/// taken is added once the policy decided it.
#[derive(Debug, Clone)]
pub struct DmarcReportRow {
    pub domain: String,
    pub target: DmarcTarget,
    pub record: Record,
}

/// The report state of one daemon.
pub struct Reports {
    dmarc_on: bool,
    tls_on: bool,
    reporter: Reporter,
    db_path: std::path::PathBuf,
    resolver: TokioResolver,
    signing: Arc<DkimSigning>,
    pending: Mutex<HashMap<RowKey, u64>>,
}

impl Reports {
    pub fn new(config: &Config, signing: Arc<DkimSigning>) -> Result<Arc<Reports>, String> {
        let auth = &config.mail_auth;
        let resolver = crate::outbound::route::resolver(config).map_err(|e| e.to_string())?;
        Ok(Arc::new(Reports {
            dmarc_on: auth.dmarc_reports,
            tls_on: auth.tls_reports,
            reporter: Reporter {
                org_name: if auth.report_org_name.is_empty() {
                    config.myhostname.clone()
                } else {
                    auth.report_org_name.clone()
                },
                from: if auth.report_from.is_empty() {
                    format!("postmaster@{}", config.myorigin)
                } else {
                    auth.report_from.clone()
                },
                submitter: config.myhostname.clone(),
            },
            db_path: config.data_dir.join("reports.db"),
            resolver,
            signing,
            pending: Mutex::default(),
        }))
    }

    pub fn dmarc_enabled(&self) -> bool {
        self.dmarc_on
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_on
    }

    fn add(&self, key: RowKey) {
        let mut pending = lock(&self.pending);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            tracing::warn!(domain = %key.domain, "report results dropped: too many distinct rows pending");
            return;
        }
        *pending.entry(key).or_default() += 1;
    }

    /// One message's DMARC result, for `domain`'s aggregate report.
    pub fn dmarc(&self, domain: &str, target: &DmarcTarget, record: &Record) {
        if !self.dmarc_on || target.rua.is_empty() {
            return;
        }
        let (Ok(a), Ok(b)) = (serde_json::to_string(target), serde_json::to_string(record)) else {
            return;
        };
        self.add(RowKey {
            kind: Kind::Dmarc,
            day: today(),
            domain: domain.to_ascii_lowercase(),
            a,
            b,
        });
    }

    /// One outbound TLS session (or a failure to have one) with `domain`'s servers.
    pub fn tls(&self, domain: &str, policy: &PolicyDetails, failure: Option<&FailureDetails>) {
        if !self.tls_on {
            return;
        }
        let Ok(a) = serde_json::to_string(policy) else {
            return;
        };
        let b = match failure {
            Some(f) => match serde_json::to_string(f) {
                Ok(b) => b,
                Err(_) => return,
            },
            None => String::new(),
        };
        self.add(RowKey {
            kind: Kind::Tls,
            day: today(),
            domain: domain.to_ascii_lowercase(),
            a,
            b,
        });
    }

    /// Flushes results every minute and queues finished days' reports every hour, until
    /// `shutdown` (results are flushed once more then).
    pub async fn run(
        self: Arc<Self>,
        ctx: Arc<Context>,
        queue: Arc<Queue>,
        shutdown: CancellationToken,
    ) {
        if !self.dmarc_on && !self.tls_on {
            return;
        }
        let store = match ReportStore::open(&self.db_path).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reports disabled: cannot open the report store");
                return;
            }
        };
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut send = tokio::time::interval(SEND_EVERY);
        loop {
            tokio::select! {
                _ = flush.tick() => self.flush(&store).await,
                _ = send.tick() => {
                    self.flush(&store).await;
                    self.send_due(&store, &ctx, &queue, today()).await;
                }
                _ = shutdown.cancelled() => {
                    self.flush(&store).await;
                    return;
                }
            }
        }
    }

    /// Writes the results recorded since the last flush.
    pub async fn flush(&self, store: &ReportStore) {
        let rows: Vec<(RowKey, u64)> = std::mem::take(&mut *lock(&self.pending))
            .into_iter()
            .collect();
        if let Err(e) = store.add(rows).await {
            tracing::error!(error = %e, "report results lost: cannot write the report store");
        }
    }

    /// Queues the reports of every day before `today`; returns how many were queued.
    pub async fn send_due(
        &self,
        store: &ReportStore,
        ctx: &Context,
        queue: &Queue,
        today: i64,
    ) -> usize {
        let due = match store.due(today).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the report store");
                return 0;
            }
        };
        let mut queued = 0;
        for (kind, day, domain) in due {
            let rows = match store.rows(kind, day, &domain).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the report store");
                    continue;
                }
            };
            let report = match kind {
                Kind::Dmarc => match build::dmarc_report(&self.reporter, day, &domain, &rows) {
                    Some((rua, message)) => {
                        let rua = self.authorized_dmarc_destinations(&domain, rua).await;
                        Some((rua, message))
                    }
                    None => None,
                },
                Kind::Tls => {
                    let rua = self.tls_rua(&domain).await;
                    if rua.is_empty() {
                        None
                    } else {
                        build::tls_report(&self.reporter, day, &domain, &rows, &rua)
                            .map(|m| (rua, m))
                    }
                }
            };
            match report {
                Some((rua, message)) if !rua.is_empty() => {
                    match self.enqueue(ctx, queue, &rua, message).await {
                        Ok(id) => {
                            queued += 1;
                            tracing::info!(queue_id = %id, kind = ?kind, domain = %domain, day,
                                to = ?rua, "report queued");
                        }
                        Err(e) => {
                            // Kept: the next round tries again.
                            tracing::error!(domain = %domain, error = %e, "cannot queue a report");
                            continue;
                        }
                    }
                }
                _ => tracing::debug!(kind = ?kind, domain = %domain, day,
                    "no report: the domain asks for none (or no valid destination)"),
            }
            if let Err(e) = store.remove(kind, day, &domain).await {
                tracing::error!(error = %e, "cannot clear sent report rows");
            }
        }
        queued
    }

    async fn enqueue(
        &self,
        ctx: &Context,
        queue: &Queue,
        rua: &[String],
        message: Vec<u8>,
    ) -> Result<QueueId, String> {
        let from_domain = self
            .reporter
            .from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let signed = {
            let signing = self.signing.clone();
            let domain = from_domain.clone();
            tokio::task::spawn_blocking(move || {
                let mut out = signing.sign(&domain, &message);
                out.extend_from_slice(&message);
                out
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let mut recipients = Vec::with_capacity(rua.len());
        for address in rua {
            let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
            let local = matches!(ctx.directory.is_local_domain(domain).await, Ok(true));
            recipients.push(EnvelopeRecipient {
                address: address.clone(),
                local,
                notify: Default::default(),
                orcpt: None,
            });
        }
        let envelope = Envelope {
            sender: self.reporter.from.clone(),
            recipients,
            client: "[127.0.0.1] hermod reports".into(),
            ..Envelope::default()
        };
        let id = QueueId::generate();
        queue
            .enqueue(&id, &envelope, &signed)
            .await
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    /// The strings of the TXT records at `name`.
    async fn txt(&self, name: &str) -> Vec<String> {
        crate::auth::mta_sts::txt_records(&self.resolver, name)
            .await
            .unwrap_or_default()
    }

    /// The mailto: destinations of the domain's `_smtp._tls` record (RFC 8460 3).
    async fn tls_rua(&self, domain: &str) -> Vec<String> {
        let records = self.txt(&format!("_smtp._tls.{domain}")).await;
        let mut found = records.iter().filter(|r| r.starts_with("v=TLSRPTv1"));
        let (Some(record), None) = (found.next(), found.next()) else {
            return Vec::new();
        };
        record
            .split(';')
            .filter_map(|f| f.trim().strip_prefix("rua="))
            .flat_map(|v| v.split(','))
            .filter_map(|u| u.trim().strip_prefix("mailto:").and_then(build::mailto))
            .take(10)
            .collect()
    }

    /// RFC 7489 7.1: a destination outside the policy domain needs the destination's
    /// `<domain>._report._dmarc.<destination domain>` record.
    async fn authorized_dmarc_destinations(&self, domain: &str, rua: Vec<String>) -> Vec<String> {
        let mut out = Vec::new();
        for address in rua.into_iter().take(10) {
            let Some((_, dest)) = address.rsplit_once('@') else {
                continue;
            };
            let dest = dest.to_ascii_lowercase();
            let internal = dest == domain || dest.ends_with(&format!(".{domain}"));
            let authorized = internal
                || self
                    .txt(&format!("{domain}._report._dmarc.{dest}"))
                    .await
                    .iter()
                    .any(|r| r.starts_with("v=DMARC1"));
            if authorized {
                out.push(address);
            } else {
                tracing::info!(domain = %domain, destination = %address,
                    "DMARC report destination not authorized (_report._dmarc); skipped");
            }
        }
        out
    }
}
