//! `autokill hello`: the built-in tiny upstream, so the default config runs with nothing installed.
//!
//! Every request is answered `200 OK`, `hello from <name>: <path>\n`, `x-hello-name: <name>`.
//! Tests lean on a few extras: `--log FILE` records what reached the upstream (one line per request,
//! written before the answer, so the file is right even after a `kill -9`), and `--allow-exit`
//! turns `GET /__exit/<code>` into "answer, then exit with `<code>`". Like httpbin, a few paths
//! show what an intermediary did or provoke what it must handle:
//!
//! * `/__headers` answers with the request's header fields, one `name: value` line each;
//! * `/__hop` answers with hop-by-hop fields that a proxy must not pass on;
//! * `/__sleep/<ms>` answers after that many milliseconds;
//! * `/__close` closes the connection without answering;
//! * `/__bytes/<n>` answers with `n` bytes (at most 64 MiB);
//! * `/__echo` with `Connection: upgrade` and `Upgrade: echo` switches protocols (101) and echoes bytes;
//! * `/__listen/close` closes the listener (new connections are refused; open ones are served), and
//!   `/__listen/pause` stops accepting (new connections wait in the accept queue, `--backlog` long,
//!   and once it is full are not answered at all): an upstream that refuses or hangs connects.
//!
//! Cost per request beyond hyper's own: one `String` for the body (moved into `Bytes`, not
//! copied), one for the log line when `--log` is given, and two `Arc` clones (reference counts).

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

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
    /// Length of the listener's accept queue.
    pub backlog: u32,
}

/// What the accept loop does, as `/__listen/<mode>` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listening {
    Accept,
    Pause,
    Close,
}

/// Most bytes `/__bytes/<n>` answers with.
const MAX_BYTES: usize = 64 << 20;

/// The path prefix that, with `--allow-exit`, makes the process exit.
const EXIT_PREFIX: &str = "/__exit/";

/// How long an exit asked for by `/__exit/<code>` waits for its answer to be written before it
/// happens anyway (a client that never reads must not keep the process alive).
const EXIT_FALLBACK: Duration = Duration::from_millis(500);

/// Marks "no exit asked for" in a connection's exit slot.
const NO_EXIT: i32 = -1;

/// Header carrying the upstream's name, so tests can tell instances apart without parsing bodies.
static X_HELLO_NAME: HeaderName = HeaderName::from_static("x-hello-name");

/// What every connection shares; built once.
struct Shared {
    name: String,
    /// Pre-built so that each answer only clones it (a reference count, no copy).
    name_header: HeaderValue,
    /// Opened once in append mode. `File` has no user-space buffer, so each `write_all` is already
    /// "flushed" to the kernel and survives the process being killed.
    log: Option<File>,
    allow_exit: bool,
    listening: tokio::sync::watch::Sender<Listening>,
}

/// Runs the upstream until SIGTERM or SIGINT (exit 0), or until `/__exit/<code>` asks for an exit.
///
/// Returns an error when the listener cannot be bound or the log file cannot be opened.
pub fn run(opts: HelloOptions) -> std::io::Result<()> {
    // One thread is plenty for a test and demo upstream and leaves the other cores to the proxy.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(opts))
}

async fn serve(opts: HelloOptions) -> std::io::Result<()> {
    let name_header = HeaderValue::from_str(&opts.name).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--name {:?} is not a valid header value", opts.name),
        )
    })?;
    let log = match &opts.log {
        Some(path) => Some(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| {
                    std::io::Error::new(
                        err.kind(),
                        format!("opening log file {}: {err}", path.display()),
                    )
                })?,
        ),
        None => None,
    };
    // Before binding: whoever sees the port accept may send SIGTERM at once and expects exit 0,
    // not the default action's death by signal.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let listener = bind(opts.listen, opts.backlog).map_err(|err| {
        std::io::Error::new(err.kind(), format!("binding {}: {err}", opts.listen))
    })?;
    let local = listener.local_addr()?;
    eprintln!("autokill hello {:?}: listening on {local}", opts.name);

    let shared = Arc::new(Shared {
        name: opts.name,
        name_header,
        log,
        allow_exit: opts.allow_exit,
        listening: tokio::sync::watch::Sender::new(Listening::Accept),
    });
    let mut mode = shared.listening.subscribe();
    let mut listener = Some(listener);

    loop {
        let accepting = *mode.borrow_and_update() == Listening::Accept;
        let stream = tokio::select! {
            _ = sigterm.recv() => return Ok(()),
            _ = sigint.recv() => return Ok(()),
            _ = mode.changed() => {
                if *mode.borrow() == Listening::Close {
                    listener = None;
                }
                continue;
            }
            accepted = accept(listener.as_ref()), if accepting => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Usually EMFILE or a connection reset before accept; neither is fatal, and
                    // a short pause keeps an fd shortage from turning into a busy loop.
                    eprintln!("autokill hello: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Answers are small; Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, Arc::clone(&shared)));
    }
}

/// A listener on `addr` with an accept queue of `backlog`.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

/// The next connection on `listener`; never, once it is closed.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves one keep-alive connection, then performs the exit a request on it asked for, if any.
async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    // Per connection rather than per process: the exit must wait for *this* connection's answer
    // to be written, which is exactly when `serve_connection` returns (the answer says
    // `connection: close`).
    let exit_code = Arc::new(AtomicI32::new(NO_EXIT));
    let service = {
        let exit_code = Arc::clone(&exit_code);
        service_fn(move |req| handle(req, Arc::clone(&shared), Arc::clone(&exit_code)))
    };
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // A client that vanishes mid-request is its own business; nothing to report.
    let _ = served.await;
    let code = exit_code.load(Ordering::Acquire);
    if code != NO_EXIT {
        std::process::exit(code);
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    exit_code: Arc<AtomicI32>,
) -> Result<Response<Full<Bytes>>, Closed> {
    let (parts, mut body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());

    if let Some(log) = &shared.log {
        // Written before the answer, so a client that has its answer knows the line is there.
        let mut line = String::with_capacity(parts.method.as_str().len() + path.len() + 2);
        line.push_str(parts.method.as_str());
        line.push(' ');
        line.push_str(path);
        line.push('\n');
        // `&File` writes are one `write(2)` on an O_APPEND file: lines from concurrent
        // connections do not interleave. A full disk must not take the upstream down.
        if let Err(err) = (&*log).write_all(line.as_bytes()) {
            eprintln!("autokill hello: writing log: {err}");
        }
    }

    if parts.uri.path() == "/__echo"
        && parts
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|u| u == "echo")
    {
        return Ok(echo_upgrade(Request::from_parts(parts, body)));
    }

    // Drain the request body so the connection can be reused; its content is of no interest.
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }

    match parts.uri.path() {
        "/__headers" => {
            let mut text = String::new();
            for (name, value) in &parts.headers {
                text.push_str(name.as_str());
                text.push_str(": ");
                text.push_str(&String::from_utf8_lossy(value.as_bytes()));
                text.push('\n');
            }
            return Ok(Response::new(Full::new(Bytes::from(text))));
        }
        "/__hop" => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"hop\n")));
            let h = response.headers_mut();
            h.insert(CONNECTION, HeaderValue::from_static("x-hello-hop"));
            h.insert(
                HeaderName::from_static("x-hello-hop"),
                HeaderValue::from_static("1"),
            );
            h.insert(
                HeaderName::from_static("keep-alive"),
                HeaderValue::from_static("timeout=30"),
            );
            h.insert(
                HeaderName::from_static("proxy-connection"),
                HeaderValue::from_static("keep-alive"),
            );
            h.insert(
                HeaderName::from_static("x-hello-end-to-end"),
                HeaderValue::from_static("1"),
            );
            return Ok(response);
        }
        "/__close" => return Err(Closed),
        "/__listen/close" => {
            shared.listening.send_replace(Listening::Close);
        }
        "/__listen/pause" => {
            shared.listening.send_replace(Listening::Pause);
        }
        p if p.starts_with("/__bytes/") => {
            // A body too large for the socket buffers, to see what a client that stops
            // reading does to the proxy.
            let n = p["/__bytes/".len()..]
                .parse::<usize>()
                .unwrap_or(0)
                .min(MAX_BYTES);
            return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; n]))));
        }
        p => {
            if let Some(ms) = p
                .strip_prefix("/__sleep/")
                .and_then(|ms| ms.parse::<u64>().ok())
            {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    let exit = if shared.allow_exit && parts.method == Method::GET {
        parts
            .uri
            .path()
            .strip_prefix(EXIT_PREFIX)
            .and_then(|code| code.parse::<u8>().ok())
    } else {
        None
    };

    let text = format!("hello from {}: {path}\n", shared.name);
    let mut response = Response::new(Full::new(Bytes::from(text)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(X_HELLO_NAME.clone(), shared.name_header.clone());

    if let Some(code) = exit {
        let code = i32::from(code);
        eprintln!("autokill hello: exiting with {code} as {EXIT_PREFIX}{code} asked");
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        exit_code.store(code, Ordering::Release);
        tokio::spawn(async move {
            tokio::time::sleep(EXIT_FALLBACK).await;
            std::process::exit(code);
        });
    }
    Ok(response)
}

/// `/__close`: an error from the service makes hyper drop the connection without an answer.
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closed on request")
    }
}

impl std::error::Error for Closed {}

/// `/__echo`: answers 101 and then echoes every byte it receives on the upgraded connection.
fn echo_upgrade(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgraded.await {
            let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response
        .headers_mut()
        .insert(http::header::UPGRADE, HeaderValue::from_static("echo"));
    response
}
