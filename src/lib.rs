//! autokill: a counting reverse proxy that kills the instances behind it when their condition triggers.
//!
//! ```text
//!  client ──HTTP──▶ proxy (workers) ──pooled HTTP──▶ instance (process / container)
//!                     │ count: one relaxed fetch_add on the instance's meter
//!                     │ limit crossed ─▶ control channel ─┐
//!                     ▼                                   ▼
//!              route table ◀──arc-swap publish── controller ──▶ runtime (create/start/stop/delete)
//!                                                   ▲  ▲  ▲
//!                      admin API (/v1, /api/v1) ────┘  │  └── timing wheel (stopped/unused/empty)
//!                      runtime exit events ────────────┘
//! ```
//!
//! The proxy never decides anything but "forward or refuse"; every lifecycle decision is a
//! [`controller::Command`] applied in order by the one controller task.

pub mod admin;
pub mod cli;
pub mod config;
pub mod controller;
pub mod hello;
pub mod metrics;
pub mod net;
mod par;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod store;
pub mod timers;
pub mod wheel;
