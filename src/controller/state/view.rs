//! What the controller publishes: the proxy's route table and the view the API and `/metrics` read.

use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::super::api::Reply;
use super::super::{GroupView, InstanceState, InstanceView, View};
use super::{Group, Instance, State};
use crate::proxy::route::{GroupRoute, RouteTable, Target};

impl State {
    // ---- what is published ---------------------------------------------------------------

    /// The route table for the current state, built from nothing: what
    /// [`State::publish_routes`] must always equal (the tests compare the two).
    #[cfg(test)]
    pub fn route_table(&self) -> RouteTable {
        let mut b = RouteTable::builder();
        let mut index = std::collections::HashMap::new();
        for inst in self.instances.values() {
            if matches!(inst.state, InstanceState::Template | InstanceState::Deleted) {
                continue;
            }
            let target = match &inst.upstream {
                Some(up)
                    if matches!(inst.state, InstanceState::Running | InstanceState::Draining) =>
                {
                    let i = b.upstream(Arc::clone(up));
                    index.insert(inst.id, i);
                    Target::Instance(Some(i))
                }
                _ => Target::Instance(None),
            };
            b.route(&format!("{}.{}", inst.name, self.base_domain), target);
        }
        for group in self.groups.values() {
            let members = self.group_members(group.id, |id| index.get(id).copied());
            for domain in &group.domains {
                b.route(
                    domain,
                    Target::Group(GroupRoute {
                        members: members.clone().into(),
                        balance: group.balance,
                    }),
                );
            }
        }
        b.build()
    }

    /// The route table to publish when routing changed since the last one, else `None`.
    ///
    /// Incremental: the new table is an edit of the last ([`RouteTable::edit`]) in which only
    /// the hosts of what changed are routed again — the changed instances' old and new names,
    /// the domains of their groups and of changed groups — so starting, stopping or deleting
    /// one instance among 100,000 costs a few routes and the copy of one part of the table.
    /// Running incarnations keep their slot while they run; a freed slot is reused.
    pub fn publish_routes(&mut self) -> Option<Arc<RouteTable>> {
        if self.stale_routes.is_empty() {
            return None;
        }
        let mut stale = std::mem::take(&mut self.stale_routes);
        let mut edit = self.routes.edit();
        for id in &stale.instances {
            let inst = self
                .instances
                .get(id)
                .filter(|i| !matches!(i.state, InstanceState::Template | InstanceState::Deleted));
            let up = inst.and_then(|i| {
                i.upstream
                    .as_ref()
                    .filter(|_| matches!(i.state, InstanceState::Running | InstanceState::Draining))
            });
            match (self.slots.get(id).copied(), up) {
                (Some(slot), Some(up)) => {
                    if !edit.upstream_at(slot).is_some_and(|at| Arc::ptr_eq(at, up)) {
                        edit.set_upstream(slot, Some(Arc::clone(up)));
                    }
                }
                (Some(slot), None) => {
                    edit.set_upstream(slot, None);
                    self.slots.remove(id);
                    self.free_slots.push(slot);
                }
                (None, Some(up)) => {
                    let slot = self
                        .free_slots
                        .pop()
                        .unwrap_or_else(|| self.slots.len() + self.free_slots.len());
                    edit.set_upstream(slot, Some(Arc::clone(up)));
                    self.slots.insert(*id, slot);
                }
                (None, None) => {}
            }
            if let Some(i) = inst {
                stale.groups.extend(i.group);
                // Its own host goes straight to it, unless a group's domain takes precedence
                // or another change names the same host: those are decided below.
                let host = format!("{}.{}", i.name, self.base_domain);
                if stale.hosts.contains(&host) || self.domains.contains_key(&host) {
                    stale.hosts.insert(host);
                } else {
                    edit.route(&host, Target::Instance(self.slots.get(id).copied()));
                }
            }
        }
        for id in &stale.groups {
            if let Some(g) = self.groups.get(id) {
                stale.hosts.extend(g.domains.iter().cloned());
            }
        }
        for host in &stale.hosts {
            match self.target_for(host) {
                Some(target) => edit.route(host, target),
                None => {
                    edit.unroute(host);
                }
            }
        }
        self.routes = Arc::new(edit.build());
        Some(Arc::clone(&self.routes))
    }

    /// The upstream slots (`slot` of an instance) of group `id`'s running members, in a stable
    /// order, so that round-robin walks the same cycle across publishes.
    fn group_members(&self, id: Uuid, slot: impl Fn(&Uuid) -> Option<usize>) -> Vec<usize> {
        let mut members: Vec<usize> = self
            .member_ids(id)
            .iter()
            .filter(|id| {
                self.instances
                    .get(id)
                    .is_some_and(|i| i.state == InstanceState::Running)
            })
            .filter_map(slot)
            .collect();
        members.sort_unstable();
        members
    }

    /// Where `host` leads now: a group's domain (groups win, as in [`State::route_table`]), else
    /// an instance's `<name>.<base domain>`; `None` for nowhere. Reads the slots, so the
    /// instances' slots must already be up to date.
    fn target_for(&self, host: &str) -> Option<Target> {
        if let Some(group) = self.domains.get(host).and_then(|id| self.groups.get(id)) {
            let members = self.group_members(group.id, |id| self.slots.get(id).copied());
            return Some(Target::Group(GroupRoute {
                members: members.into(),
                balance: group.balance,
            }));
        }
        let name = host
            .strip_suffix(self.base_domain.as_str())?
            .strip_suffix('.')?;
        let inst = self.instances.get(self.names.get(name)?)?;
        if matches!(inst.state, InstanceState::Template | InstanceState::Deleted) {
            return None;
        }
        Some(Target::Instance(self.slots.get(&inst.id).copied()))
    }

    /// What the API and `/metrics` read: every instance and template but those being deleted.
    /// Instances and groups are the views kept up to date at each commit (shared, not
    /// rebuilt); the Tutum part is built from the services' member indexes.
    pub fn view(&self) -> View {
        View {
            instances: self.view_cache.clone(),
            groups: self.group_cache.clone(),
            tutum: self.tutum_view(),
            due: self.due_cache.clone(),
        }
    }

    /// One instance's view; `clones` counts a template's clones (see [`State::clones_of`]).
    pub(super) fn instance_view(&self, i: &Instance, clones: usize) -> InstanceView {
        InstanceView {
            id: i.id,
            name: Arc::clone(&i.name),
            state: i.state,
            template: i.template_name.clone(),
            clones: if i.state == InstanceState::Template {
                clones
            } else {
                0
            },
            group: i
                .group
                .and_then(|g| self.groups.get(&g))
                .map(|g| g.name.clone()),
            image: i.image.clone(),
            memory_mb: i.memory_mb,
            start_error: i.start_error.clone(),
            meter: Arc::clone(&i.meter),
            autokill: i.autokill,
            unused_time: i.unused_time.filter(|_| i.state == InstanceState::Template),
            restart_policy: i.restart_policy,
            autodestroy: i.autodestroy,
            exit_code: i.exit_code,
            stop_reason: i.stop_reason,
            stopped_at: i.stopped_at,
            created_at: i.created_at,
            delete_lock: i.delete_lock,
            addr: i.upstream.as_ref().map(|u| u.addr),
            service: i.group.filter(|g| self.spec(*g).is_some()),
            started_at: i
                .running_since
                .filter(|_| matches!(i.state, InstanceState::Running | InstanceState::Draining)),
        }
    }

    pub(super) fn instance_reply(&self, id: Uuid) -> Reply {
        match self.instances.get(&id) {
            Some(i) => Reply::Instance(self.instance_view(i, self.clones_of(i.id))),
            None => unreachable_reply(id),
        }
    }

    /// One group's view.
    pub(super) fn group_view(&self, g: &Group) -> GroupView {
        let members = self
            .member_ids(g.id)
            .iter()
            .filter_map(|id| self.instances.get(id))
            .map(|i| Arc::clone(&i.name))
            .collect();
        self.group_view_with(g, members)
    }

    fn group_view_with(&self, g: &Group, mut instances: Vec<Arc<str>>) -> GroupView {
        instances.sort();
        GroupView {
            id: g.id,
            name: g.name.clone(),
            domains: g.domains.clone(),
            autokill_time: g.autokill_time,
            delete_lock: g.delete_lock,
            instances,
            soft_limit: g.soft_limit,
            hard_limit: g.hard_limit,
            services: g.services.clone(),
            created_at: g.created_at,
            deleted: false,
        }
    }
}

/// The reply for an id that vanished inside the same command: cannot happen, but answering
/// "not found" is better than a panic in the controller.
fn unreachable_reply(id: Uuid) -> Reply {
    tracing::error!(%id, "reply for a resource that is gone");
    Reply::Group(GroupView {
        id,
        name: String::new(),
        domains: Vec::new(),
        autokill_time: None,
        delete_lock: false,
        instances: Vec::new(),
        soft_limit: None,
        hard_limit: None,
        services: serde_json::Value::Null,
        created_at: SystemTime::UNIX_EPOCH,
        deleted: true,
    })
}

/// What changed routing since the last published route table (see [`State::publish_routes`]).
#[derive(Debug, Default)]
pub struct StaleRoutes {
    /// Instances whose state, incarnation, name or group changed.
    pub(super) instances: std::collections::HashSet<Uuid>,
    /// Groups whose domains, balance or routable members changed.
    pub(super) groups: std::collections::HashSet<Uuid>,
    /// Hosts that may have led somewhere before: old names and old domains.
    pub(super) hosts: std::collections::HashSet<String>,
}

impl StaleRoutes {
    /// Nothing changed routing.
    pub(super) fn is_empty(&self) -> bool {
        self.instances.is_empty() && self.groups.is_empty() && self.hosts.is_empty()
    }
}
