//! The server process's life: connection, greeting, transports, serving.

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

/// The connection the client started this process with: one end of a socketpair (under Wine, the
/// standard input handle over it).
#[cfg(unix)]
type Conn = std::os::unix::net::UnixStream;
#[cfg(windows)]
type Conn = std::fs::File;

/// How the shared-memory transport waits.
struct Waiting {
    spin: std::time::Duration,
    mode: bitbridge_shm::WaitMode,
}

/// The socket transport: frames on the connection itself, both ways.
fn stream(conn: Conn) -> std::io::Result<(Box<dyn Transport>, Box<dyn Transport>)> {
    let send = StreamTransport::new(conn.try_clone()?);
    Ok((Box::new(StreamTransport::new(conn)), Box::new(send)))
}

/// The receiving and sending transports: the socket itself, or the shared-memory segment the client
/// sends over it right after the greeting. On the latter, `host` is given the way to the descriptors
/// the client sends later (the arena, shared buffers).
#[cfg(unix)]
fn connect(
    conn: Conn,
    shm: Option<Waiting>,
    host: &mut Host,
) -> std::io::Result<(Box<dyn Transport>, Box<dyn Transport>)> {
    let Some(w) = shm else { return stream(conn) };
    let seg = Arc::new(bitbridge_shm::recv_segment(&conn)?);
    let recv = bitbridge_shm::ShmTransport::server(seg.clone(), conn.try_clone()?, w.spin).wait_mode(w.mode);
    let send = bitbridge_shm::ShmTransport::server(seg, conn.try_clone()?, w.spin).wait_mode(w.mode);
    // Bounded: a descriptor announced by a request arrives right before it, or something is wrong.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    host.set_fd_source(Box::new(move |tag, id| bitbridge_shm::recv_fd(&conn, tag, id).map(std::fs::File::from)));
    Ok((Box::new(recv), Box::new(send)))
}

/// As on Unix, but a Windows process under Wine cannot receive descriptors: the client keeps each one
/// open and announces its number ([`bitbridge_shm::ANNOUNCEMENT`]), and this server opens it by name,
/// `Z:\proc\<client pid>\fd\<n>`, through Wine's view of the Linux file system. After the segment,
/// one thread reads the connection: announcements go to the host's descriptor source, and EOF (the
/// client's end) wakes every wait on the segment.
#[cfg(windows)]
fn connect(
    conn: Conn,
    shm: Option<Waiting>,
    host: &mut Host,
) -> std::io::Result<(Box<dyn Transport>, Box<dyn Transport>)> {
    use std::io::Read;
    let Some(w) = shm else { return stream(conn) };
    let client: u32 = std::env::var("BITBRIDGE_PARENT_PID").ok().and_then(|p| p.parse().ok()).ok_or_else(|| {
        std::io::Error::other("BITBRIDGE_PARENT_PID is not set: shared memory needs the client's pid")
    })?;
    let open =
        move |n: u32| std::fs::OpenOptions::new().read(true).write(true).open(format!("Z:\\proc\\{client}\\fd\\{n}"));
    let expect = |msg: &[u8; bitbridge_shm::ANNOUNCEMENT], tag: &[u8; 4], id: u32| -> std::io::Result<u32> {
        if msg[..4] != tag[..] || msg[4..8] != id.to_le_bytes() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected {:?} for {id} on the connection", String::from_utf8_lossy(tag)),
            ));
        }
        Ok(u32::from_le_bytes(msg[8..].try_into().expect("4 bytes")))
    };
    let ctx = |what: &str| {
        let what = what.to_owned();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let mut first = [0u8; bitbridge_shm::ANNOUNCEMENT];
    (&conn).read_exact(&mut first).map_err(ctx("reading the segment's announcement"))?;
    let n = expect(&first, b"SHM1", 0)?;
    let file = open(n).map_err(ctx(&format!("opening the client's descriptor {n}")))?;
    let seg = Arc::new(bitbridge_shm::Segment::open_file(&file).map_err(ctx("mapping the segment"))?);
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = bitbridge_shm::Watch::reader(conn, seg.clone(), move |msg| {
        let _ = tx.send(msg);
    })?;
    let rx = std::sync::Mutex::new(rx);
    host.set_fd_source(Box::new(move |tag, id| {
        let msg = rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(std::time::Duration::from_secs(5))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client announced no descriptor"))?;
        open(expect(&msg, tag, id)?)
    }));
    let recv = bitbridge_shm::ShmTransport::server_watched(seg.clone(), watch.clone(), w.spin).wait_mode(w.mode);
    let send = bitbridge_shm::ShmTransport::server_watched(seg, watch, w.spin).wait_mode(w.mode);
    Ok((Box::new(recv), Box::new(send)))
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
        Ok(c) => Conn::from(c),
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
    // SAFETY: this process exists to host the client's library; a wrong signature can corrupt only this
    // process, whose death the client reports as an error.
    let mut host = unsafe { Host::new() };
    if let Some(h) = &handler {
        host.set_handler(h.clone());
    }
    let (transport, sender) = match connect(conn, shm.then_some(Waiting { spin, mode: wait }), &mut host) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot set up the connection: {e}", program());
            return ExitCode::from(2);
        }
    };
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
