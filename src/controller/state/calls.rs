//! The admin API's calls as the controller applies them: create, start, stop, delete and patch
//! of instances, templates and service groups, and the lookups by UUID or name they share.

use std::time::SystemTime;

use uuid::Uuid;

use super::super::api::{
    ApiError, Call, GroupPatch, InstancePatch, NewGroup, NewInstance, NewTemplate, Ref, Reply,
    TemplatePatch,
};
use super::super::{Effect, GroupView, InstanceState, InstanceView, TimerKey};
use super::{Autokill, Group, Instance, Pending, Spec, State};
use crate::config::{Autodestroy, RestartPolicy, is_image_reference};

impl State {
    // ---- the API -------------------------------------------------------------------------

    pub(super) fn call(
        &mut self,
        call: Call,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        match call {
            Call::CreateInstance(new) => self.create_instance(new, now, fx),
            Call::StartInstance(r) => {
                let id = self.find_instance(&r)?;
                self.check_engine("nothing was started")?;
                let inst = &self.instances[&id];
                match inst.state {
                    InstanceState::Stopped => {
                        self.start_instance(id, fx);
                        Ok(self.instance_reply(id))
                    }
                    InstanceState::Starting | InstanceState::Running => Ok(self.instance_reply(id)),
                    other => Err(ApiError::conflict(format!(
                        "instance {r} is {}; only a stopped instance can be started",
                        other.as_str()
                    ))),
                }
            }
            Call::StopInstance(r) => {
                let id = self.find_instance(&r)?;
                let Some(inst) = self.instances.get_mut(&id) else {
                    return Err(ApiError::not_found(format!("no instance {r}")));
                };
                match inst.state {
                    InstanceState::Running | InstanceState::Draining | InstanceState::Starting => {
                        inst.state = InstanceState::Stopping;
                        inst.pending = Pending::Stop;
                        fx.push(Effect::Disarm(TimerKey::Drain(id)));
                        fx.push(Effect::Stop(id));
                        Ok(self.instance_reply(id))
                    }
                    InstanceState::Stopped => {
                        // Stopping a stopped instance also cancels a scheduled restart.
                        if inst.restart_at.is_some() {
                            inst.restart_at = None;
                            fx.push(Effect::Disarm(TimerKey::Restart(id)));
                            self.check_stopped(id, now, fx);
                        }
                        Ok(self.instance_reply(id))
                    }
                    InstanceState::Stopping => Ok(self.instance_reply(id)),
                    other => Err(ApiError::conflict(format!(
                        "instance {r} is {}",
                        other.as_str()
                    ))),
                }
            }
            Call::DeleteInstance(r) => {
                let id = self.find_instance(&r)?;
                if self.instances[&id].delete_lock {
                    return Err(ApiError::conflict(format!("instance {r} is delete-locked")));
                }
                self.delete_instance(id, None, fx);
                Ok(self.instance_reply(id))
            }
            Call::PatchInstance(r, patches) => self.patch_instance(&r, patches, now, fx),
            Call::CreateTemplate(new) => self.create_template(new, now, fx),
            Call::DeleteTemplate(r) => {
                let id = self.find_template(&r)?;
                if self.instances[&id].delete_lock {
                    return Err(ApiError::conflict(format!("template {r} is delete-locked")));
                }
                let reply = self.instance_reply(id);
                self.instances.remove(&id);
                self.forget_template(id);
                fx.push(Effect::Disarm(TimerKey::Unused(id)));
                fx.push(Effect::Delete(id));
                Ok(deleted(reply))
            }
            Call::PatchTemplate(r, patches) => {
                let id = self.find_template(&r)?;
                let mut lock = None;
                let Some(t) = self.instances.get_mut(&id) else {
                    return Err(ApiError::not_found(format!("no template {r}")));
                };
                for p in patches {
                    match p {
                        TemplatePatch::Autokill(time) => {
                            t.unused_time = time.filter(|t| !t.is_zero())
                        }
                        TemplatePatch::DeleteLock(l) => lock = Some(l),
                    }
                }
                if let Some(l) = lock {
                    t.delete_lock = l;
                }
                // The change may make it due (a cleared lock, a shorter time): then the answer
                // shows the template as it was changed, and deleted.
                let reply = self.instance_reply(id);
                self.check_template(id, now, fx);
                Ok(if self.instances.contains_key(&id) {
                    self.instance_reply(id)
                } else {
                    deleted(reply)
                })
            }
            Call::CreateGroup(new) => self.create_group(new, now, fx),
            Call::DeleteGroup(r) => {
                let id = self.find_group(&r)?;
                if self.groups[&id].delete_lock {
                    return Err(ApiError::conflict(format!(
                        "service group {r} is delete-locked"
                    )));
                }
                let members = self.members(id);
                if members > 0 {
                    return Err(ApiError::conflict(format!(
                        "service group {r} still has {members} instance(s); delete them first"
                    )));
                }
                let reply = self.group_view(&self.groups[&id]);
                self.groups.remove(&id);
                fx.push(Effect::Disarm(TimerKey::Empty(id)));
                Ok(Reply::Group(GroupView {
                    deleted: true,
                    ..reply
                }))
            }
            Call::PatchGroup(r, patches) => self.patch_group(&r, patches, now, fx),
        }
    }

    pub(super) fn create_instance(
        &mut self,
        new: NewInstance,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        self.check_engine("nothing was created")?;
        let template = match &new.template {
            Some(r) => Some(self.find_template(r)?),
            None => None,
        };
        let group = match &new.service_group {
            Some(r) => Some(self.find_group(r)?),
            None => None,
        };
        let base = template.map(|t| &self.instances[&t]);
        let image = match (new.image, base) {
            (Some(image), _) => image,
            (None, Some(t)) => t.image.clone(),
            (None, None) => {
                return Err(ApiError::bad_request(
                    "image: required (or clone a template)",
                ));
            }
        };
        if self.any_image && !self.images.contains(&image) && !is_image_reference(&image) {
            return Err(ApiError::bad_request(format!(
                "image: {image:?} is neither a key of runtime.images nor an image reference"
            )));
        }
        if !self.any_image && !self.images.contains(&image) {
            let known: Vec<&str> = self.images.iter().map(String::as_str).collect();
            return Err(ApiError::bad_request(format!(
                "image: unknown image {image:?} (known: {})",
                known.join(", ")
            )));
        }
        let mut autokill = base.map(|t| t.autokill).unwrap_or_default();
        if let Some(spec) = new.autokill {
            if let Some(n) = spec.num_requests {
                autokill.num_requests = n;
            }
            if let Some(t) = spec.time {
                autokill.time = (!t.is_zero()).then_some(t);
            }
        }
        let restart_policy = new
            .restart_policy
            .or(base.map(|t| t.restart_policy))
            .unwrap_or_default();
        let autodestroy = new
            .autodestroy
            .or(base.map(|t| t.autodestroy))
            .unwrap_or_default();
        check_policies(restart_policy, autodestroy)?;
        let name = match new.name {
            Some(name) => {
                self.check_name_free(&name)?;
                name
            }
            None => self.generated_name(base.map_or(image.as_str(), |t| &t.name)),
        };
        let template = template.map(|t| (t, self.instances[&t].name.to_string()));
        let spec = Spec {
            name,
            image,
            memory_mb: new.memory_mb.or(base.and_then(|t| t.memory_mb)),
            autokill,
            restart_policy,
            autodestroy,
        };
        let id = self.add_instance(spec, group, template.clone(), new.autostart, false, now, fx);
        if let Some((t, _)) = template
            && let Some(t) = self.instances.get_mut(&t)
        {
            t.last_used = now;
            let due = t.unused_time.map(|time| now + time);
            if let Some(due) = due {
                fx.push(Effect::Arm(TimerKey::Unused(t.id), due));
            }
        }
        Ok(self.instance_reply(id))
    }

    pub(super) fn patch_instance(
        &mut self,
        r: &Ref,
        patches: Vec<InstancePatch>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_instance(r)?;
        let inst = &self.instances[&id];
        // All or nothing: work on copies, check, then commit.
        let (mut autokill, mut restart, mut destroy, mut lock) = (
            inst.autokill,
            inst.restart_policy,
            inst.autodestroy,
            inst.delete_lock,
        );
        for p in patches {
            match p {
                InstancePatch::Autokill(spec) => {
                    autokill = Autokill {
                        num_requests: spec.num_requests.unwrap_or(0),
                        time: spec.time.filter(|t| !t.is_zero()),
                    };
                }
                InstancePatch::DeleteLock(l) => lock = l,
                InstancePatch::RestartPolicy(p) => restart = p,
                InstancePatch::Autodestroy(a) => destroy = a,
            }
        }
        check_policies(restart, destroy)?;
        let Some(inst) = self.instances.get_mut(&id) else {
            return Err(ApiError::not_found(format!("no instance {r}")));
        };
        inst.autokill = autokill;
        inst.restart_policy = restart;
        inst.autodestroy = destroy;
        inst.meter
            .set_limit(autokill.num_requests, inst.delete_lock);
        self.set_instance_lock(id, lock, now, fx);
        // The new policy may already be due (a lower limit, a shorter time).
        self.check_instance(id, now, fx);
        Ok(self.instance_reply(id))
    }

    pub(super) fn create_template(
        &mut self,
        new: NewTemplate,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_instance(&new.instance)?;
        let Some(inst) = self.instances.get_mut(&id) else {
            return Err(ApiError::not_found(format!("no instance {}", new.instance)));
        };
        if inst.state != InstanceState::Stopped || inst.pending != Pending::None {
            return Err(ApiError::conflict(format!(
                "instance {} is {}; only a stopped instance can become a template",
                new.instance,
                inst.state.as_str()
            )));
        }
        inst.state = InstanceState::Template;
        if self.any_image {
            // Its clones run what it became, not what it was made from.
            inst.image = crate::runtime::template_image(id);
            fx.push(Effect::Commit(id));
        }
        inst.unused_time = new.autokill_time.filter(|t| !t.is_zero());
        inst.last_used = now;
        inst.restart_at = None;
        inst.destroy_due = false;
        let group = inst.group.take();
        fx.push(Effect::Disarm(TimerKey::StoppedTime(id)));
        fx.push(Effect::Disarm(TimerKey::Restart(id)));
        if let Some(g) = group {
            self.check_group(g, now, fx);
        }
        self.check_template(id, now, fx);
        Ok(self.instance_reply(id))
    }

    /// 503 while the runtime's engine cannot be reached.
    fn check_engine(&self, outcome: &str) -> Result<(), ApiError> {
        match &self.engine_down {
            Some(why) => Err(ApiError {
                status: 503,
                message: format!(
                    "the container engine cannot be reached ({why}); {outcome}, try again later"
                ),
            }),
            None => Ok(()),
        }
    }

    pub(super) fn create_group(
        &mut self,
        new: NewGroup,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        if self.groups.values().any(|g| g.name == new.name) {
            return Err(ApiError::conflict(format!(
                "name: a service group named {:?} already exists",
                new.name
            )));
        }
        self.check_domains_free(&new.domains, None)?;
        let id = Uuid::new_v4();
        self.groups.insert(
            id,
            Group {
                id,
                name: new.name,
                domains: new.domains,
                autokill_time: new.autokill_time.filter(|t| !t.is_zero()),
                balance: self.balance,
                delete_lock: false,
                created_at: now,
                empty_since: Some(now),
                soft_limit: new.soft_limit,
                hard_limit: new.hard_limit,
                services: new.services,
                from_config: false,
            },
        );
        self.check_group(id, now, fx);
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    pub(super) fn patch_group(
        &mut self,
        r: &Ref,
        patches: Vec<GroupPatch>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let id = self.find_group(r)?;
        let g = &self.groups[&id];
        let (mut time, mut lock, mut domains, mut soft, mut hard) = (
            g.autokill_time,
            g.delete_lock,
            g.domains.clone(),
            g.soft_limit,
            g.hard_limit,
        );
        for p in patches {
            match p {
                GroupPatch::Autokill(t) => time = t.filter(|t| !t.is_zero()),
                GroupPatch::DeleteLock(l) => lock = l,
                GroupPatch::AddDomains(add) => {
                    for d in add {
                        if !domains.contains(&d) {
                            domains.push(d);
                        }
                    }
                }
                GroupPatch::RemoveDomains(del) => domains.retain(|d| !del.contains(d)),
                GroupPatch::SoftLimit(v) => soft = v,
                GroupPatch::HardLimit(v) => hard = v,
            }
        }
        self.check_domains_free(&domains, Some(id))?;
        let Some(g) = self.groups.get_mut(&id) else {
            return Err(ApiError::not_found(format!("no service group {r}")));
        };
        (
            g.autokill_time,
            g.delete_lock,
            g.domains,
            g.soft_limit,
            g.hard_limit,
        ) = (time, lock, domains, soft, hard);
        let before = self.group_view(&self.groups[&id]);
        self.check_group(id, now, fx);
        Ok(Reply::Group(match self.groups.get(&id) {
            Some(g) => self.group_view(g),
            // The change made it due (a cleared lock, a shorter time) and it is gone.
            None => GroupView {
                deleted: true,
                ..before
            },
        }))
    }

    // ---- lookups -------------------------------------------------------------------------

    pub(super) fn find(&self, r: &Ref, want_template: bool) -> Option<Uuid> {
        let fits = |i: &Instance| {
            (i.state == InstanceState::Template) == want_template
                && i.state != InstanceState::Deleted
        };
        match r {
            Ref::Id(id) => self.instances.get(id).filter(|i| fits(i)).map(|i| i.id),
            Ref::Name(name) => self
                .instances
                .values()
                .find(|i| fits(i) && &*i.name == name)
                .map(|i| i.id),
        }
    }

    pub(super) fn find_instance(&self, r: &Ref) -> Result<Uuid, ApiError> {
        self.find(r, false)
            .ok_or_else(|| ApiError::not_found(format!("no instance {r}")))
    }

    pub(super) fn find_template(&self, r: &Ref) -> Result<Uuid, ApiError> {
        self.find(r, true)
            .ok_or_else(|| ApiError::not_found(format!("no template {r}")))
    }

    pub(super) fn find_group(&self, r: &Ref) -> Result<Uuid, ApiError> {
        let found = match r {
            Ref::Id(id) => self.groups.get(id).map(|g| g.id),
            Ref::Name(name) => self.groups.values().find(|g| &g.name == name).map(|g| g.id),
        };
        found.ok_or_else(|| ApiError::not_found(format!("no service group {r}")))
    }

    pub(super) fn check_name_free(&self, name: &str) -> Result<(), ApiError> {
        if self
            .instances
            .values()
            .any(|i| &*i.name == name && i.state != InstanceState::Deleted)
        {
            return Err(ApiError::conflict(format!(
                "name: an instance or template named {name:?} already exists"
            )));
        }
        let host = format!("{name}.{}", self.base_domain);
        if self.groups.values().any(|g| g.domains.contains(&host)) {
            return Err(ApiError::conflict(format!(
                "name: {host:?} is a service group's domain"
            )));
        }
        Ok(())
    }

    pub(super) fn check_domains_free(
        &self,
        domains: &[String],
        except: Option<Uuid>,
    ) -> Result<(), ApiError> {
        for d in domains {
            if let Some(g) = self
                .groups
                .values()
                .find(|g| Some(g.id) != except && g.domains.contains(d))
            {
                return Err(ApiError::conflict(format!(
                    "domains: {d:?} already belongs to service group {:?}",
                    g.name
                )));
            }
            if let Some(i) = self.instances.values().find(|i| {
                i.state != InstanceState::Deleted
                    && format!("{}.{}", i.name, self.base_domain) == *d
            }) {
                return Err(ApiError::conflict(format!(
                    "domains: {d:?} is the host name of instance {:?}",
                    &*i.name
                )));
            }
        }
        Ok(())
    }

    /// `<base>-<n>` with the smallest free `n`.
    pub(super) fn generated_name(&self, base: &str) -> String {
        let base: String = base
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(50)
            .collect::<String>()
            .to_ascii_lowercase();
        let base = if base.is_empty() {
            "instance".to_owned()
        } else {
            base
        };
        (1..)
            .map(|n| format!("{base}-{n}"))
            .find(|n| self.check_name_free(n).is_ok())
            .unwrap_or(base)
    }
}

/// A reply about a resource that is now deleted.
pub(super) fn deleted(reply: Reply) -> Reply {
    match reply {
        Reply::Instance(v) => Reply::Instance(InstanceView {
            state: InstanceState::Deleted,
            ..v
        }),
        other => other,
    }
}

/// SPEC: `restart_policy: always` with any autodestroy but `OFF` is refused.
fn check_policies(restart: RestartPolicy, destroy: Autodestroy) -> Result<(), ApiError> {
    if restart == RestartPolicy::Always && destroy != Autodestroy::Off {
        return Err(ApiError::bad_request(
            "autodestroy: must be OFF with restart_policy always (an instance that always restarts is never destroyed)",
        ));
    }
    Ok(())
}
