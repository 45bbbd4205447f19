//! The one HTTP exchange the filters need: a POST on a fresh connection to a filter on the
//! local network (rspamd's workers), with a timeout over the whole exchange and a bound on the
//! reply's size. hyper's client speaks the protocol; this wraps connection and limits.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(String),
    #[error("reading the reply: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where to POST: `host:port` and the path prefix of an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub authority: String,
    pub prefix: String,
}

impl Endpoint {
    /// From `http://host[:port][/prefix]`; `default_port` when the URL names none.
    pub fn parse(url: &str, default_port: u16) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("not an http:// URL: {url}"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("no host in {url}"));
        }
        let has_port = authority
            .rfind(':')
            .is_some_and(|i| !authority[i..].contains(']'));
        let authority = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        Ok(Endpoint {
            authority,
            prefix: prefix.to_string(),
        })
    }

    /// POSTs `body` to `path` (under the prefix) with `headers`; a header whose value HTTP
    /// cannot carry is left out, not sent mangled. The status and at most `max_reply` bytes.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Bytes,
        max_reply: usize,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.prefix))
            .body(Full::new(body))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let map = request.headers_mut();
        if let Ok(host) = HeaderValue::from_str(&self.authority) {
            map.insert(hyper::header::HOST, host);
        }
        for &(name, value) in headers {
            match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(v) => {
                    map.append(HeaderName::from_static(name), v);
                }
                Err(_) => tracing::debug!(header = name, "value not sent to the filter"),
            }
        }
        tokio::time::timeout(timeout, self.exchange(request, max_reply))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        max_reply: usize,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(HttpError::Connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is driven by its own task, ended with this exchange (also when the
        // timeout drops the exchange).
        let _driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "filter connection ended");
            }
        }));
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), max_reply)
            .collect()
            .await
            .map_err(|e| HttpError::Body(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("http://127.0.0.1:11333", 11333).unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("127.0.0.1:11333", "")
        );
        let e = Endpoint::parse("http://[::1]/rspamd/", 11334).unwrap();
        assert_eq!(
            (e.authority.as_str(), e.prefix.as_str()),
            ("[::1]:11334", "/rspamd")
        );
        assert!(Endpoint::parse("https://x", 1).is_err());
        assert!(Endpoint::parse("http:///x", 1).is_err());
    }
}
