//! The admin API's calls as the controller applies them: create, start, stop, delete and patch
//! of instances, templates and service groups, and the lookups by UUID or name they share.

use hashbrown::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use uuid::Uuid;

use super::super::api::{
    ApiError, Call, GroupPatch, InstancePatch, MAX_GROUP_DOMAINS, NewGroup, NewInstance,
    NewTemplate, Ref, Reply, TemplatePatch,
};
use super::super::{Effect, GroupView, InstanceState, InstanceView, TimerKey};
use super::{Autokill, Group, Instance, Pending, Spec, State};
use crate::config::{Autodestroy, RestartPolicy, is_image_reference};
use crate::controller::api::GroupChoice;

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
                let previous = self.instances[&id].state;
                self.call_start(&r, id, fx)
                    .map(|reply| moved(reply, previous))
            }
            Call::StopInstance(r) => {
                let id = self.find_instance(&r)?;
                let previous = self.instances[&id].state;
                self.call_stop(&r, id, None, now, fx)
                    .map(|reply| moved(reply, previous))
            }
            Call::StopInstanceDraining(r, drain) => {
                let id = self.find_instance(&r)?;
                let previous = self.instances[&id].state;
                self.call_stop(&r, id, Some(drain), now, fx)
                    .map(|reply| moved(reply, previous))
            }
            Call::DeleteInstance(r) => {
                let id = self.find_instance(&r)?;
                let previous = self.instances[&id].state;
                if self.instances[&id].delete_lock {
                    return Err(ApiError::conflict(format!("instance {r} is delete-locked")));
                }
                self.delete_instance(id, None, fx);
                Ok(moved(self.instance_reply(id), previous))
            }
            Call::PatchInstance(r, patches) => self.patch_instance(&r, patches, now, fx),

            Call::CreateTemplate(new) => self.create_template(new, now, fx),
            Call::DeleteTemplate(r) => {
                let id = self.find_template(&r)?;
                if self.instances[&id].delete_lock {
                    return Err(ApiError::conflict(format!("template {r} is delete-locked")));
                }
                let reply = self.instance_reply(id);
                if let Some(t) = self.instances.remove(&id) {
                    self.names.remove(&t.name);
                }
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
                self.remove_group(id, now);
                fx.push(Effect::Disarm(TimerKey::Empty(id)));
                Ok(Reply::Group(GroupView {
                    deleted: true,
                    ..reply
                }))
            }
            Call::PatchGroup(r, patches) => self.patch_group(&r, patches, now, fx),
            Call::CreateService(new) => self.create_service(new, now, fx),
            Call::PatchService(r, patch) => self.patch_service(&r, patch, now, fx),
            Call::StartService(r) => self.start_service(&r, now, fx),
            Call::StopService(r) => self.stop_service(&r, now, fx),
            Call::ScaleService(r) => self.scale_service(&r, now, fx),
            Call::RedeployService(r) => self.redeploy_service(&r, now, fx),
            Call::TerminateService(r) => self.terminate_service(&r, now, fx),
            Call::RedeployContainer(r) => self.redeploy_container(&r, now, fx),
            Call::Batch(calls) => Ok(Reply::Batch(
                calls
                    .into_iter()
                    .map(|call| self.call(call, now, fx))
                    .collect(),
            )),
        }
    }

    /// A user's start: a stopped instance starts; one starting or running is left as it is.
    fn call_start(&mut self, r: &Ref, id: Uuid, fx: &mut Vec<Effect>) -> Result<Reply, ApiError> {
        match self.instances[&id].state {
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

    /// A user's stop (never restarted); stopping a stopped instance cancels a scheduled restart.
    /// With `drain`, a serving instance first takes no new request and lets those in flight
    /// finish (at most `drain` long), then stops.
    fn call_stop(
        &mut self,
        r: &Ref,
        id: Uuid,
        drain: Option<std::time::Duration>,
        now: SystemTime,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, ApiError> {
        let Some(inst) = self.instances.get_mut(&id) else {
            return Err(ApiError::not_found(format!("no instance {r}")));
        };
        match inst.state {
            InstanceState::Running | InstanceState::Draining
                if drain.is_some_and(|d| !d.is_zero()) && inst.upstream.is_some() =>
            {
                inst.state = InstanceState::Stopping;
                inst.pending = Pending::StopAfterDrain;
                if let Some(up) = &inst.upstream {
                    fx.push(Effect::WatchDrain {
                        id,
                        upstream: Arc::clone(up),
                    });
                }
                let until = now + drain.unwrap_or_default();
                inst.set_drain_until(until);
                fx.push(Effect::Arm(TimerKey::Drain(id), until));
                fx.push(Effect::Publish);
                Ok(self.instance_reply(id))
            }
            InstanceState::Running | InstanceState::Draining | InstanceState::Starting => {
                inst.state = InstanceState::Stopping;
                inst.pending = Pending::Stop;
                fx.push(Effect::Disarm(TimerKey::Drain(id)));
                fx.push(Effect::Stop(id));
                Ok(self.instance_reply(id))
            }
            InstanceState::Stopped => {
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
            Some(GroupChoice::Existing(r)) => Some(self.find_group(r)?),
            _ => None,
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
        if !self.any_image && new.memory_mb.is_some() {
            return Err(ApiError::bad_request(
                "memory_mb: not supported by the process runtime, which sets no memory limit \
                 (the docker runtime does)",
            ));
        }
        self.check_image(&image)?;
        let mut autokill = base.map(|t| t.asked_autokill()).unwrap_or_default();
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
        let memory_mb = new.memory_mb.or(base.and_then(|t| t.memory_mb));
        let template = template.map(|t| (t, self.instances[&t].name.to_string()));
        // An ephemeral group is made last, once nothing else can refuse the create: it goes
        // as soon as it is empty (an empty time of zero).
        let group = match new.service_group {
            Some(GroupChoice::New(g)) => {
                let id = self.add_group(g, now)?;
                if let Some(g) = self.groups.get_mut(&id) {
                    g.autokill_time = Some(std::time::Duration::ZERO);
                }
                Some(id)
            }
            _ => group,
        };
        let spec = Spec {
            name,
            image,
            memory_mb,
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
        let mut asked = inst.asked_requests;
        for p in patches {
            match p {
                InstancePatch::Autokill(spec) => {
                    // Exactly the number asked for: `autokill.jitter` applies at creation
                    // only, and a user who sets a number expects that number.
                    autokill = Autokill {
                        num_requests: spec.num_requests.unwrap_or(0),
                        time: spec.time.filter(|t| !t.is_zero()),
                    };
                    asked = None;
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
        inst.asked_requests = asked;
        inst.restart_policy = restart;
        inst.autodestroy = destroy;
        self.limit_changed(id, fx);
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
        // Clones inherit the policy as it was asked for, and each draws its own budget.
        inst.autokill = inst.asked_autokill();
        inst.asked_requests = None;
        if self.any_image {
            // Its clones run what it became, not what it was made from.
            inst.image = crate::runtime::template_image(id);
            fx.push(Effect::Commit(id));
        }
        // A template is the API's: the file's reconcile no longer manages it.
        inst.from_config = false;
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

    /// An image the runtime can run: a key of `runtime.images`, or with docker any image
    /// reference.
    pub(super) fn check_image(&self, image: &str) -> Result<(), ApiError> {
        if self.images.contains(image) {
            return Ok(());
        }
        if self.any_image {
            if is_image_reference(image) {
                return Ok(());
            }
            return Err(ApiError::bad_request(format!(
                "image: {image:?} is neither a key of runtime.images nor an image reference"
            )));
        }
        let known: Vec<&str> = self.images.iter().map(String::as_str).collect();
        Err(ApiError::bad_request(format!(
            "image: unknown image {image:?} (known: {})",
            known.join(", ")
        )))
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
        let id = self.add_group(new, now)?;
        self.check_group(id, now, fx);
        Ok(Reply::Group(self.group_view(&self.groups[&id])))
    }

    /// Checks and inserts a group (without arming its timer); its id.
    fn add_group(&mut self, new: NewGroup, now: SystemTime) -> Result<Uuid, ApiError> {
        let name = match new.name {
            Some(name) => {
                if self.groups.values().any(|g| g.name == name) {
                    return Err(ApiError::conflict(format!(
                        "name: a service group named {name:?} already exists"
                    )));
                }
                if self.declared_groups.contains(&name) {
                    return Err(ApiError::conflict(format!(
                        "name: {name:?} is declared by the configuration file"
                    )));
                }
                name
            }
            None => self.generated_group_name(),
        };
        self.check_domains_free(&new.domains, None)?;
        let id = Uuid::new_v4();
        self.groups.insert(
            id,
            Group {
                id,
                name,
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
                skipped: None,
                service: None,
            },
        );
        Ok(id)
    }

    /// `sg-` and 8 random hex digits, neither taken nor declared (as Unikraft names a group
    /// left unnamed).
    fn generated_group_name(&self) -> String {
        loop {
            let name = format!("sg-{}", &Uuid::new_v4().simple().to_string()[..8]);
            if !self.groups.values().any(|g| g.name == name)
                && !self.declared_groups.contains(&name)
            {
                return name;
            }
        }
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
        let mut services: Vec<serde_json::Value> = match &g.services {
            serde_json::Value::Array(list) => list.clone(),
            _ => Vec::new(),
        };
        for p in patches {
            match p {
                GroupPatch::Autokill(t) => time = t.filter(|t| !t.is_zero()),
                GroupPatch::DeleteLock(l) => lock = l,
                GroupPatch::AddDomains(add) => {
                    let mut have: HashSet<String> = domains.iter().cloned().collect();
                    for d in add {
                        if have.insert(d.clone()) {
                            domains.push(d);
                        }
                    }
                }
                GroupPatch::RemoveDomains(del) => {
                    let del: HashSet<String> = del.into_iter().collect();
                    domains.retain(|d| !del.contains(d));
                }
                GroupPatch::SoftLimit(v) => soft = v,
                GroupPatch::HardLimit(v) => hard = v,
                GroupPatch::SetServices(v) => services = as_list(v),
                GroupPatch::AddServices(v) => {
                    for s in as_list(v) {
                        if !services.contains(&s) {
                            services.push(s);
                        }
                    }
                }
                GroupPatch::RemoveServices(v) => {
                    let del = as_list(v);
                    services.retain(|s| !del.contains(s));
                }
            }
        }
        if domains.len() > MAX_GROUP_DOMAINS {
            return Err(ApiError::bad_request(format!(
                "domains: the group would have {} domains; a service group has at most \
                 {MAX_GROUP_DOMAINS}",
                domains.len()
            )));
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
            g.services,
        ) = (
            time,
            lock,
            domains,
            soft,
            hard,
            serde_json::Value::Array(services),
        );
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
        let id = match r {
            Ref::Id(id) => *id,
            Ref::Name(name) => *self.names.get(&Arc::from(name.as_str()))?,
        };
        self.instances.get(&id).filter(|i| fits(i)).map(|i| i.id)
    }

    pub(super) fn find_instance(&self, r: &Ref) -> Result<Uuid, ApiError> {
        self.find(r, false).ok_or_else(|| match self.find(r, true) {
            // Both live in the same records; say which route the other kind is on.
            Some(_) => ApiError::not_found(format!(
                "{r} is a template, not an instance (see /v1/instances/templates)"
            )),
            None => ApiError::not_found(format!("no instance {r}")),
        })
    }

    pub(super) fn find_template(&self, r: &Ref) -> Result<Uuid, ApiError> {
        self.find(r, true).ok_or_else(|| match self.find(r, false) {
            Some(_) => ApiError::not_found(format!(
                "{r} is an instance, not a template (see /v1/instances)"
            )),
            None => ApiError::not_found(format!("no template {r}")),
        })
    }

    pub(super) fn find_group(&self, r: &Ref) -> Result<Uuid, ApiError> {
        let found = match r {
            Ref::Id(id) => self.groups.get(id).map(|g| g.id),
            Ref::Name(name) => self.groups.values().find(|g| &g.name == name).map(|g| g.id),
        };
        found.ok_or_else(|| ApiError::not_found(format!("no service group {r}")))
    }

    pub(super) fn check_name_free(&self, name: &str) -> Result<(), ApiError> {
        let name: Arc<str> = Arc::from(name);
        if self.names.contains_key(&name) {
            return Err(ApiError::conflict(format!(
                "name: an instance or template named {name:?} already exists"
            )));
        }
        if self.declared_names.contains(&name) {
            return Err(ApiError::conflict(format!(
                "name: {name:?} is declared by the configuration file"
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

    /// Refuses domains another group has or that are an instance's host name. Linear in the
    /// domains given, the other groups' domains and the instances: each is looked at once.
    pub(super) fn check_domains_free(
        &self,
        domains: &[String],
        except: Option<Uuid>,
    ) -> Result<(), ApiError> {
        if domains.is_empty() {
            return Ok(());
        }
        let wanted: HashSet<&str> = domains.iter().map(String::as_str).collect();
        // Why each taken domain is taken; the first reason found for a domain stands.
        let mut taken: HashMap<&str, ApiError> = HashMap::new();
        for g in self.groups.values().filter(|g| Some(g.id) != except) {
            for d in g.domains.iter().filter(|d| wanted.contains(d.as_str())) {
                taken.entry(d).or_insert_with(|| {
                    ApiError::conflict(format!(
                        "domains: {d:?} already belongs to service group {:?}",
                        g.name
                    ))
                });
            }
        }
        // An instance's host name is `<name>.<base_domain>`: index the wanted domains by that
        // label, so each instance is one lookup and no host string is built for it.
        let suffix = format!(".{}", self.base_domain);
        let by_label: HashMap<&str, &str> = domains
            .iter()
            .filter_map(|d| d.strip_suffix(suffix.as_str()).map(|l| (l, d.as_str())))
            .collect();
        if !by_label.is_empty() {
            for i in self.instances.values() {
                if i.state == InstanceState::Deleted {
                    continue;
                }
                if let Some(d) = by_label.get(&*i.name) {
                    taken.entry(d).or_insert_with(|| {
                        ApiError::conflict(format!(
                            "domains: {d:?} is the host name of instance {:?}",
                            &*i.name
                        ))
                    });
                }
            }
        }
        // Report the first taken domain in the order given.
        match domains.iter().find_map(|d| taken.remove(d.as_str())) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// `<base>-<suffix>` with a random suffix of five letters and digits, as Kubernetes'
    /// `generateName` makes them: never a name the configuration declares (those are refused
    /// by [`State::check_name_free`]), and found in O(1) rather than by counting up.
    pub(super) fn generated_name(&self, base: &str) -> String {
        // No vowels (no words by chance), no look-alikes (0/o, 1/l).
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
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
        loop {
            let random = Uuid::new_v4().into_bytes();
            let suffix: String = random[..5]
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
                .collect();
            let name = format!("{base}-{suffix}");
            if self.check_name_free(&name).is_ok() {
                return name;
            }
        }
    }
}

/// A JSON array's items (anything else: none).
fn as_list(v: serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(list) => list,
        _ => Vec::new(),
    }
}

/// An instance reply with the state it had before the call.
fn moved(reply: Reply, previous: InstanceState) -> Reply {
    match reply {
        Reply::Instance(v) => Reply::Moved(v, previous),
        other => other,
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
