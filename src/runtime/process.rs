//! Process runtime (being written on its own branch; this placeholder only keeps the crate building).

use std::path::PathBuf;

use uuid::Uuid;

use super::{BoxFuture, EventSender, InstanceSpec, Runtime, RuntimeError};
use crate::config::RuntimeConfig;

/// Placeholder.
pub struct ProcessRuntime;

impl ProcessRuntime {
    /// Placeholder.
    pub fn new(_config: &RuntimeConfig, _self_exe: PathBuf, _events: EventSender) -> ProcessRuntime {
        ProcessRuntime
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }
    fn create<'a>(&'a self, _spec: &'a InstanceSpec) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
    fn start(&self, id: Uuid) -> BoxFuture<'_, Result<std::net::SocketAddr, RuntimeError>> {
        Box::pin(async move { Err(RuntimeError::UnknownInstance(id)) })
    }
    fn stop(&self, _id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
    fn delete(&self, _id: Uuid) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(async { Ok(()) })
    }
}
