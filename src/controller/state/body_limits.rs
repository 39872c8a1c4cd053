//! Request body limits that the configuration file sets on its groups and instances
//! (`max_body_bytes`), carried to the proxy on each running incarnation's
//! [`Upstream`](crate::proxy::route::Upstream): instance over group over the proxy's own.
//!
//! They are configuration, not state: set by every [`Command::Declare`](super::Command) (at
//! start and at each reload), never stored. A reload that changes them changes the running
//! upstreams in place (an atomic each), so pooled connections stay.

use std::collections::HashMap;
use std::sync::Arc;

use uuid::Uuid;

use super::{Instance, State};
use crate::config::{BodyLimit, GroupConfig, InstanceConfig};

/// The limits the file declares: by instance name, and by declared group.
#[derive(Debug, Default)]
pub(super) struct BodyLimits {
    instances: HashMap<Arc<str>, BodyLimit>,
    groups: HashMap<Uuid, BodyLimit>,
}

impl BodyLimits {
    /// Takes the instances' limits of a declaration (the groups' come one by one, with their
    /// ids: [`BodyLimits::group`]).
    pub(super) fn declare(&mut self, groups: &[GroupConfig], instances: &[InstanceConfig]) {
        self.groups.clear();
        self.instances = groups
            .iter()
            .flat_map(|g| &g.instances)
            .chain(instances)
            .filter(|i| i.max_body_bytes != BodyLimit::Inherit)
            .map(|i| (Arc::from(i.name.as_str()), i.max_body_bytes))
            .collect();
    }

    /// The declared group `id` sets `limit` for its members.
    pub(super) fn group(&mut self, id: Uuid, limit: BodyLimit) {
        if limit != BodyLimit::Inherit {
            self.groups.insert(id, limit);
        }
    }
}

impl State {
    /// The body limit of `inst` as its upstream carries it (`None`: the proxy's). An instance
    /// made through the API takes its group's, never a declared instance's of the same name.
    pub(super) fn body_limit(&self, inst: &Instance) -> Option<u64> {
        let limits = &self.body_limits;
        let own = if inst.from_config {
            limits.instances.get(&inst.name).copied()
        } else {
            None
        };
        let group = inst.group.and_then(|g| limits.groups.get(&g).copied());
        own.unwrap_or_default()
            .or(group.unwrap_or_default())
            .bytes()
    }

    /// Sets every running upstream's body limit to what the file now says.
    pub(super) fn apply_body_limits(&self) {
        for inst in self.instances.values() {
            if let Some(up) = &inst.upstream {
                up.set_max_body(self.body_limit(inst));
            }
        }
    }
}
