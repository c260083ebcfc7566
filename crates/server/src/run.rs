//! The server process's life: connection, greeting, transports, serving.

use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;

use bitbridge_proto::{msg, StreamTransport, Transport};

use crate::host::{Handler, Host};

/// This program's file name, for messages on stderr.
fn program() -> String {
    std::env::args()
        .next()
        .map(|a| std::path::Path::new(&a).file_name().map_or(a.clone(), |n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "bitbridge-server".into())
}

/// The receiving and sending transports: the socket itself, or the shared-memory segment the client
/// sends over it right after the greeting.
fn connect(
    conn: UnixStream,
    shm: bool,
    spin: std::time::Duration,
    wait: bitbridge_shm::WaitMode,
) -> std::io::Result<(Box<dyn Transport>, Box<dyn Transport>)> {
    if shm {
        let seg = std::sync::Arc::new(bitbridge_shm::recv_segment(&conn)?);
        let recv = bitbridge_shm::ShmTransport::server(seg.clone(), conn.try_clone()?, spin).wait_mode(wait);
        let send = bitbridge_shm::ShmTransport::server(seg, conn, spin).wait_mode(wait);
        Ok((Box::new(recv), Box::new(send)))
    } else {
        let send = StreamTransport::new(conn.try_clone()?);
        Ok((Box::new(StreamTransport::new(conn)), Box::new(send)))
    }
}

/// Runs a server process: greets the client on the connection it was started with (fd 0), then serves
/// it until it shuts the server down or disappears. With a `handler` the process is a custom server:
/// the generic host plus that service (see `bitbridge-service`, which calls this).
///
/// `bitbridge-server`'s `main` is `run(None)`. Exit codes: 0 after a shutdown, 2 when there is no client
/// connection (the program was not started by a client), 3 when the connection fails.
pub fn run(handler: Option<Arc<dyn Handler>>) -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        let t = bitbridge_proto::Target::host().expect("supported target");
        match handler {
            None => println!("bitbridge-server {} ({})", env!("CARGO_PKG_VERSION"), t.arch),
            Some(_) => println!("{}: a custom bitbridge server {} ({})", program(), env!("CARGO_PKG_VERSION"), t.arch),
        }
        return ExitCode::SUCCESS;
    }
    let parent = std::env::var("BITBRIDGE_PARENT_PID").ok().and_then(|p| p.parse().ok());
    let conn = match crate::take_connection(parent) {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("{}: no connection on stdin: {e} (this program is started by a bitbridge client)", program());
            return ExitCode::from(2);
        }
    };
    let workers: usize = std::env::var("BITBRIDGE_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(1);
    let shm = std::env::var("BITBRIDGE_SHM").is_ok_and(|v| v == "1");
    let spin = std::env::var("BITBRIDGE_SPIN_US")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_micros)
        .unwrap_or(bitbridge_shm::DEFAULT_SPIN);
    let wait =
        std::env::var("BITBRIDGE_WAIT").ok().and_then(|w| bitbridge_shm::WaitMode::from_name(&w)).unwrap_or_default();
    let mut greeting = StreamTransport::new(&conn);
    let mut hello = Vec::new();
    msg::encode(&crate::hello(std::process::id()), &mut hello);
    if let Err(e) = greeting.send(&hello) {
        eprintln!("{}: cannot greet the client: {e}", program());
        return ExitCode::from(2);
    }
    let fd_socket = if shm { conn.try_clone().ok() } else { None };
    let (transport, sender) = match connect(conn, shm, spin, wait) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot set up the connection: {e}", program());
            return ExitCode::from(2);
        }
    };
    // SAFETY: this process exists to host the client's library; a wrong signature can corrupt only this
    // process, whose death the client reports as an error.
    let mut host = unsafe { Host::new() };
    if let Some(h) = &handler {
        host.set_handler(h.clone());
    }
    if let Some(sock) = fd_socket {
        // Bounded: a descriptor announced by a request arrives right before it, or something is wrong.
        let _ = sock.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        host.set_fd_source(Box::new(move |tag, id| bitbridge_shm::recv_fd(&sock, tag, id)));
    }
    let served = std::sync::Arc::new(host).serve(transport, sender, workers);
    // Other workers may still hold the host, blocked in a read, as the process ends: the service object
    // is dropped here so that its Drop (closing a device, flushing a file) always runs.
    if let Some(h) = &handler {
        h.stop();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: connection failed: {e}", program());
            ExitCode::from(3)
        }
    }
}
