//! Mail authentication (the `[auth]` section): DKIM signing of outgoing mail and SPF, DKIM,
//! DMARC, ARC and iprev verification of mail arriving on port 25. Not login authentication
//! (that is `hermod_common::auth`).
//!
//! - [`verify`]: the checks, on mail-auth with a resolver built from `[dns]`, and the
//!   bounded caches of parsed records in [`dns_cache`].
//! - [`results`]: `Authentication-Results` fields: removing forged ones, the quarantine mark.
//! - [`policy`]: what to do with the results (refuse, quarantine, deliver).
//! - [`arc_seal`]: ARC sets on mail forwarded through an alias to a remote address.
//! - [`sign`]: DKIM signatures with the keys of [`keys`] (`<data_dir>/dkim/`).
//! - [`mta_sts`]: recipient domains' MTA-STS policies, for the outbound runner.
//! - [`reports`]: DMARC aggregate and TLS reports to other domains.
//!
//! The SMTP session calls [`MailAuth::check_sender`] at MAIL FROM and
//! [`MailAuth::check_message`] at the end of DATA (through its backend), nothing else.
//!
//! Signing happens when the message is accepted, on the bytes that go into the queue: the
//! outbound path sends those bytes unchanged, so the signature covers the message as sent, and
//! a message is signed once, not at every delivery attempt.

pub mod arc_seal;
pub mod dns_cache;
pub mod keys;
pub mod mta_sts;
pub mod policy;
pub mod reports;
pub mod results;
pub mod sign;
pub mod verify;

use std::net::IpAddr;
use std::sync::Arc;

use hermod_common::Config;
use hermod_common::config::MailAuthConfig;
use mail_auth::MessageAuthenticator;

use crate::session::{LocalDomains, Reply};
pub use verify::SenderAuth;
use verify::{Client, Verification, Verifier};

/// What the session knows when a message is complete.
#[derive(Debug, Clone)]
pub struct MessageFacts {
    pub ip: IpAddr,
    pub helo: String,
    pub sender: String,
    /// Sent by an authenticated user (submission).
    pub authenticated: bool,
    /// The client is in `mynetworks`.
    pub relay_allowed: bool,
    /// At least one recipient is in a remote domain.
    pub remote_recipients: bool,
    /// An alias of ours sends the message on to a remote address (set by the backend, which
    /// knows the directory): it gets an ARC seal.
    pub forwarded: bool,
    /// SPF found at MAIL FROM.
    pub sender_auth: SenderAuth,
    /// Length of our own trace fields (Received) at the start of the message: our results go
    /// below them, so the message still starts with our Received.
    pub trace_len: usize,
    /// The queue id the message gets when it is accepted (for the filters and their logs).
    pub queue_id: String,
    /// The envelope recipients, as the client gave them.
    pub recipients: Vec<String>,
    /// The login name of the authenticated user, if any.
    pub user: Option<String>,
    /// Size of the message in bytes, our trace fields included.
    pub size: usize,
}

/// The message to queue (possibly with new header fields), the reply refusing it, or neither.
#[derive(Debug)]
pub enum MessageOutcome {
    Accept(Vec<u8>),
    Refuse(Reply),
    /// A filter (a milter's `discard`) wants it dropped: the client is told 250 all the same.
    Discard,
}

/// Longest wait for the SPF lookups at MAIL FROM, and for all checks at the end of DATA: a
/// DNS server that does not answer must not hold the session past the client's patience.
const SENDER_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
const MESSAGE_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("mail authentication setup: {0}")]
pub struct AuthSetupError(String);

/// The mail authentication of one daemon.
pub struct MailAuth {
    config: MailAuthConfig,
    hostname: String,
    /// Whose key seals forwarded mail (`mydomain`).
    seal_domain: String,
    keys: keys::KeyStore,
    verifier: Verifier,
    signing: Arc<sign::DkimSigning>,
    reports: Arc<reports::Reports>,
}

impl MailAuth {
    pub fn new(config: &Config) -> Result<Self, AuthSetupError> {
        let resolver =
            crate::outbound::route::resolver(config).map_err(|e| AuthSetupError(e.to_string()))?;
        let signing = Arc::new(sign::DkimSigning::new(keys::KeyStore::new(
            &config.data_dir,
        )));
        let reports = reports::Reports::new(config, signing.clone()).map_err(AuthSetupError)?;
        Ok(MailAuth {
            config: config.mail_auth.clone(),
            hostname: config.myhostname.clone(),
            seal_domain: config.mydomain.clone(),
            keys: keys::KeyStore::new(&config.data_dir),
            verifier: Verifier::new(
                MessageAuthenticator(resolver),
                config.mail_auth.clone(),
                config.myhostname.clone(),
            ),
            signing,
            reports,
        })
    }

    /// The report state the SMTP server records into; the daemon runs it and hands it to
    /// the outbound runner for TLS reports.
    pub fn reports(&self) -> Arc<reports::Reports> {
        self.reports.clone()
    }

    /// Mail from outside: port 25, not authenticated, not from `mynetworks` (unless asked).
    fn verifies(&self, authenticated: bool, relay_allowed: bool) -> bool {
        self.config.verify && !authenticated && (!relay_allowed || self.config.verify_mynetworks)
    }

    /// Whether [`MailAuth::check_message`] verifies or signs this message (else it only
    /// removes forged results, which a big spooled message may keep: the MDA trusts only the
    /// quarantine mark, and that one comes from a verified message).
    pub fn checks(&self, facts: &MessageFacts) -> bool {
        self.verifies(facts.authenticated, facts.relay_allowed) || self.signs(facts)
    }

    /// Whether forwarded mail in these circumstances would be sealed: the backend then looks
    /// up whether the local recipients forward ([`MessageFacts::forwarded`]).
    pub fn seals(&self, facts: &MessageFacts) -> bool {
        self.config.arc_seal && self.verifies(facts.authenticated, facts.relay_allowed)
    }

    fn signs(&self, facts: &MessageFacts) -> bool {
        self.config.sign && facts.remote_recipients && (facts.authenticated || facts.relay_allowed)
    }

    /// At MAIL FROM: SPF of the HELO and MAIL FROM identities; Err refuses the sender.
    pub async fn check_sender(
        &self,
        ip: IpAddr,
        helo: &str,
        sender: &str,
        authenticated: bool,
        relay_allowed: bool,
    ) -> Result<SenderAuth, Reply> {
        if !self.verifies(authenticated, relay_allowed) {
            return Ok(SenderAuth::default());
        }
        let client = Client { ip, helo, sender };
        let check = self.verifier.verify_sender(&client);
        let auth = match tokio::time::timeout(SENDER_CHECK_TIMEOUT, check).await {
            Ok(auth) => auth,
            Err(_) => {
                tracing::warn!(client = %ip, "SPF check timed out (DNS does not answer)");
                SenderAuth::default()
            }
        };
        match policy::sender(&self.config, &auth, sender) {
            Some(reply) => {
                tracing::info!(client = %ip, from = %sender.escape_debug(), "refused: SPF fail");
                Err(reply)
            }
            None => Ok(auth),
        }
    }

    /// At the end of DATA: removes forged results, verifies and applies the policy (mail from
    /// outside), signs (mail of ours going out).
    pub async fn check_message(
        &self,
        facts: MessageFacts,
        mut message: Vec<u8>,
        local: &impl LocalDomains,
    ) -> MessageOutcome {
        let trace: Vec<u8> = message
            .drain(..facts.trace_len.min(message.len()))
            .collect();
        let outcome = self.check_content(facts, message, local).await;
        match outcome {
            MessageOutcome::Accept(content) if !trace.is_empty() => {
                let mut whole = trace;
                whole.extend_from_slice(&content);
                MessageOutcome::Accept(whole)
            }
            other => other,
        }
    }

    async fn check_content(
        &self,
        facts: MessageFacts,
        message: Vec<u8>,
        local: &impl LocalDomains,
    ) -> MessageOutcome {
        let mut message = results::strip_claimed(&message, &self.hostname).unwrap_or(message);
        if self.verifies(facts.authenticated, facts.relay_allowed) {
            let Some((checked, verification)) = self.verify_off_runtime(&facts, message).await
            else {
                return MessageOutcome::Refuse(Reply::new(
                    451,
                    [4, 3, 0],
                    "Temporary failure while verifying the message",
                ));
            };
            message = checked;
            let mut from_is_local = false;
            // Bounded by the From field, which the size limit bounds.
            for domain in &verification.from_domains {
                match local.is_local_domain(domain).await {
                    Ok(true) => {
                        from_is_local = true;
                        break;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "local domain lookup failed"),
                }
            }
            let roll = rand::random_range(0..100u8);
            let mut fields = verification
                .arc_set
                .clone()
                .unwrap_or_default()
                .into_bytes();
            fields.extend_from_slice(verification.header.as_bytes());
            let disposition = policy::message(&self.config, &verification, from_is_local, roll);
            if let Some(row) = &verification.dmarc_report {
                use mail_auth::report::ActionDisposition;
                let action = match (&disposition, &verification.dmarc) {
                    (policy::Disposition::Refuse(_), _) => ActionDisposition::Reject,
                    (policy::Disposition::Quarantine, _) => ActionDisposition::Quarantine,
                    (_, verify::DmarcVerdict::Pass) => ActionDisposition::Pass,
                    _ => ActionDisposition::None,
                };
                let record = row.record.clone().with_action_disposition(action);
                self.reports.dmarc(&row.domain, &row.target, &record);
            }
            match disposition {
                policy::Disposition::Refuse(reply) => {
                    tracing::info!(client = %facts.ip, from = %facts.sender.escape_debug(),
                        reply = %reply.to_line(), "refused by mail authentication policy");
                    return MessageOutcome::Refuse(reply);
                }
                policy::Disposition::Quarantine => {
                    fields.extend_from_slice(
                        format!("{}: dmarc\r\n", results::QUARANTINE_FIELD).as_bytes(),
                    );
                }
                policy::Disposition::Deliver => {}
            }
            fields.extend_from_slice(&message);
            message = fields;
        } else if self.signs(&facts) {
            match self.sign_off_runtime(message).await {
                Ok(signed) => message = signed,
                Err(()) => {
                    return MessageOutcome::Refuse(Reply::new(
                        451,
                        [4, 3, 0],
                        "Temporary failure while signing the message",
                    ));
                }
            }
        }
        MessageOutcome::Accept(message)
    }

    /// Parsing, hashing and signature checks take CPU in proportion to the message: they run
    /// on a blocking thread, which drives the DNS lookups through the runtime's handle.
    async fn verify_off_runtime(
        &self,
        facts: &MessageFacts,
        message: Vec<u8>,
    ) -> Option<(Vec<u8>, Verification)> {
        let verifier = self.verifier.clone();
        let seal = if self.seals(facts) && facts.forwarded {
            arc_seal::SealKey::find(&self.keys, &self.seal_domain)
        } else {
            None
        };
        let facts = facts.clone();
        let handle = tokio::runtime::Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let client = Client {
                ip: facts.ip,
                helo: &facts.helo,
                sender: &facts.sender,
            };
            let check =
                verifier.verify_message(&client, &facts.sender_auth, &message, seal.as_ref());
            let verification = handle
                .block_on(async { tokio::time::timeout(MESSAGE_CHECK_TIMEOUT, check).await })
                .unwrap_or_else(|_| {
                    tracing::warn!(client = %facts.ip, "verification timed out (DNS does not answer)");
                    verifier.unverified()
                });
            (message, verification)
        });
        // A panic in mail-auth ends the task and takes the message: the client retries.
        job.await
            .inspect_err(|e| tracing::error!(error = %e, "verification task failed"))
            .ok()
    }

    async fn sign_off_runtime(&self, message: Vec<u8>) -> Result<Vec<u8>, ()> {
        let Some(domain) = sign::from_domain(&message) else {
            return Ok(message);
        };
        let signing = self.signing.clone();
        // RSA signatures and body hashes are CPU work: off the async workers.
        let job = tokio::task::spawn_blocking(move || {
            let fields = signing.sign(&domain, &message);
            if fields.is_empty() {
                return message;
            }
            let mut signed = fields;
            signed.extend_from_slice(&message);
            signed
        });
        match job.await {
            Ok(signed) => Ok(signed),
            Err(e) => {
                tracing::error!(error = %e, "signing task failed");
                Err(())
            }
        }
    }
}
