//! The TLS-ALPN-01 listener (RFC 8737): the CA connects to port 443, offers the ALPN protocol
//! `acme-tls/1` and expects the challenge certificate for the name being validated. rustls-acme's
//! resolver picks that certificate; this loop only accepts and completes handshakes.

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_acme::acme::ACME_TLS_ALPN_NAME;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::net::Shutdown;

/// Validation handshakes at once; more are refused (a CA makes a few).
const MAX_HANDSHAKES: usize = 32;
/// A validation is one handshake: a peer that stalls longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answer validation handshakes on `listener` until shutdown.
pub(super) async fn serve(
    listener: std::net::TcpListener,
    config: Arc<ServerConfig>,
    shutdown: Shutdown,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "ACME: cannot use the TLS-ALPN-01 listener");
            return;
        }
    };
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.triggered() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::debug!(error = %e, "ACME: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(mut tls)) => {
                    if tls.get_ref().1.alpn_protocol() == Some(ACME_TLS_ALPN_NAME) {
                        tracing::info!(%peer, "ACME: answered a TLS-ALPN-01 validation");
                    }
                    let _ = tls.shutdown().await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "ACME: handshake failed"),
                Err(_) => tracing::debug!(%peer, "ACME: handshake timed out"),
            }
        });
    }
}
