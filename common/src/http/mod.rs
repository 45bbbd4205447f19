//! hermod's small HTTP listener: client account setup (Thunderbird autoconfig, Microsoft
//! Autodiscover), `/healthz` and Prometheus `/metrics`.
//!
//! HTTP/1.1, plain or TLS on the same port (the first byte tells; the certificate is hermod's
//! own, so it must name `autoconfig.<domain>` for https autoconfig to verify), with bounded
//! headers and bodies and timeouts on every connection. It rides on the shared accept loop, so
//! it gets the same connection limits and logs as the mail services.

pub mod autoconfig;
pub mod mta_sts;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::address::Address;
use crate::config::{Service, check_domain};
use crate::context::Context;
use crate::metrics;
use crate::net::{self, ConnInfo, Shutdown, Stream};
use autoconfig::MailSettings;

/// Largest request body accepted (an Autodiscover request is well under 1 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Bound on the request line and headers (hyper's read buffer; 8 KiB is its minimum).
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Time to send the request head; also how long an idle keep-alive connection stays.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may stay open, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Time in-flight requests get after shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const BUSY_REPLY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// The paths Thunderbird tries, on `autoconfig.<domain>` and on `<domain>`.
const AUTOCONFIG_PATHS: [&str; 2] = [
    "/mail/config-v1.1.xml",
    "/.well-known/autoconfig/mail/config-v1.1.xml",
];
const AUTODISCOVER_PATH: &str = "/autodiscover/autodiscover.xml";

/// Errors that stop the HTTP listener.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("http listener task failed: {0}")]
    Task(String),
}

/// Serve the `http` listeners of `ctx` until shutdown.
pub async fn serve(ctx: Arc<Context>, shutdown: Shutdown) -> Result<(), HttpError> {
    let listeners = ctx.take_listeners(Service::Http);
    let options = ctx.listener_options(Service::Http, BUSY_REPLY);
    let settings = Arc::new(MailSettings::from_config(&ctx.config));
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        let (ctx, settings, sd) = (ctx.clone(), settings.clone(), shutdown.clone());
        loops.spawn(net::accept_loop(
            listener,
            options.clone(),
            shutdown.clone(),
            move |stream, info| connection(ctx.clone(), settings.clone(), stream, info, sd.clone()),
        ));
    }
    if loops.is_empty() {
        // Nothing to serve; returning early would read as "the daemon stopped".
        shutdown.triggered().await;
    }
    while let Some(done) = loops.join_next().await {
        done.map_err(|e| HttpError::Task(e.to_string()))??;
    }
    Ok(())
}

/// One client connection: HTTP/1.1 with keep-alive, closed at the latest after
/// [`CONNECTION_LIFETIME`], finished gracefully on shutdown.
async fn connection(
    ctx: Arc<Context>,
    settings: Arc<MailSettings>,
    stream: Stream,
    info: ConnInfo,
    shutdown: Shutdown,
) {
    // One port serves both http and https: a TLS ClientHello starts with 0x16 (handshake),
    // which no HTTP method does. Thunderbird tries https first.
    let stream = match sniff_tls(&stream).await {
        Some(true) => match stream.upgrade(&ctx.tls.acceptor).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %info.peer, error = %e, "https handshake failed");
                return;
            }
        },
        Some(false) => stream,
        None => return,
    };
    let peer = info.peer.ip();
    let service = service_fn(move |req| {
        let (ctx, settings) = (ctx.clone(), settings.clone());
        async move { Ok::<_, Infallible>(respond(&ctx, &settings, peer, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer = %info.peer, error = %e, "http connection ended with an error");
            }
        }
        _ = shutdown.triggered() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            tracing::debug!("http connection open too long; closing");
        }
    }
}

/// `/metrics` is for the admin's monitoring, not the internet: the listener may be public
/// for autoconfig, so only clients from loopback and private networks get it.
fn metrics_allowed(peer: IpAddr) -> bool {
    !crate::dns_records::is_public(peer)
}

/// Whether the client opened with a TLS handshake; None if it sent nothing in time.
async fn sniff_tls(stream: &Stream) -> Option<bool> {
    let Stream::Plain(tcp) = stream else {
        return Some(false);
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEADER_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1..)) => Some(first[0] == 0x16),
        _ => None,
    }
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Answer one request.
async fn respond(
    ctx: &Context,
    settings: &MailSettings,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_ascii_lowercase();
    let method = req.method().clone();
    let read_only = method == Method::GET || method == Method::HEAD;
    let r = if AUTOCONFIG_PATHS.contains(&path.as_str()) {
        if read_only {
            let domain = autoconfig_domain(ctx, &req).await;
            response(
                StatusCode::OK,
                "text/xml; charset=utf-8",
                autoconfig::thunderbird(settings, &domain),
            )
        } else {
            method_not_allowed("GET, HEAD")
        }
    } else if path == AUTODISCOVER_PATH {
        if read_only || method == Method::POST {
            autodiscover(settings, req).await
        } else {
            method_not_allowed("GET, HEAD, POST")
        }
    } else if path == mta_sts::POLICY_PATH {
        if read_only {
            sts_policy(ctx, &req).await
        } else {
            method_not_allowed("GET, HEAD")
        }
    } else if path == "/healthz" {
        if read_only {
            healthz(ctx).await
        } else {
            method_not_allowed("GET, HEAD")
        }
    } else if path == "/metrics" {
        if !metrics_allowed(peer) {
            text(
                StatusCode::FORBIDDEN,
                "metrics are served to local networks only\n",
            )
        } else if read_only {
            response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(|s| ctx.open_connections(s)),
            )
        } else {
            method_not_allowed("GET, HEAD")
        }
    } else {
        text(StatusCode::NOT_FOUND, "not found\n")
    };
    tracing::debug!(%method, path, status = r.status().as_u16(), "http request");
    r
}

/// The domain an autoconfig request is about: the `emailaddress` Thunderbird sends, else the
/// host it asked (`autoconfig.example.org`), if hermod serves that domain; else `mydomain`.
async fn autoconfig_domain(ctx: &Context, req: &Request<Incoming>) -> String {
    let from_query = req
        .uri()
        .query()
        .and_then(|q| query_param(q, "emailaddress"))
        .and_then(|a| Address::parse(&a).ok())
        .map(|a| a.domain);
    let from_host = || {
        let host = req.headers().get(header::HOST)?.to_str().ok()?;
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let host = host.strip_prefix("autoconfig.").unwrap_or(host);
        check_domain(host).ok()
    };
    for candidate in from_query.into_iter().chain(from_host()) {
        let candidate = candidate.to_ascii_lowercase();
        if matches!(ctx.directory.is_local_domain(&candidate).await, Ok(true)) {
            return candidate;
        }
    }
    ctx.config.mydomain.clone()
}

/// Autodiscover: the address from a POSTed request document, or from `?emailaddress=` on GET.
async fn autodiscover(settings: &MailSettings, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let from_query = req
        .uri()
        .query()
        .and_then(|q| query_param(q, "emailaddress").or_else(|| query_param(q, "email")))
        .filter(|a| Address::parse(a).is_ok());
    let address = if req.method() == Method::POST {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_BODY) {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n");
        }
        let body = Limited::new(req.into_body(), MAX_BODY).collect();
        match tokio::time::timeout(BODY_TIMEOUT, body).await {
            Ok(Ok(collected)) => {
                let bytes = collected.to_bytes();
                autoconfig::autodiscover_request_address(&String::from_utf8_lossy(&bytes))
                    .or(from_query)
            }
            Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
            Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n"),
        }
    } else {
        from_query
    };
    response(
        StatusCode::OK,
        "application/xml; charset=utf-8",
        autoconfig::autodiscover(settings, address.as_deref()),
    )
}

/// Our MTA-STS policy, for `mta-sts.<domain>` of a domain we serve (RFC 8461 3.3 wants
/// `text/plain`; senders fetch it over https, so the certificate must name that host).
async fn sts_policy(ctx: &Context, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let domain = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(mta_sts::requested_domain);
    match domain {
        Some(d) if matches!(ctx.directory.is_local_domain(&d).await, Ok(true)) => response(
            StatusCode::OK,
            "text/plain",
            mta_sts::policy_text(&ctx.config),
        ),
        _ => text(StatusCode::NOT_FOUND, "no MTA-STS policy for this host\n"),
    }
}

/// Healthy when the directory answers a query: the database everything depends on.
async fn healthz(ctx: &Context) -> Response<Full<Bytes>> {
    let probe = ctx.directory.is_local_domain(&ctx.config.myhostname);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => text(StatusCode::OK, "ok\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the directory failed");
            text(StatusCode::SERVICE_UNAVAILABLE, "directory unavailable\n")
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "directory too slow\n"),
    }
}

/// The value of `key` in a URL query string, percent- and plus-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == key)
            .then(|| percent_decode(v))
            .flatten()
    })
}

/// `%40` -> `@`, `+` -> space; None for malformed escapes or non-UTF-8 results.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_only_for_local_networks() {
        for ip in ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.9", "fd12::1"] {
            assert!(metrics_allowed(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["198.51.100.7", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!metrics_allowed(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param("a=1&emailaddress=alice%40example.org", "emailaddress").as_deref(),
            Some("alice@example.org")
        );
        assert_eq!(query_param("x=a+b", "x").as_deref(), Some("a b"));
        assert_eq!(query_param("x=%zz", "x"), None);
        assert_eq!(query_param("x=%4", "x"), None);
        assert_eq!(query_param("y=1", "x"), None);
        assert_eq!(query_param("x", "x").as_deref(), Some(""));
    }
}
