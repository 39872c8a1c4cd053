//! `autokill hello`: the built-in tiny upstream (being written).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Options of `autokill hello`.
#[derive(Debug, Clone)]
pub struct HelloOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Name to answer with.
    pub name: String,
    /// Append one line per request here.
    pub log: Option<PathBuf>,
    /// Serve `/__exit/<code>`, which makes the process exit with that code.
    pub allow_exit: bool,
}

/// Runs the upstream until the process is killed.
pub fn run(_opts: HelloOptions) -> std::io::Result<()> {
    todo!("being written")
}
