//! Certificates from an ACME CA (Let's Encrypt) by the TLS-ALPN-01 challenge, off by default.
//!
//! rustls-acme runs the protocol (account, order, challenge, finalize) and renews when a third
//! of the certificate's lifetime is left (30 days of Let's Encrypt's 90). What it obtains is
//! stored in `<data_dir>/acme/` (see [`store`]) and installed into the [`ReloadableCert`] that
//! every TLS listener and STARTTLS upgrade uses, so new handshakes get it at once and open
//! sessions keep theirs. A failed order leaves the certificate in use (the stored one, or the
//! self-signed one) and is retried with a growing delay.
//!
//! One process orders (`hermod serve`, or `hermod mta` when the daemons run apart); the others
//! install what it stores and notice renewals by the file's modification time.
//!
//! [`ReloadableCert`]: crate::tls_reload::ReloadableCert

mod challenge;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AcmeState, EventError, EventOk, UseChallenge};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{Config, Service};
use crate::context::Context;
use crate::net::{BindError, Shutdown};
use crate::tls::{TlsError, sha256_fingerprint};
use store::{AcmeCache, CertStore};

/// How often a process that does not order looks for a renewed certificate.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(60);
/// First delay after a failed order; it doubles up to [`MAX_RETRY_DELAY`]. rustls-acme has its
/// own, shorter backoff (1 s doubling); this keeps a failing setup from hammering the CA.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(10);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(6 * 3600);

/// Errors that keep ACME from starting.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("[acme] ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("ACME client TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Bind the TLS-ALPN-01 listener (port 443) while still root. Empty when ACME is off.
pub fn bind(config: &Config) -> Result<Vec<std::net::TcpListener>, BindError> {
    if !config.acme.enabled {
        return Ok(Vec::new());
    }
    // The binding itself is the same as a service's; only the name in errors differs.
    crate::net::bind(Service::Http, &config.acme.listen).map_err(|e| BindError {
        service: "acme",
        ..e
    })
}

/// Start ACME when enabled. With `listeners` (from [`bind`]) this process orders and renews;
/// without, it installs the certificate another hermod process orders. A stored certificate
/// is installed before this returns, so the services start with it.
pub fn start(
    ctx: &Arc<Context>,
    listeners: Vec<std::net::TcpListener>,
    shutdown: &Shutdown,
) -> Result<(), AcmeError> {
    let config = &ctx.config;
    if !config.acme.enabled {
        return Ok(());
    }
    let domains = config.acme_domains();
    let store = Arc::new(CertStore::new(config));
    let stored = match store.load() {
        Ok(Some(key)) => {
            install(ctx, key, "ACME: using the stored certificate", &domains);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "ACME: the stored certificate is unusable");
            false
        }
    };
    if listeners.is_empty() {
        shutdown.spawn(follow(ctx.clone(), store, shutdown.clone()));
        return Ok(());
    }
    let state = rustls_acme::AcmeConfig::new_with_client_config(&domains, client_config(config)?)
        .directory(&config.acme.directory_url)
        .contact(&config.acme.contact)
        .challenge_type(UseChallenge::TlsAlpn01)
        .cache(AcmeCache(store.clone()))
        .state();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let challenge_config = state.challenge_rustls_config_with_provider(provider);
    for listener in listeners {
        shutdown.spawn(challenge::serve(
            listener,
            challenge_config.clone(),
            shutdown.clone(),
        ));
    }
    if !stored {
        tracing::info!(
            domains = %domains.join(","),
            directory = %config.acme.directory_url,
            "ACME: ordering a certificate"
        );
    }
    shutdown.spawn(run(ctx.clone(), state, store, stored, shutdown.clone()));
    Ok(())
}

/// SIGHUP: install the stored ACME certificate again, or, without one, reload the configured
/// (or self-signed) files. On error the certificate in use stays.
pub fn reload(ctx: &Context) -> Result<String, TlsError> {
    if ctx.config.acme.enabled
        && let Some(key) = CertStore::new(&ctx.config).load()?
    {
        ctx.tls.cert.install(key);
        return Ok(ctx.tls.fingerprint());
    }
    ctx.tls.reload()
}

/// The HTTPS client of the ACME protocol: the Web PKI roots, plus `ca_file` if set.
fn client_config(config: &Config) -> Result<Arc<ClientConfig>, AcmeError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &config.acme.ca_file {
        let err = |reason: String| AcmeError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(client))
}

/// Expiry and the time rustls-acme renews (a third of the lifetime before expiry).
fn validity(key: &CertifiedKey) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(key.cert.first()?.as_ref()).ok()?;
    let v = cert.validity();
    let (start, end) = (v.not_before.timestamp(), v.not_after.timestamp());
    let renew = x509_parser::time::ASN1Time::from_timestamp(end - (end - start) / 3).ok()?;
    Some((v.not_after.to_string(), renew.to_string()))
}

/// Use `key` for new handshakes on every TLS listener, and say so in one line.
fn install(ctx: &Context, key: CertifiedKey, what: &str, domains: &[String]) {
    let fingerprint = key
        .cert
        .first()
        .map(|c| sha256_fingerprint(c.as_ref()))
        .unwrap_or_default();
    let (not_after, renew_after) = validity(&key).unwrap_or_default();
    ctx.tls.cert.install(key);
    tracing::info!(
        domains = %domains.join(","),
        %fingerprint,
        %not_after,
        %renew_after,
        "{what}"
    );
}

/// The next event of rustls-acme's state machine (it never ends).
async fn next_event<S: futures_core::Stream + Unpin>(state: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *state).poll_next(cx)).await
}

fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY_DELAY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY)
}

/// Drive rustls-acme: install what it obtains, log each outcome, slow down after failures.
async fn run(
    ctx: Arc<Context>,
    mut state: AcmeState<TlsError>,
    store: Arc<CertStore>,
    mut has_cert: bool,
    shutdown: Shutdown,
) {
    let domains = ctx.config.acme_domains();
    let mut failures: u32 = 0;
    loop {
        let event = tokio::select! {
            e = next_event(&mut state) => e,
            _ = shutdown.triggered() => return,
        };
        let Some(event) = event else { return };
        // A new certificate is installed once rustls-acme has handed it to the store, whether
        // or not the disk took it.
        let stored = match event {
            Ok(EventOk::CertCacheStore) => true,
            Err(EventError::CertCacheStore(e)) => {
                tracing::warn!(error = %e, "ACME: cannot store the new certificate; a restart orders again");
                true
            }
            Ok(EventOk::DeployedCachedCert) => {
                // Installed by `start` already; again in case the files changed since.
                if let Some(key) = store.last().and_then(|p| store::certified_key(&p).ok()) {
                    ctx.tls.cert.install(key);
                    has_cert = true;
                }
                // rustls-acme has decided: nothing is ordered before the renewal time.
                tracing::info!("ACME: the stored certificate is current; no order before renewal");
                false
            }
            Ok(EventOk::DeployedNewCert) | Ok(EventOk::AccountCacheStore) => false,
            Err(EventError::Order(e)) => {
                failures += 1;
                let delay = retry_delay(failures);
                tracing::warn!(
                    domains = %domains.join(","),
                    error = %e,
                    failures,
                    retry_in_s = delay.as_secs(),
                    "ACME: certificate order failed; keeping the current certificate"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.triggered() => return,
                }
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "ACME: certificate store problem");
                false
            }
        };
        if !stored {
            continue;
        }
        failures = 0;
        match store.last().map(|p| store::certified_key(&p)) {
            Some(Ok(key)) => {
                let what = if has_cert {
                    "ACME: certificate renewed"
                } else {
                    "ACME: certificate issued"
                };
                install(&ctx, key, what, &domains);
                has_cert = true;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ACME: the new certificate is unusable; keeping the current one");
            }
            None => {}
        }
    }
}

/// For a process that does not order: install the certificate when the ordering process
/// stores a new one.
async fn follow(ctx: Arc<Context>, store: Arc<CertStore>, shutdown: Shutdown) {
    let domains = ctx.config.acme_domains();
    let mut seen = store.modified();
    let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.triggered() => return,
        }
        let modified = store.modified();
        if modified.is_none() || modified == seen {
            continue;
        }
        seen = modified;
        match store.load() {
            Ok(Some(key)) => install(
                &ctx,
                key,
                "ACME: installed the certificate stored by the ordering process",
                &domains,
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ACME: the stored certificate is unusable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_slow_down_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(10));
        assert_eq!(retry_delay(2), Duration::from_secs(20));
        assert_eq!(retry_delay(5), Duration::from_secs(160));
        assert_eq!(retry_delay(40), MAX_RETRY_DELAY);
    }

    #[test]
    fn ca_file_problems_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = Config::defaults(true);
        c.acme.ca_file = Some(tmp.path().join("missing.pem"));
        let err = client_config(&c).unwrap_err().to_string();
        assert!(
            err.contains("ca_file") && err.contains("missing.pem"),
            "{err}"
        );
        let empty = tmp.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        c.acme.ca_file = Some(empty);
        let err = client_config(&c).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let good = tmp.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        c.acme.ca_file = Some(good);
        assert!(client_config(&c).is_ok());
    }

    #[test]
    fn off_by_default_binds_nothing() {
        let c = Config::defaults(false);
        assert!(bind(&c).unwrap().is_empty());
    }
}
