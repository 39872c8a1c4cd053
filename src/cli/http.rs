//! The command line's HTTP client: one HTTP/1.1 connection per request to the admin listener
//! (hyper's client connection API over a tokio `TcpStream`), JSON in, the whole answer out.
//! A CLI makes a handful of requests, so there is no pool to manage.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::CliError;

/// How long to wait for the server to accept a connection, and then for its whole answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the admin API is and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct Client {
    /// `host:port` to connect to (and to send as `Host`).
    authority: String,
    /// Path prefix (no trailing slash), for a server behind a path.
    prefix: String,
    /// The `Authorization` header to send, if any.
    auth: Option<String>,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `X-Tutum-Action-URI`, if the server sent one.
    pub action: Option<String>,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Server(format!(
                "the server's answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            ))
        })
    }

    /// The body as JSON if the status is a success; else the error, by its status, with the
    /// server's answer shown whole.
    pub fn ok(self, what: &str) -> Result<Value, CliError> {
        if (200..300).contains(&self.status) {
            return self.json();
        }
        let text = String::from_utf8_lossy(&self.body).trim().to_owned();
        let reason = hyper::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let message = format!("{what}: {} {reason}: {text}", self.status);
        Err(match self.status {
            404 => CliError::NotFound(message),
            400..=499 => CliError::Refused(message),
            _ => CliError::Server(message),
        })
    }
}

impl Client {
    /// A client for `url` (`http://host:port[/prefix]`) sending `auth` as `Authorization`.
    pub fn new(url: &str, auth: Option<String>) -> Result<Client, CliError> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            CliError::Usage(format!(
                "--url {url:?}: expected http://HOST:PORT (the admin listener speaks plain HTTP)"
            ))
        })?;
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        let prefix = if prefix == "/" { String::new() } else { prefix };
        if authority.is_empty() {
            return Err(CliError::Usage(format!("--url {url:?}: no host")));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        if let Some(a) = &auth
            && HeaderValue::from_str(a).is_err()
        {
            return Err(CliError::Usage(
                "the credentials contain characters an HTTP header cannot carry".into(),
            ));
        }
        Ok(Client {
            authority,
            prefix,
            auth,
        })
    }

    /// Sends one request; `body` is sent as JSON.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let unreachable =
            |e: String| CliError::Unreachable(format!("cannot reach {}: {e}", self.authority));
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.authority.as_str()),
        )
        .await
        .map_err(|_| unreachable("no answer to the connection".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let bytes = match body {
            Some(v) => Bytes::from(v.to_string()),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.authority.as_str())
            .header(
                USER_AGENT,
                concat!("autokill-cli/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth.as_str());
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| CliError::Usage(format!("{method} {path}: {e}")))?;
        let answer = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let action = resp
                .headers()
                .get("x-tutum-action-uri")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok::<Answer, CliError>(Answer {
                status,
                action,
                body,
            })
        };
        let result = tokio::time::timeout(ANSWER_TIMEOUT, answer)
            .await
            .map_err(|_| unreachable(format!("no answer within {ANSWER_TIMEOUT:?}")))?;
        driver.abort();
        result
    }

    /// A GET that must succeed.
    pub async fn get(&self, path: &str, what: &str) -> Result<Value, CliError> {
        self.send("GET", path, None).await?.ok(what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let c = Client::new("http://127.0.0.1:8081", None).ok();
        assert_eq!(c.map(|c| c.authority), Some("127.0.0.1:8081".to_owned()));
        let c = Client::new("http://example.com/admin/", None).ok();
        assert_eq!(
            c.map(|c| (c.authority, c.prefix)),
            Some(("example.com:80".to_owned(), "/admin".to_owned()))
        );
        assert!(matches!(
            Client::new("https://x:1", None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            Client::new("http://", None),
            Err(CliError::Usage(_))
        ));
    }
}
