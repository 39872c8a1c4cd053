//! Wire plumbing shared by the `/v1` handlers: the response envelope, body parsing whose errors
//! name the field at fault, and the small self-checking types request bodies are made of.
//!
//! Every request type is a `#[serde(deny_unknown_fields)]` struct; the leaf types below check
//! their own value while being deserialized, so that `serde_path_to_error` can put the field's
//! path in front of every refusal (`[1].autokill.time_ms: …`). A refused body changes nothing:
//! handlers parse and check everything before the first call to the controller.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::{Autodestroy, RestartPolicy};
use crate::controller::api::{ApiError, AutokillSpec, Ref};

/// The longest `time_ms` accepted: 100 years of 365.25 days (31 557 600 000 ms each). Far beyond
/// any useful timer, and far from where adding it to a wall-clock instant could overflow.
pub const MAX_TIME_MS: u64 = 100 * 31_557_600_000;

/// The most items one request body takes: each is applied by the controller in one command, so
/// a bound keeps one request from holding it (and the proxy's reservations) for long.
pub const MAX_BATCH: usize = 1000;

/// The longest message (in characters) an answer carries: a refused value is echoed in part.
const MAX_MESSAGE: usize = 300;

// ---------------------------------------------------------------------------------------------
// The envelope
// ---------------------------------------------------------------------------------------------

/// An error answer: `{"status":"error","message":…,"errors":[{"status":<code>,"message":…}]}`.
pub fn error(status: StatusCode, message: String) -> Response {
    let message = clip(&message);
    let body = json!({
        "status": "error",
        "message": message,
        "errors": [{"status": status.as_u16(), "message": message}],
    });
    (status, Json(body)).into_response()
}

/// The answer for an [`ApiError`], with its status (500 when it is not a valid HTTP status).
pub fn api_error(err: ApiError) -> Response {
    error(status_of(&err), err.message)
}

/// `message` cut to [`MAX_MESSAGE`] characters, saying so: a megabyte of bad value is not worth
/// sending back (twice, in `message` and `errors`).
pub fn clip(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}… (cut; {} bytes in all)", &message[..cut], message.len()),
    }
}

fn status_of(err: &ApiError) -> StatusCode {
    StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A successful read: `{"status":"success","data":{<key>:[…]}}`, without per-item status (as the
/// Unikraft API lists resources).
pub fn listing(key: &str, items: Vec<Value>) -> Response {
    let mut data = Map::new();
    data.insert(key.to_owned(), Value::Array(items));
    Json(json!({"status": "success", "data": data})).into_response()
}

/// The per-item `error` code the Unikraft SDKs read: a resource that is not there.
pub const CODE_NOT_FOUND: u32 = 8;
/// The per-item `error` code for a name (or domain) already taken.
pub const CODE_TAKEN: u32 = 23;
/// The per-item `error` code autokill uses for a resource in a state that refuses the call (a
/// delete lock, a group that still has instances, a template from a running instance). The
/// platform's own code for these is not published; this one is `EBUSY`'s number, and is never
/// one the SDKs read as "absent" or "taken".
pub const CODE_CONFLICT: u32 = 16;

/// The per-item code of a refusal: 404 is "not found"; a 409 about a field (`name:`,
/// `domains:`, as the controller words a name or domain that is taken) is "taken"; any other
/// 409 is a state conflict. Other refusals carry no code.
pub fn code_of(err: &ApiError) -> Option<u32> {
    match err.status {
        404 => Some(CODE_NOT_FOUND),
        409 if err.message.starts_with("name:") || err.message.starts_with("domains:") => {
            Some(CODE_TAKEN)
        }
        409 => Some(CODE_CONFLICT),
        _ => None,
    }
}

/// One item's answer in a (possibly one-item) batch.
#[derive(Debug)]
pub struct Item {
    /// The resource after the change, or why the item was refused.
    pub result: Result<Value, ApiError>,
    /// Fields echoed into the item's answer: PATCH's `id`, and on errors the `uuid`/`name` the
    /// client gave, so it can tell which item failed.
    pub echo: Map<String, Value>,
    /// Done, but not as asked (a wait that timed out, an instance that stopped before it ran):
    /// shown as a failed item that still carries the resource, answered with HTTP 200 as the
    /// SDKs expect.
    pub unfinished: Option<String>,
}

impl Item {
    /// An item answered with `result`, echoing nothing.
    pub fn new(result: Result<Value, ApiError>) -> Item {
        Item {
            result,
            echo: Map::new(),
            unfinished: None,
        }
    }

    /// A resource whose wait ended without reaching what was asked, with why.
    pub fn unfinished(resource: Value, message: String) -> Item {
        Item {
            result: Ok(resource),
            echo: Map::new(),
            unfinished: Some(message),
        }
    }

    /// Echoes `r` as `uuid` or `name` (shown on errors, where there is no resource to show).
    pub fn echo_ref(mut self, r: &Ref) -> Item {
        match r {
            Ref::Id(id) => self.echo.insert("uuid".into(), json!(id)),
            Ref::Name(name) => self.echo.insert("name".into(), json!(clip(name))),
        };
        self
    }

    /// Echoes PATCH's `id`, when the client gave one.
    pub fn echo_id(mut self, id: Option<&Value>) -> Item {
        if let Some(id) = id {
            self.echo.insert("id".into(), id.clone());
        }
        self
    }
}

/// The answer to a create, patch, delete, start or stop: every item with its own `status` (and
/// `message` and `error` code when refused) under `data.<key>`.
///
/// * A single-object request answers with the item's own HTTP status.
/// * A batch (an array body, or a listing filtered by name or UUID) answers 200 whatever its
///   items say, as the Unikraft API does: `success` when every item succeeded,
///   `partial_success` when some did, `error` when none did; the refused items say why.
///   The SDKs read a failed item's `error` code (8: not found) to tell an absent resource from
///   a missing route, which a 404 for the whole answer would hide.
pub fn answer(key: &str, single: bool, items: Vec<Item>) -> Response {
    let total = items.len();
    let mut errors = Vec::new();
    let mut first_error: Option<StatusCode> = None;
    let mut out = Vec::with_capacity(total);
    for item in items {
        let mut obj = Map::new();
        let refusal = match (item.result, item.unfinished) {
            (Ok(resource), unfinished) => {
                match resource {
                    Value::Object(resource) => obj.extend(resource),
                    other => {
                        obj.insert("value".into(), other);
                    }
                }
                unfinished.map(|message| (StatusCode::OK, clip(&message), None))
            }
            (Err(err), _) => Some((status_of(&err), clip(&err.message), code_of(&err))),
        };
        match refusal {
            None => {
                obj.insert("status".into(), json!("success"));
            }
            Some((status, message, code)) => {
                first_error.get_or_insert(status);
                let mut e = Map::new();
                e.insert("status".into(), json!(status.as_u16()));
                e.insert("message".into(), json!(message));
                if let Some(code) = code {
                    e.insert("error".into(), json!(code));
                    obj.insert("error".into(), json!(code));
                }
                errors.push(Value::Object(e));
                obj.insert("status".into(), json!("error"));
                obj.insert("message".into(), json!(message));
            }
        }
        // On errors the echo is all that names the item; on successes the resource shows its
        // own `uuid` and `name`, which win.
        for (k, v) in item.echo {
            obj.entry(k).or_insert(v);
        }
        out.push(Value::Object(obj));
    }
    let mut data = Map::new();
    data.insert(key.to_owned(), Value::Array(out));
    let failed = errors.len();
    let (http, status, message) = match first_error {
        None => (StatusCode::OK, "success", None),
        Some(status) if failed == total => {
            // One refusal (or one shared by all items, as an all-or-nothing PATCH gives) is the
            // message itself.
            let first = errors[0]["message"].as_str().unwrap_or_default();
            let message = if errors.iter().all(|e| e["message"] == first) {
                first.to_owned()
            } else {
                format!("all {total} operations failed")
            };
            let http = if single { status } else { StatusCode::OK };
            (http, "error", Some(message))
        }
        Some(_) => (
            StatusCode::OK,
            "partial_success",
            Some(format!("{failed} of {total} operations failed")),
        ),
    };
    let mut body = Map::new();
    body.insert("status".into(), json!(status));
    if let Some(message) = message {
        body.insert("message".into(), json!(message));
    }
    body.insert("data".into(), Value::Object(data));
    // A 200 names its refusals in its items only: the SDKs count every entry of a top-level
    // `errors` as a failure of its own (without the item's code), so listing them twice would
    // make "not found" items read as failures of another kind.
    if !errors.is_empty() && http != StatusCode::OK {
        body.insert("errors".into(), Value::Array(errors));
    }
    (http, Json(Value::Object(body))).into_response()
}

// ---------------------------------------------------------------------------------------------
// Parsing bodies
// ---------------------------------------------------------------------------------------------

/// A body that may be one object or an array of them.
#[derive(Debug)]
pub struct Batch<T> {
    /// The items, in order.
    pub items: Vec<T>,
    /// Whether the body was a single object (answered with that item's status).
    pub single: bool,
}

impl<T> Batch<T> {
    /// The field-path prefix of item `index`: empty for a single object, `[index].` in an array.
    pub fn prefix(&self, index: usize) -> String {
        item_prefix(self.single, index)
    }
}

/// The field-path prefix of item `index`: empty for a single object, `[index].` in an array.
pub fn item_prefix(single: bool, index: usize) -> String {
    if single {
        String::new()
    } else {
        format!("[{index}].")
    }
}

/// Parses a body of one `T` or a JSON array of them.
pub fn parse_batch<T: DeserializeOwned>(body: &[u8]) -> Result<Batch<T>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ApiError::bad_request(
            "the request body is empty; expected a JSON object or an array of them",
        )),
        Some(b'[') => {
            let items: Vec<T> = parse(body)?;
            if items.is_empty() {
                return Err(ApiError::bad_request("the request body is an empty array"));
            }
            if items.len() > MAX_BATCH {
                return Err(ApiError::bad_request(format!(
                    "the request body has {} items; at most {MAX_BATCH} are taken in one request",
                    items.len()
                )));
            }
            Ok(Batch {
                items,
                single: false,
            })
        }
        Some(_) => Ok(Batch {
            items: vec![parse(body)?],
            single: true,
        }),
    }
}

/// Parses a JSON body into `T`, naming the field at fault on error.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("invalid JSON: {inner}"))
        } else {
            ApiError::bad_request(at(&path, "", &inner.to_string()))
        }
    })?;
    // Trailing garbage after the value is as much an error as a missing brace.
    de.end()
        .map_err(|err| ApiError::bad_request(format!("invalid JSON: {err}")))?;
    Ok(value)
}

/// `"<field>.<path>: <message>"`, leaving out the parts that are empty.
fn at(path: &str, field: &str, message: &str) -> String {
    let path = if path == "." { "" } else { path };
    let full = match (field.is_empty(), path.is_empty()) {
        (true, true) => return message.to_owned(),
        (true, false) => path.to_owned(),
        (false, true) => field.to_owned(),
        (false, false) if path.starts_with('[') => format!("{field}{path}"),
        (false, false) => format!("{field}.{path}"),
    };
    format!("{full}: {message}")
}

/// A 400 naming `field` (already prefixed with the item's place in a batch).
pub fn bad(field: &str, message: impl fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {message}"))
}

// ---------------------------------------------------------------------------------------------
// Self-checking leaf types
// ---------------------------------------------------------------------------------------------

/// A resource name: a DNS label (1 to 63 of `a-z`, `0-9`, `-`, not starting or ending with `-`),
/// since instances are addressed as `<name>.<base_domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(pub String);

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Label, D::Error> {
        let s = String::deserialize(d)?;
        crate::config::check_name(&s)
            .map(|()| Label(s))
            .map_err(de::Error::custom)
    }
}

/// Resolves a service group domain as the configuration does: without a trailing dot it is a
/// sub-domain of `base_domain`, with one it is a full name (the dot removed); lower-cased.
pub fn resolve_domain(written: &str, base_domain: &str) -> Result<String, String> {
    let lower = written.to_ascii_lowercase();
    let full = match lower.strip_suffix('.') {
        Some(full) => full.to_owned(),
        None if lower.is_empty() => return Err("empty domain name".to_owned()),
        None => format!("{lower}.{base_domain}"),
    };
    crate::config::host_name(&full)
        .map(|()| full)
        .map_err(|e| format!("invalid host name {written:?}: {e}"))
}

/// `time_ms`: a whole number of milliseconds, 0 to [`MAX_TIME_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeMs(pub Duration);

impl<'de> Deserialize<'de> for TimeMs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TimeMs, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TimeMs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "milliseconds, a whole number from 0 to {MAX_TIME_MS}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeMs, E> {
                if v > MAX_TIME_MS {
                    return Err(E::custom(format!(
                        "{v} ms is more than 100 years (at most {MAX_TIME_MS})"
                    )));
                }
                Ok(TimeMs(Duration::from_millis(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeMs, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("{v} is negative; use 0 to disable"))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TimeMs, E> {
                // serde_json hands over integers beyond u64 as floats, too.
                Err(E::custom(format!(
                    "{v} is not a whole number of milliseconds from 0 to {MAX_TIME_MS}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// `num_requests`: a whole number the proxy's meter can count (see
/// [`crate::proxy::meter::MAX_LIMIT`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumRequests(pub u64);

impl<'de> Deserialize<'de> for NumRequests {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<NumRequests, D::Error> {
        let n = u64::deserialize(d)?;
        crate::config::check_num_requests(n)
            .map(|()| NumRequests(n))
            .map_err(de::Error::custom)
    }
}

/// `autokill` of an instance: `{"num_requests", "time_ms"}`; a left-out or `null` field is not set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutokill {
    /// Delete after this many requests; 0 disables.
    pub num_requests: Option<NumRequests>,
    /// Delete after being stopped this long; 0 disables.
    pub time_ms: Option<TimeMs>,
}

impl RawAutokill {
    /// The policy the controller takes.
    pub fn spec(&self) -> AutokillSpec {
        AutokillSpec {
            num_requests: self.num_requests.map(|n| n.0),
            time: self.time_ms.map(|t| t.0),
        }
    }
}

/// `autokill` of a template or service group: only `{"time_ms"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeAutokill {
    /// Delete after being unused (templates) or empty (groups) this long; 0 disables.
    pub time_ms: Option<TimeMs>,
}

impl RawTimeAutokill {
    /// The time the controller takes.
    pub fn time(&self) -> Option<Duration> {
        self.time_ms.map(|t| t.0)
    }
}

/// Accepts an enum value whatever its case and whether words are joined by `-` or `_`.
fn normalized(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

/// `restart_policy`: Unikraft's `never`, `always`, `on-failure`, or Tutum's `OFF`, `ALWAYS`,
/// `ON_FAILURE` (any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireRestartPolicy(pub RestartPolicy);

impl<'de> Deserialize<'de> for WireRestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let policy = match normalized(&s).as_str() {
            "never" | "off" => RestartPolicy::Never,
            "always" => RestartPolicy::Always,
            "on-failure" => RestartPolicy::OnFailure,
            _ => {
                return Err(de::Error::custom(format!(
                    "unknown restart policy {s:?}, expected one of never, always, on-failure \
                     (or OFF, ALWAYS, ON_FAILURE)"
                )));
            }
        };
        Ok(WireRestartPolicy(policy))
    }
}

/// The wire name of a restart policy (Unikraft's spelling).
pub fn restart_policy_name(p: RestartPolicy) -> &'static str {
    match p {
        RestartPolicy::Never => "never",
        RestartPolicy::Always => "always",
        RestartPolicy::OnFailure => "on-failure",
    }
}

/// `autodestroy`: `OFF`, `ON_FAILURE`, `ON_SUCCESS`, `ALWAYS` (any case, `-` or `_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireAutodestroy(pub Autodestroy);

impl<'de> Deserialize<'de> for WireAutodestroy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let value = match normalized(&s).as_str() {
            "off" => Autodestroy::Off,
            "on-failure" => Autodestroy::OnFailure,
            "on-success" => Autodestroy::OnSuccess,
            "always" => Autodestroy::Always,
            _ => {
                return Err(de::Error::custom(format!(
                    "unknown autodestroy {s:?}, expected one of OFF, ON_FAILURE, ON_SUCCESS, ALWAYS"
                )));
            }
        };
        Ok(WireAutodestroy(value))
    }
}

/// The wire name of an autodestroy value (Tutum's spelling).
pub fn autodestroy_name(a: Autodestroy) -> &'static str {
    match a {
        Autodestroy::Off => "OFF",
        Autodestroy::OnFailure => "ON_FAILURE",
        Autodestroy::OnSuccess => "ON_SUCCESS",
        Autodestroy::Always => "ALWAYS",
    }
}

/// One of Unikraft's instance `features` that autokill knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Feature {
    /// Delete the instance when it stops: autodestroy `ALWAYS`.
    #[serde(rename = "delete-on-stop")]
    DeleteOnStop,
    /// Unikraft's scale-to-zero: known, so that it is refused by name.
    #[serde(rename = "scale-to-zero")]
    ScaleToZero,
}

/// Exactly one of `uuid` and `name`, as a [`Ref`]; `field` names the object holding them.
pub fn one_ref(uuid: Option<Uuid>, name: Option<&str>, field: &str) -> Result<Ref, ApiError> {
    let what = if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    };
    match (uuid, name) {
        (Some(id), None) => Ok(Ref::Id(id)),
        (None, Some(name)) if !name.is_empty() => Ok(Ref::Name(name.to_owned())),
        (None, Some(_)) => Err(ApiError::bad_request(format!("{what}name is empty"))),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "{what}give either uuid or name, not both"
        ))),
        (None, None) => Err(ApiError::bad_request(format!(
            "{what}give the uuid or the name of the resource"
        ))),
    }
}

/// PATCH's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Replace the value.
    Set,
    /// Add to a list.
    Add,
    /// Remove from a list.
    Del,
}

impl Op {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Add => "add",
            Op::Del => "del",
        }
    }
}

/// One PATCH item: `{"id"?, "uuid"|"name"?, "prop", "op", "value"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPatch {
    /// Echoed back in this item's answer.
    pub id: Option<Value>,
    /// The resource (body form `PATCH /v1/…` without an id in the path).
    pub uuid: Option<Uuid>,
    /// The resource, by name.
    pub name: Option<String>,
    /// The property.
    pub prop: String,
    /// What to do with it.
    pub op: Op,
    /// The operand, kept as written so that it is parsed like every other body (duplicate
    /// keys refused); `null` or left out means "not set".
    #[serde(default)]
    pub value: Option<Box<serde_json::value::RawValue>>,
}

impl RawPatch {
    /// Refuses an op other than those `allowed` for this item's prop, naming `field`.
    pub fn expect_op(&self, field: &str, allowed: &[Op]) -> Result<(), ApiError> {
        if allowed.contains(&self.op) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|o| o.as_str()).collect();
        Err(bad(
            &format!("{field}op"),
            format!(
                "op {:?} is not supported for {:?}; use {}",
                self.op.as_str(),
                self.prop,
                names.join(" or ")
            ),
        ))
    }

    /// The value as `T`, named `<field>value` on error; `null` is refused when `T` cannot be null.
    pub fn value<T: DeserializeOwned>(&self, field: &str) -> Result<T, ApiError> {
        let text = self.value.as_ref().map_or("null", |v| v.get());
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let path = err.path().to_string();
            ApiError::bad_request(at(
                &path,
                &format!("{field}value"),
                &err.into_inner().to_string(),
            ))
        })
    }

    /// Whether the value is a JSON array (a list of operands rather than one).
    pub fn value_is_array(&self) -> bool {
        self.value
            .as_ref()
            .is_some_and(|v| v.get().trim_start().starts_with('['))
    }
}

/// The `{"uuid"|"name"}` items of a delete body (and of a list's body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// By UUID.
    pub uuid: Option<Uuid>,
    /// By name.
    pub name: Option<String>,
}

/// Parses a body of `{"uuid"|"name"}` items (or one), each checked.
pub fn parse_targets(body: &[u8]) -> Result<(Vec<Ref>, bool), ApiError> {
    let batch: Batch<RawTarget> = parse_batch(body)?;
    let refs = batch
        .items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let prefix = batch.prefix(i);
            one_ref(t.uuid, t.name.as_deref(), prefix.trim_end_matches('.'))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((refs, batch.single))
}

// ---------------------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------------------

/// Standard base64 with padding (RFC 4648 §4), as Unikraft sends an instance's log.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An instant as RFC 3339 in UTC with milliseconds (`2025-01-31T12:00:00.000Z`), as Unikraft's
/// ISO 8601 timestamps; `None` before 1970.
pub fn rfc3339(t: SystemTime) -> Option<String> {
    let since = t.duration_since(UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).ok()?;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        since.subsec_millis()
    ))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, exact for every day a `SystemTime` can hold.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc4648() {
        for (data, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (&[0xff, 0xfe, 0x00], "//4A"),
        ] {
            assert_eq!(base64(data), encoded);
        }
    }

    #[test]
    fn rfc3339_formats_utc_with_millis() {
        assert_eq!(
            rfc3339(UNIX_EPOCH).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_123); // leap day 2000
        assert_eq!(rfc3339(t).as_deref(), Some("2000-02-29T00:00:00.123Z"));
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // last second of 2024
        assert_eq!(rfc3339(t).as_deref(), Some("2024-12-31T23:59:59.000Z"));
        assert_eq!(rfc3339(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn errors_name_the_field_path() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[allow(dead_code)]
            autokill: Option<RawAutokill>,
        }
        let err = parse::<Body>(br#"{"autokill": {"time_ms": "x"}}"#).unwrap_err();
        assert!(
            err.message
                .starts_with("autokill.time_ms: invalid type: string \"x\""),
            "{}",
            err.message
        );
        let err = parse::<Body>(br#"{"autokill": {"time_ms": -1}}"#).unwrap_err();
        assert!(
            err.message.starts_with("autokill.time_ms: -1 is negative"),
            "{}",
            err.message
        );
        let err = parse::<Body>(br#"{"autokill": {"time_ms": 1e30}}"#).unwrap_err();
        assert!(
            err.message.starts_with("autokill.time_ms: "),
            "{}",
            err.message
        );
        let err = parse::<Body>(br#"{"autokill": {"time_ms": 3155760000001}}"#).unwrap_err();
        assert!(
            err.message.contains("more than 100 years"),
            "{}",
            err.message
        );
        let err = parse::<Body>(br#"{"autokil": {}}"#).unwrap_err();
        assert!(
            err.message.contains("unknown field `autokil`"),
            "{}",
            err.message
        );
        let err = parse::<Body>(b"{\n  \"autokill\": {").unwrap_err();
        assert!(err.message.starts_with("invalid JSON: "), "{}", err.message);
        assert!(err.message.contains("line 2"), "{}", err.message);
        let err = parse::<Body>(br#"{"autokill": null} x"#).unwrap_err();
        assert!(
            err.message.starts_with("invalid JSON: trailing"),
            "{}",
            err.message
        );
        let ok = parse::<Body>(br#"{"autokill": {"time_ms": null, "num_requests": 3}}"#).unwrap();
        assert_eq!(
            ok.autokill.map(|a| a.spec()),
            Some(AutokillSpec {
                num_requests: Some(3),
                time: None
            })
        );
    }

    #[test]
    fn batch_paths_carry_the_index() {
        let err = parse_batch::<RawAutokill>(br#"[{}, {"num_requests": "3"}]"#).unwrap_err();
        assert!(
            err.message.starts_with("[1].num_requests: "),
            "{}",
            err.message
        );
        let batch = parse_batch::<RawAutokill>(br#" {"num_requests": 3}"#).unwrap();
        assert!(batch.single);
        assert!(parse_batch::<RawAutokill>(b"  ").is_err());
        assert!(parse_batch::<RawAutokill>(b"[]").is_err());
    }

    #[test]
    fn enums_take_both_spellings() {
        let p: WireRestartPolicy = serde_json::from_str(r#""ON_FAILURE""#).unwrap();
        assert_eq!(p.0, RestartPolicy::OnFailure);
        let p: WireRestartPolicy = serde_json::from_str(r#""off""#).unwrap();
        assert_eq!(p.0, RestartPolicy::Never);
        assert!(serde_json::from_str::<WireRestartPolicy>(r#""sometimes""#).is_err());
        let a: WireAutodestroy = serde_json::from_str(r#""on_success""#).unwrap();
        assert_eq!(a.0, Autodestroy::OnSuccess);
        assert!(serde_json::from_str::<WireAutodestroy>(r#""MAYBE""#).is_err());
    }

    #[test]
    fn names_and_domains() {
        assert!(serde_json::from_str::<Label>(r#""web-1""#).is_ok());
        for bad in ["", "-a", "a-", "Web", "a.b", &"a".repeat(64)] {
            assert!(
                serde_json::from_str::<Label>(&format!("{bad:?}")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            resolve_domain("Web", "localhost").as_deref(),
            Ok("web.localhost")
        );
        assert_eq!(
            resolve_domain("example.com.", "localhost").as_deref(),
            Ok("example.com")
        );
        assert!(resolve_domain("", "localhost").is_err());
        assert!(resolve_domain(".", "localhost").is_err());
        assert!(resolve_domain("a..b", "localhost").is_err());
        assert!(resolve_domain("a_b", "localhost").is_err());
    }
}
