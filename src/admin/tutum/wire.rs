//! Tutum's wire conventions: the error body `{"error": …}`, the list envelope
//! `{"meta": {limit, offset, total_count, next, previous}, "objects": […]}` with its query
//! parameters, RFC 2822 datetimes, and request bodies that name the field at fault. Body parsing
//! and the self-checking field types are `/v1`'s ([`crate::admin::v1::wire`]): one set of rules
//! for bad input.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::admin::v1::wire as v1;
use crate::config::{Autodestroy, RestartPolicy};
use crate::controller::api::ApiError;

/// Tutum's error body with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// The answer for a refused call.
pub fn api_error(err: ApiError) -> Response {
    error(
        StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        err.message,
    )
}

/// An object with `status`, and `X-Tutum-Action-URI` when the call made an action.
pub fn object(status: StatusCode, body: Value, action: Option<&str>) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(uri) = action.and_then(|a| HeaderValue::from_str(a).ok()) {
        resp.headers_mut().insert("x-tutum-action-uri", uri);
    }
    resp
}

/// An instant as Tutum writes it (RFC 2822, UTC): `Mon, 13 Oct 2014 11:01:43 +0000`.
pub fn rfc2822(t: SystemTime) -> Option<String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = v1::civil_from_days(i64::try_from(days).ok()?);
    Some(format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS.get(m as usize - 1)?,
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
    ))
}

/// A datetime field: RFC 2822, or `null`.
pub fn datetime(t: Option<SystemTime>) -> Value {
    t.and_then(rfc2822).map_or(Value::Null, Value::String)
}

/// Tutum's name of a restart policy (`autorestart`).
pub fn autorestart_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::Never => "OFF",
        RestartPolicy::Always => "ALWAYS",
        RestartPolicy::OnFailure => "ON_FAILURE",
    }
}

/// Tutum's name of an autodestroy value.
pub fn autodestroy_name(a: Autodestroy) -> &'static str {
    v1::autodestroy_name(a)
}

// ---------------------------------------------------------------------------------------------
// Query parameters
// ---------------------------------------------------------------------------------------------

/// Tastypie's page size when the client does not ask for one.
pub const DEFAULT_LIMIT: usize = 25;
/// The largest page (also what `limit=0`, "all", gives).
pub const MAX_LIMIT: usize = 1000;

/// A request's query parameters, decoded, each allowed by the route.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes the query of `uri`, refusing parameters not in `allowed` (naming them, and
    /// listing the known ones) and parameters given twice.
    pub fn parse(uri: &Uri, allowed: &[&str]) -> Result<Query, ApiError> {
        let pairs = match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri) {
            Ok(q) => q.0,
            Err(err) => {
                return Err(ApiError::bad_request(format!(
                    "the query string cannot be read: {err}"
                )));
            }
        };
        for (i, (k, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "{k}: unknown query parameter; expected one of {}",
                    allowed.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(other, _)| other == k) {
                return Err(ApiError::bad_request(format!("{k}: given twice")));
            }
        }
        Ok(Query { pairs })
    }

    /// The value of `key`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A whole number parameter from 0 to `max`, naming it on error.
    pub fn number(&self, key: &str, max: usize) -> Result<Option<usize>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.parse::<i128>() {
            Ok(n) if n < 0 => Err(v1::bad(key, format!("{n} is negative"))),
            Ok(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| v1::bad(key, format!("{n} is more than {max}"))),
            Err(_) => Err(v1::bad(key, format!("{v:?} is not a whole number"))),
        }
    }

    /// One of `values` (Tutum's states), naming `key` and listing them on error.
    pub fn one_of(
        &self,
        key: &str,
        values: &[&'static str],
    ) -> Result<Option<&'static str>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        values
            .iter()
            .find(|s| **s == v)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                v1::bad(
                    key,
                    format!("unknown value {v:?}; expected one of {}", values.join(", ")),
                )
            })
    }

    /// The parameters other than the page's, to carry into `next` and `previous`.
    fn filters(&self) -> impl Iterator<Item = &(String, String)> {
        self.pairs
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
    }
}

/// Percent-encodes a query component.
fn encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// One page of `items` (already filtered) as Tutum's list envelope, with `next`/`previous`
/// URLs on `path` that keep the filters. Only the page's items are shown (`show`).
pub fn page<T>(
    path: &str,
    query: &Query,
    items: Vec<T>,
    show: impl Fn(T) -> Value,
) -> Result<Response, ApiError> {
    let limit = match query.number("limit", MAX_LIMIT)? {
        None => DEFAULT_LIMIT,
        // Tastypie: 0 means "as many as allowed".
        Some(0) => MAX_LIMIT,
        Some(n) => n,
    };
    let offset = query.number("offset", usize::MAX)?.unwrap_or(0);
    let total = items.len();
    let link = |offset: usize| {
        let mut url = format!("{path}?limit={limit}&offset={offset}");
        for (k, v) in query.filters() {
            url.push('&');
            encode(k, &mut url);
            url.push('=');
            encode(v, &mut url);
        }
        Value::String(url)
    };
    let next = if offset.saturating_add(limit) < total {
        link(offset + limit)
    } else {
        Value::Null
    };
    let previous = if offset > 0 {
        link(offset.saturating_sub(limit))
    } else {
        Value::Null
    };
    let objects: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(show)
        .collect();
    Ok(Json(json!({
        "meta": {
            "limit": limit,
            "offset": offset,
            "total_count": total,
            "next": next,
            "previous": previous,
        },
        "objects": objects,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

/// Tutum fields autokill has no use for. A client that sends them with an empty or default
/// value (as the `tutum` CLI does with every field it knows) is served; any other value is
/// refused, naming the field, rather than silently ignored.
const EMPTY_OK: &[&str] = &[
    "run_command",
    "entrypoint",
    "container_ports",
    "container_envvars",
    "linked_to_service",
    "autoreplace",
    "autoredeploy",
    "sequential_deployment",
    "roles",
    "privileged",
    "tags",
    "bindings",
    "cpu_shares",
    "memory",
    "net",
    "pid",
    "deployment_strategy",
];

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty() || s == "OFF",
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) | Value::Bool(true) => false,
    }
}

/// Parses a JSON object body into `T` (a strict, `deny_unknown_fields` type), after taking out
/// the Tutum fields of [`EMPTY_OK`] that carry a default value, and refusing `read_only` ones.
/// An empty body is `{}`.
pub fn body<T: DeserializeOwned>(bytes: &[u8], read_only: &[&str]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return v1::parse(b"{}");
    }
    let mut map: Map<String, Value> = v1::parse(bytes)?;
    for key in read_only {
        if map.contains_key(*key) {
            return Err(v1::bad(key, "is read-only"));
        }
    }
    for key in EMPTY_OK {
        if let Some(v) = map.get(*key) {
            if !is_default(v) {
                return Err(v1::bad(
                    key,
                    "is not supported by autokill (only an empty or default value is accepted)",
                ));
            }
            map.remove(*key);
        }
    }
    // Re-read through the strict type so that its errors name the field as sent.
    let bytes = serde_json::to_vec(&Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    v1::parse(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn datetimes_are_rfc2822_in_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_413_198_103);
        assert_eq!(
            rfc2822(t).as_deref(),
            Some("Mon, 13 Oct 2014 11:01:43 +0000")
        );
        assert_eq!(
            rfc2822(UNIX_EPOCH).as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 +0000")
        );
        assert_eq!(datetime(None), Value::Null);
    }

    fn q(s: &str, allowed: &[&str]) -> Result<Query, ApiError> {
        Query::parse(&s.parse::<Uri>().unwrap_or_default(), allowed)
    }

    #[test]
    fn query_parameters_are_checked() {
        let query = q("/x?limit=5&name=a%20b", &["limit", "name"]).unwrap_or_default();
        assert_eq!(query.get("name"), Some("a b"));
        assert_eq!(query.number("limit", 10).ok().flatten(), Some(5));
        let err = q("/x?nme=a", &["limit", "name"])
            .err()
            .unwrap_or_else(|| ApiError::bad_request(""));
        assert_eq!(
            err.message,
            "nme: unknown query parameter; expected one of limit, name"
        );
        let err = q("/x?limit=-1", &["limit"])
            .and_then(|q| q.number("limit", 10))
            .err()
            .map(|e| e.message);
        assert_eq!(err.as_deref(), Some("limit: -1 is negative"));
        let err = q("/x?limit=x", &["limit"])
            .and_then(|q| q.number("limit", 10))
            .err()
            .map(|e| e.message);
        assert_eq!(err.as_deref(), Some("limit: \"x\" is not a whole number"));
        let err = q("/x?limit=1&limit=2", &["limit"]).err().map(|e| e.message);
        assert_eq!(err.as_deref(), Some("limit: given twice"));
    }

    #[test]
    fn pages_link_to_the_next_and_previous_with_the_filters() {
        let query = q(
            "/s?limit=2&offset=2&state=Partly%20running",
            &["limit", "offset", "state"],
        )
        .unwrap_or_default();
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let resp = page("/api/v1/service/", &query, items, |v| v);
        assert!(resp.is_ok());
        let query = q("/s?limit=0", &["limit"]).unwrap_or_default();
        assert_eq!(query.number("limit", MAX_LIMIT).ok().flatten(), Some(0));
        let mut out = String::new();
        encode("Partly running", &mut out);
        assert_eq!(out, "Partly%20running");
    }

    #[test]
    fn tutum_fields_with_default_values_are_accepted() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct B {
            image: String,
        }
        let b: Result<B, _> = body(
            br#"{"image": "hello", "container_ports": [], "privileged": false, "autoreplace": "OFF", "run_command": null}"#,
            &[],
        );
        assert_eq!(b.map(|b| b.image).ok().as_deref(), Some("hello"));
        let err = body::<B>(br#"{"image": "hello", "privileged": true}"#, &[])
            .err()
            .map(|e| e.message);
        assert!(
            err.as_deref()
                .is_some_and(|m| m.starts_with("privileged: is not supported")),
            "{err:?}"
        );
        let err = body::<B>(br#"{"image": "hello", "state": "Running"}"#, &["state"])
            .err()
            .map(|e| e.message);
        assert_eq!(err.as_deref(), Some("state: is read-only"));
        let err = body::<B>(br#"{"image": "hello", "imag": 1}"#, &[])
            .err()
            .map(|e| e.message);
        assert!(
            err.as_deref()
                .is_some_and(|m| m.contains("unknown field `imag`")),
            "{err:?}"
        );
    }
}
