//! The controller's state as store records, and back: what a batch of commands changed, and the
//! state a new start recovers (every instance that was running is started again or adopted,
//! every deadline re-armed from the instants it derives from, a deadline that passed while down
//! fires at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::state::services::ServiceSpec;
use super::state::{Group, Instance, Pending, State};
use super::{Command, Effect, InstanceState, StopReason};
use crate::config::{Autodestroy, Autokill, RestartPolicy};
use crate::proxy::meter::Meter;
use crate::runtime::{Found, InstanceSpec};
use crate::store::{Change, GroupRecord, InstanceRecord, Snapshot};

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn state_from(s: &str) -> InstanceState {
    InstanceState::ALL
        .into_iter()
        .find(|x| x.as_str() == s)
        .unwrap_or(InstanceState::Stopped)
}

fn reason_from(s: &str) -> Option<StopReason> {
    [
        StopReason::NumRequests,
        StopReason::Exited,
        StopReason::UserStop,
        StopReason::StartFailed,
    ]
    .into_iter()
    .find(|r| r.as_str() == s)
}

/// Kill reasons are static strings in effects; map a stored one back to its static.
fn kill_reason(s: &str) -> Option<&'static str> {
    ["num_requests", "stopped_time", "autodestroy"]
        .into_iter()
        .find(|r| *r == s)
}

impl State {
    /// The records of everything changed since the last commit. After a recovery, a record
    /// restored as it was stored is not written again (recovering 100,000 stopped instances
    /// writes none of them; see [`Tracked::restore`](super::state::Tracked::restore)).
    pub fn changes(&self) -> Vec<Change> {
        let mut changes = Vec::new();
        for id in self.instances.to_write() {
            match self.instances.get(id).map(record) {
                Some(r) => changes.push(Change::PutInstance(r)),
                None => changes.push(Change::DeleteInstance(*id)),
            }
        }
        for id in self.groups.to_write() {
            match self.groups.get(id).map(group_record) {
                Some(r) => changes.push(Change::PutGroup(r)),
                None => changes.push(Change::DeleteGroup(*id)),
            }
        }
        changes
    }

    /// The changes are durable: the next batch starts from here.
    pub fn committed(&mut self) {
        self.index_changes();
        self.settle();
    }

    /// The changes, already indexed ([`State::index_changes`]), are durable: the next batch
    /// starts from here.
    pub fn settle(&mut self) {
        self.instances.commit();
        self.groups.commit();
        self.names.commit();
        self.tombstones_committed();
    }

    /// The changes could not be made durable: the state goes back to the last commit.
    pub fn rollback(&mut self) {
        self.instances.rollback();
        self.groups.rollback();
        self.names.rollback();
        self.tombstones_rolled_back();
    }

    /// Rebuilds the state from what was stored and returns the effects that bring the world back
    /// in line: instances that were running are started again, deletes that were in progress are
    /// finished, and every timer is re-armed (or fires, if its deadline passed while down).
    pub fn recover(&mut self, snapshot: Snapshot, now: SystemTime) -> Vec<Effect> {
        let mut fx = Vec::new();
        self.groups.reserve(snapshot.groups.len());
        self.instances.reserve(snapshot.instances.len());
        self.names.reserve(snapshot.instances.len());
        for r in snapshot.groups {
            self.groups.restore(
                r.id,
                Group {
                    id: r.id,
                    name: r.name,
                    domains: r.domains,
                    autokill_time: r.time_ms.map(Duration::from_millis),
                    balance: self.balance(),
                    delete_lock: r.delete_lock,
                    created_at: at(r.created_at),
                    empty_since: r.empty_since.map(at),
                    soft_limit: r.soft_limit,
                    hard_limit: r.hard_limit,
                    services: r.services,
                    from_config: r.from_config,
                    skipped: None,
                    service: r.service.map(ServiceSpec::restore),
                },
            );
        }
        // Making each instance of its record (allocations, a meter, the effect that brings it
        // back) needs nothing but the record: a large store's records are made on two threads,
        // each taking one half, then put into the maps here in key order, as stored.
        let mut records = snapshot.instances;
        fx.reserve(records.len() + 1);
        let restored = if records.len() < PARALLEL_RESTORE_FROM {
            vec![records.into_iter().map(|r| restore(r, now)).collect()]
        } else {
            let upper = std::sync::Mutex::new(Some(records.split_off(records.len() / 2)));
            let (upper, lower) = crate::par::join(
                "autokill-restore",
                || {
                    let half = upper.lock().map(|mut u| u.take()).ok().flatten();
                    half.unwrap_or_default()
                        .into_iter()
                        .map(|r| restore(r, now))
                        .collect::<Vec<_>>()
                },
                || {
                    std::mem::take(&mut records)
                        .into_iter()
                        .map(|r| restore(r, now))
                        .collect::<Vec<_>>()
                },
            );
            vec![lower, upper]
        };
        for Restored {
            inst,
            effect,
            as_stored,
        } in restored.into_iter().flatten()
        {
            let id = inst.id;
            fx.extend(effect);
            if inst.state != InstanceState::Deleted {
                self.names.restore(Arc::clone(&inst.name), id);
            }
            if as_stored {
                self.instances.restore(id, inst);
            } else {
                self.instances.insert(id, inst);
            }
        }
        let ids: Vec<_> = self.instances.values().map(|i| i.id).collect();
        for id in ids {
            self.recheck(id, now, &mut fx);
        }
        let groups: Vec<_> = self.groups.values().map(|g| g.id).collect();
        for id in groups {
            self.recheck_group(id, now, &mut fx);
        }
        fx.push(Effect::Publish);
        fx
    }
}

/// From this many stored instances on, a recovery makes them of their records on two threads.
const PARALLEL_RESTORE_FROM: usize = 4096;

/// A stored instance as a recovery brings it back.
struct Restored {
    inst: Instance,
    /// What brings the world in line with it: created (and started again, if it was running),
    /// or its delete finished; `None` for a template.
    effect: Option<Effect>,
    /// Left as it was stored (restored, not written back): a template, or a stopped instance
    /// with no delete in progress.
    as_stored: bool,
}

/// Makes the instance of its record (see [`State::recover`]).
fn restore(r: InstanceRecord, now: SystemTime) -> Restored {
    let autokill = Autokill {
        num_requests: r.num_requests,
        time: r.time_ms.map(Duration::from_millis),
    };
    // Every request up to the reservation may have been forwarded before the crash.
    let meter = Arc::new(Meter::new(r.reserved, r.num_requests));
    meter.set_limit(r.num_requests, r.delete_lock);
    let stored = state_from(&r.state);
    let deleting = r.deleting.as_deref();
    let name: Arc<str> = r.name.as_str().into();
    let spec = InstanceSpec {
        id: r.id,
        name: Arc::clone(&name),
        image: r.image.clone(),
        memory_mb: r.memory_mb,
    };
    let mut inst = Instance::restored(
        r.id,
        name,
        r.image,
        autokill,
        meter,
        at(r.created_at),
        at(r.last_used),
    );
    inst.memory_mb = r.memory_mb;
    inst.asked_requests = r.asked_num_requests;
    inst.group = r.group;
    inst.template = r.template;
    inst.template_name = r.template_name;
    inst.restart_policy = RestartPolicy::from_wire(&r.restart_policy).unwrap_or_default();
    inst.autodestroy = Autodestroy::from_wire(&r.autodestroy).unwrap_or_default();
    inst.exit_code = r.exit_code;
    inst.stop_reason = r.stop_reason.as_deref().and_then(reason_from);
    inst.stopped_at = r.stopped_at.map(at);
    inst.delete_lock = r.delete_lock;
    inst.from_config = r.from_config;
    inst.unused_time = r.unused_ms.map(Duration::from_millis);
    inst.set_recovered(r.reserved, r.restarts, r.restart_at.map(at), r.destroy_due);
    // Left as it was stored (restored, not written back) unless a check changes it:
    // a template, or a stopped instance with no delete in progress.
    let as_stored =
        deleting.is_none() && matches!(stored, InstanceState::Template | InstanceState::Stopped);
    let effect = match (deleting, stored) {
        (Some(reason), _) => {
            inst.state = InstanceState::Deleted;
            inst.set_pending(Pending::Delete(kill_reason(reason)));
            Some(Effect::Delete(r.id))
        }
        (None, InstanceState::Template) => {
            inst.state = InstanceState::Template;
            None
        }
        (None, InstanceState::Stopped) => {
            inst.state = InstanceState::Stopped;
            Some(Effect::Launch { spec, start: None })
        }
        // Running, starting, draining or stopping when the process died: start it again.
        // (A spent budget drains again as soon as it runs; a user's stop in progress is
        // finished as a stop.)
        (None, InstanceState::Stopping) => {
            inst.state = InstanceState::Stopped;
            inst.stop_reason = Some(StopReason::UserStop);
            inst.stopped_at = Some(now);
            Some(Effect::Launch { spec, start: None })
        }
        (None, _) => {
            inst.state = InstanceState::Starting;
            let attempt = inst.next_attempt();
            Some(Effect::Launch {
                spec,
                start: Some(attempt),
            })
        }
    };
    Restored {
        inst,
        effect,
        as_stored,
    }
}

/// The stored instances and templates as the runtime knows them, for [`Runtime::adopt`](crate::runtime::Runtime::adopt).
pub fn stored_specs(snapshot: &Snapshot) -> Vec<InstanceSpec> {
    snapshot
        .instances
        .iter()
        .map(|r| InstanceSpec {
            id: r.id,
            name: r.name.as_str().into(),
            image: r.image.clone(),
            memory_mb: r.memory_mb,
        })
        .collect()
}

impl State {
    /// After [`State::recover`], with what the runtime found left of the stored instances
    /// ([`Found`]; only a runtime that can adopt finds anything). An instance that was running
    /// and still runs is adopted at its address, as if its start had just answered (its meter
    /// continues from the stored reservation); one that exited meanwhile is judged by its exit
    /// code as if autokill had seen it exit (restart, autodestroy, or stay stopped); one the
    /// store has stopped but that runs is stopped. Their `Launch` effects are dropped from `fx`.
    pub fn adopt(&mut self, found: &HashMap<Uuid, Found>, fx: &mut Vec<Effect>, now: SystemTime) {
        let mut commands = Vec::new();
        let mut stops = Vec::new();
        fx.retain(|effect| {
            let Effect::Launch { spec, start } = effect else {
                return true;
            };
            let Some(found) = found.get(&spec.id) else {
                return true;
            };
            let id = spec.id;
            match (*found, *start) {
                (Found::Running(addr), Some(attempt)) => commands.push(Command::Started {
                    id,
                    attempt,
                    result: Ok(addr),
                }),
                (Found::Exited(exit_code), Some(_)) => {
                    // It ran until it exited: judged as a running instance's exit is.
                    if let Some(inst) = self.instances.get_mut(&id) {
                        inst.state = InstanceState::Running;
                    }
                    commands.push(Command::Exited { id, exit_code });
                }
                (Found::Running(_), None) => stops.push(id),
                // Stopped, and the store knows: nothing to judge.
                (Found::Exited(_), None) => {}
            }
            false
        });
        for id in stops {
            if let Some(inst) = self.instances.get_mut(&id) {
                tracing::info!(instance = %inst.name, "stopping a container the store has stopped");
                inst.state = InstanceState::Stopping;
                inst.set_pending(Pending::Stop);
                fx.push(Effect::Stop(id));
            }
        }
        for cmd in commands {
            fx.extend(self.apply(cmd, now));
        }
    }
}

fn record(i: &Instance) -> InstanceRecord {
    InstanceRecord {
        id: i.id,
        name: i.name.to_string(),
        image: i.image.clone(),
        memory_mb: i.memory_mb,
        group: i.group,
        template: i.template,
        template_name: i.template_name.clone(),
        num_requests: i.autokill.num_requests,
        asked_num_requests: i.asked_requests,
        time_ms: i.autokill.time.map(|t| t.as_millis() as u64),
        restart_policy: i.restart_policy.as_str().to_owned(),
        autodestroy: i.autodestroy.as_str().to_owned(),
        state: i.state.as_str().to_owned(),
        exit_code: i.exit_code,
        stop_reason: i.stop_reason.map(|r| r.as_str().to_owned()),
        stopped_at: i.stopped_at.map(ms),
        created_at: ms(i.created_at),
        delete_lock: i.delete_lock,
        last_used: ms(i.last_used),
        unused_ms: i.unused_time.map(|t| t.as_millis() as u64),
        restarts: i.restarts(),
        restart_at: i.restart_at().map(ms),
        destroy_due: i.destroy_due(),
        deleting: match i.pending() {
            Pending::Delete(reason) => Some(reason.unwrap_or("").to_owned()),
            _ => None,
        },
        reserved: i.reserved(),
        from_config: i.from_config,
    }
}

fn group_record(g: &Group) -> GroupRecord {
    GroupRecord {
        id: g.id,
        name: g.name.clone(),
        domains: g.domains.clone(),
        time_ms: g.autokill_time.map(|t| t.as_millis() as u64),
        delete_lock: g.delete_lock,
        created_at: ms(g.created_at),
        empty_since: g.empty_since.map(ms),
        soft_limit: g.soft_limit,
        hard_limit: g.hard_limit,
        services: g.services.clone(),
        from_config: g.from_config,
        service: g.service.as_ref().map(ServiceSpec::record),
    }
}
