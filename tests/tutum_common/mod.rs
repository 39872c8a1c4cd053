//! What the `/api/v1` tests share: a client that speaks to the admin listener as python-tutum
//! does (paths with trailing slashes, `Content-Type: application/json`, its `User-Agent`, its
//! `Authorization`), and waits on what the API shows.
#![allow(dead_code)]

use hyper::StatusCode;
use serde_json::Value;

use crate::common::{Server, hello_runtime, request_with};

/// A server whose `hello` instances serve `/__exit/<code>`, with `admin_extra` in its
/// `admin:` block (e.g. `api_users`).
pub async fn server(admin_extra: &str) -> Server {
    Server::start_with_admin(|dir| hello_runtime(dir, r#", "--allow-exit""#), admin_extra).await
}

/// An answer of `/api/v1`.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// `X-Tutum-Action-URI`.
    pub action: Option<String>,
}

/// A client of `/api/v1` on `server`, sending `auth` as `Authorization`.
pub struct Tutum<'a> {
    pub server: &'a Server,
    pub auth: Option<String>,
}

impl<'a> Tutum<'a> {
    pub fn new(server: &'a Server) -> Tutum<'a> {
        Tutum { server, auth: None }
    }

    /// One request, as python-tutum sends it: JSON content type on every request.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let text = body.map(Value::to_string).unwrap_or_default();
        let mut headers = vec![("user-agent", "python-tutum/0.21.2")];
        // `request_with` sets it for a body; python-tutum sends it on every request.
        if text.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        if let Some(auth) = &self.auth {
            headers.push(("authorization", auth));
        }
        let r = request_with(self.server.admin, method, path, text.as_bytes(), &headers).await;
        let body = serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", r.text()));
        Answer {
            status: r.status,
            action: r
                .headers
                .get("x-tutum-action-uri")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        }
    }

    /// A request that must answer `status`; its body.
    pub async fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Value {
        let a = self.call(method, path, body).await;
        assert_eq!(
            a.status.as_u16(),
            status,
            "{method} {path} {body:?}: {}",
            a.body
        );
        a.body
    }

    /// `GET` of an object (`/api/v1/service/<id>/`), or `None` on 404.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let a = self.call("GET", path, None).await;
        match a.status.as_u16() {
            200 => Some(a.body),
            404 => None,
            other => panic!("GET {path}: {other} {}", a.body),
        }
    }

    pub async fn service(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/service/{id}/"))
            .await
            .unwrap_or_else(|| panic!("no service {id}"))
    }

    pub async fn container(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/container/{id}/"))
            .await
            .unwrap_or_else(|| panic!("no container {id}"))
    }

    /// Waits until `path` shows `state`; returns the object then.
    pub async fn wait_state(&self, path: &str, state: &str) -> Value {
        let mut last = Value::Null;
        self.server
            .eventually(15, &format!("{path} {state}"), async || {
                last = self.get(path).await.unwrap_or_default();
                last["state"] == state
            })
            .await;
        last
    }

    /// Creates a service (POST, 201) and returns it.
    pub async fn create(&self, body: Value) -> Value {
        self.expect(201, "POST", "/api/v1/service/", Some(&body))
            .await
    }

    /// Creates and starts a service, and waits until it runs; returns it.
    pub async fn run(&self, body: Value) -> Value {
        let s = self.create(body).await;
        let uuid = uuid(&s);
        self.expect(202, "POST", &format!("/api/v1/service/{uuid}/start/"), None)
            .await;
        self.wait_state(&format!("/api/v1/service/{uuid}/"), "Running")
            .await
    }

    /// The containers of a service as it is now (resource URIs resolved), in name order.
    pub async fn containers_of(&self, service: &str) -> Vec<Value> {
        let s = self.service(service).await;
        let mut out = Vec::new();
        for uri in s["containers"].as_array().cloned().unwrap_or_default() {
            out.push(
                self.get(uri.as_str().unwrap_or_default())
                    .await
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// Makes container `name` exit with `code` (`GET /__exit/<code>` through the proxy).
    pub async fn exit(&self, name: &str, code: i32) {
        let r = self
            .server
            .get(&format!("{name}.localhost"), &format!("/__exit/{code}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name} exit {code}: {}", r.text());
    }

    /// Every object of a list, following `meta.next`; checks the envelope on the way.
    pub async fn all(&self, first: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(url) = next {
            let page = self.expect(200, "GET", &url, None).await;
            let meta = &page["meta"];
            for key in ["limit", "offset", "total_count"] {
                assert!(meta[key].is_u64(), "{url}: meta.{key}: {page}");
            }
            out.extend(page["objects"].as_array().cloned().unwrap_or_default());
            next = meta["next"].as_str().map(str::to_owned);
        }
        out
    }
}

/// An object's `uuid`.
pub fn uuid(v: &Value) -> String {
    v["uuid"].as_str().unwrap_or_default().to_owned()
}
