//! The `autokill` binary: parses the command line and calls into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "autokill",
    version,
    about = "A counting reverse proxy that kills instances when their condition triggers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, the controller and the admin server.
    Serve {
        /// Configuration file; without it `config/autokill.yaml` is used if present, else the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Validate the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Run the built-in tiny upstream: answers with its name and the request path.
    Hello {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Name to answer with.
        #[arg(long, default_value = "hello")]
        name: String,
        /// Append one line per request to this file.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Serve `/__exit/<code>`, which makes the process exit with that code (for tests and demos).
        #[arg(long)]
        allow_exit: bool,
        /// Length of the listener's accept queue (a short one lets tests fill it).
        #[arg(long, default_value_t = 1024)]
        backlog: u32,
    },
    #[command(flatten)]
    Client(Box<autokill::cli::Command>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The command-line client has exit codes of its own (see `autokill::cli::exit`).
        Command::Client(command) => return autokill::cli::run(*command),
        Command::Serve { config, check } => serve(config, check),
        Command::Hello {
            listen,
            name,
            log,
            allow_exit,
            backlog,
        } => autokill::hello::run(autokill::hello::HelloOptions {
            listen,
            name,
            log,
            allow_exit,
            backlog,
        })
        .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("autokill: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>, check: bool) -> anyhow::Result<()> {
    const DEFAULT_PATH: &str = "config/autokill.yaml";
    let path = match config {
        Some(path) => Some(path),
        None if std::path::Path::new(DEFAULT_PATH).is_file() => Some(PathBuf::from(DEFAULT_PATH)),
        None => None,
    };
    let config = match &path {
        Some(path) => autokill::config::load(path)?,
        None => autokill::config::parse(autokill::config::EMBEDDED, "<embedded>")?,
    };
    if check {
        println!("configuration ok");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let self_exe = std::env::current_exe()?;
    // The proxy runs on threads of its own; this runtime carries the controller, the runtime
    // backend and the admin server. Two threads, so that API calls keep arriving (and batch into
    // one commit) while the controller publishes a large state.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("autokill-control")
        .enable_all()
        .build()?;
    rt.block_on(autokill::server::serve(config, path, self_exe))?;
    Ok(())
}
