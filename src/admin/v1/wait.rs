//! Waiting for an instance's state, as Unikraft's API does on create and start (`timeout_s`,
//! `wait_timeout_ms`), on delete, and at `GET /v1/instances/wait`.
//!
//! A wait watches the published view: it subscribes to the controller's publish counter
//! ([`crate::controller::Published::changed`]), looks at the view, and sleeps until the next
//! publish or its deadline. Nothing polls and the controller never waits.
//!
//! A wait that ends without the state asked for is still answered with HTTP 200: the item
//! carries the instance as it is, `status: "error"` and a message saying it `timed out` (or
//! that the instance stopped), which is how the SDKs tell a lapsed wait from a failed call.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::wire::{self, Item};
use super::{AdminState, show};
use crate::controller::api::{ApiError, Ref};
use crate::controller::{InstanceState, View};

/// The longest wait honoured; also what `-1` ("as long as the server allows") and a wait
/// endpoint without a timeout mean.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Running (after a create or start): ends early if the instance stops or goes.
    Running,
    /// A given state (`deleted`: gone from the view).
    State(InstanceState),
}

/// One timeout as the API spells it: `timeout_s` (seconds) or `wait_timeout_ms`/`timeout_ms`
/// (milliseconds, the older spelling); `-1` is as long as allowed, `0` no wait.
pub fn timeout(
    seconds: Option<i64>,
    millis: Option<i64>,
    prefix: &str,
    millis_name: &str,
) -> Result<Option<Duration>, ApiError> {
    let (value, unit_ms, name) = match (seconds, millis) {
        (Some(s), _) => (s, 1000, "timeout_s"),
        (None, Some(ms)) => (ms, 1, millis_name),
        (None, None) => return Ok(None),
    };
    match value {
        0 => Ok(None),
        -1 => Ok(Some(MAX_WAIT)),
        v if v < 0 => Err(wire::bad(
            &format!("{prefix}{name}"),
            format!("{v} is negative; use -1 to wait as long as allowed, 0 not to wait"),
        )),
        v => Ok(Some(
            Duration::from_millis((v as u64).saturating_mul(unit_ms)).min(MAX_WAIT),
        )),
    }
}

/// Waits until instance `id` is as `want`ed or `wait` passes, and answers its item: the
/// instance as it is then (`base` when it is gone), a success when reached.
pub async fn until(state: &AdminState, id: Uuid, base: Value, want: Want, wait: Duration) -> Item {
    let deadline = Instant::now() + wait;
    // Subscribed before the first look, so a publish between the look and the sleep wakes us.
    let mut changed = state.published.changed.subscribe();
    loop {
        let outcome = {
            let view = state.published.view.load();
            judge(state, &view, id, &base, want)
        };
        match outcome {
            Judged::Pending(_) if Instant::now() < deadline => {}
            Judged::Pending(shown) => {
                let message = format!(
                    "timed out after {} ms waiting for the instance to be {}; it is {}",
                    wait.as_millis(),
                    want_name(want),
                    shown["state"].as_str().unwrap_or("unknown")
                );
                return Item::unfinished(shown, message);
            }
            Judged::Reached(shown) => return Item::new(Ok(shown)),
            Judged::Failed(shown, message) => return Item::unfinished(shown, message),
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            // A publish: look again. A closed channel (shutting down) or the deadline: the
            // next look answers.
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

enum Judged {
    Reached(Value),
    Pending(Value),
    Failed(Value, String),
}

fn want_name(want: Want) -> &'static str {
    match want {
        Want::Running => "running",
        Want::State(s) => s.as_str(),
    }
}

fn judge(state: &AdminState, view: &View, id: Uuid, base: &Value, want: Want) -> Judged {
    let Some(i) = view.instances.get(&id) else {
        // Gone from the view: deleted.
        let mut gone = base.clone();
        gone["state"] = Value::from("deleted");
        return match want {
            Want::State(InstanceState::Deleted) => Judged::Reached(gone),
            _ => Judged::Failed(
                gone,
                "the instance stopped before it was running; it is gone already".into(),
            ),
        };
    };
    let mut shown = show::instance(i, view, &state.base_domain);
    // What the call before the wait said (`previous_state`) stays true.
    if let Some(previous) = base.get("previous_state") {
        shown["previous_state"] = previous.clone();
    }
    match want {
        Want::State(s) if i.state == s => Judged::Reached(shown),
        Want::Running if i.state == InstanceState::Running => Judged::Reached(shown),
        Want::Running if matches!(i.state, InstanceState::Stopped | InstanceState::Stopping) => {
            Judged::Failed(shown, "the instance stopped before it was running".into())
        }
        _ => Judged::Pending(shown),
    }
}

/// A `GET /v1/instances/wait` item: `{"uuid"|"name", "state"?, "timeout_ms"?, "timeout_s"?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWait {
    uuid: Option<Uuid>,
    name: Option<String>,
    /// The state to wait for; `running` when left out.
    state: Option<WireState>,
    timeout_ms: Option<i64>,
    timeout_s: Option<i64>,
}

/// An instance state by its wire name.
#[derive(Debug, Clone, Copy)]
struct WireState(InstanceState);

impl<'de> Deserialize<'de> for WireState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        InstanceState::ALL
            .iter()
            .find(|st| st.as_str() == s)
            .map(|st| WireState(*st))
            .ok_or_else(|| {
                let names: Vec<&str> = InstanceState::ALL.iter().map(|s| s.as_str()).collect();
                serde::de::Error::custom(format!(
                    "unknown state {s:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// A checked wait: which instance, for what, how long.
pub struct WaitFor {
    /// The instance.
    pub target: Ref,
    /// The state.
    pub want: Want,
    /// How long at most.
    pub wait: Duration,
}

impl RawWait {
    /// Checks the item; `path` is the `{id}` of the path form, which then names the instance.
    pub fn check(&self, prefix: &str, path: Option<&str>) -> Result<WaitFor, ApiError> {
        let target = match path {
            Some(id) if self.uuid.is_none() && self.name.is_none() => Ref::parse(id),
            Some(_) => {
                return Err(wire::bad(
                    &format!("{prefix}uuid/name"),
                    "the instance is named in the path",
                ));
            }
            None => wire::one_ref(
                self.uuid,
                self.name.as_deref(),
                prefix.trim_end_matches('.'),
            )?,
        };
        let want = Want::State(self.state.map_or(InstanceState::Running, |s| s.0));
        let wait =
            timeout(self.timeout_s, self.timeout_ms, prefix, "timeout_ms")?.unwrap_or(MAX_WAIT);
        Ok(WaitFor { target, want, wait })
    }

    /// The same wait without its `uuid`/`name` (for the path form).
    pub fn without_target(self) -> RawWait {
        RawWait {
            uuid: None,
            name: None,
            ..self
        }
    }

    /// The items of a query string (`?uuid=&name=&state=&timeout_ms=&timeout_s=`, each
    /// repeatable and paired by position).
    pub fn from_query(raw: &str) -> Result<Vec<RawWait>, ApiError> {
        let mut refs: Vec<(Option<Uuid>, Option<String>)> = Vec::new();
        let (mut states, mut ms, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            let value = value.trim().to_owned();
            let int = |v: &str, name: &str| {
                v.parse::<i64>().map_err(|_| {
                    wire::bad(name, format!("{:?} is not a whole number", wire::clip(v)))
                })
            };
            match &*key {
                "uuid" => refs.push((
                    Some(Uuid::parse_str(&value).map_err(|_| {
                        wire::bad("uuid", format!("invalid UUID {:?}", wire::clip(&value)))
                    })?),
                    None,
                )),
                "name" => refs.push((None, Some(value))),
                "state" => states.push(
                    serde_json::from_value::<WireState>(Value::from(value))
                        .map_err(|e| wire::bad("state", e))?,
                ),
                "timeout_ms" => ms.push(int(&value, "timeout_ms")?),
                "timeout_s" => s.push(int(&value, "timeout_s")?),
                other => {
                    return Err(wire::bad(
                        &wire::clip(other),
                        "unknown query parameter; expected uuid, name, state, timeout_ms or \
                         timeout_s",
                    ));
                }
            }
        }
        Ok(refs
            .into_iter()
            .enumerate()
            .map(|(i, (uuid, name))| RawWait {
                uuid,
                name,
                // One value for all, or one per instance.
                state: states.get(i).or(states.first()).copied(),
                timeout_ms: ms.get(i).or(ms.first()).copied(),
                timeout_s: s.get(i).or(s.first()).copied(),
            })
            .collect())
    }
}
