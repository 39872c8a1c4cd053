//! What the controller publishes: the proxy's route table and the view the API and `/metrics` read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::super::api::Reply;
use super::super::{GroupView, InstanceState, InstanceView, View};
use super::{Group, Instance, State};
use crate::proxy::route::{GroupRoute, RouteTable, Target};

impl State {
    // ---- what is published ---------------------------------------------------------------

    /// The route table for the current state.
    pub fn route_table(&self) -> RouteTable {
        let mut b = RouteTable::builder();
        let mut index = HashMap::new();
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
            let mut members: Vec<usize> = self
                .member_ids(group.id)
                .iter()
                .filter(|id| {
                    self.instances
                        .get(id)
                        .is_some_and(|i| i.state == InstanceState::Running)
                })
                .filter_map(|id| index.get(id).copied())
                .collect();
            // A stable order, so round-robin walks the same cycle across publishes.
            members.sort_unstable();
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
