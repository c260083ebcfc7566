//! The server process: spawning it with its end of a socketpair as stdin, draining its output on
//! threads so a chatty library never blocks, and telling how it ended.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, ExitReason, Result};

/// How much of each output stream is kept.
const TAIL: usize = 64 * 1024;

/// The last bytes of a stream, filled by a draining thread.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    /// The bytes kept, whether the stream ended, and how many bytes came in all.
    state: Mutex<(VecDeque<u8>, bool, u64)>,
    done: Condvar,
}

/// A stream that stays quiet this long after its writer died is taken as complete, even if a process
/// the library forked still holds it open.
const QUIET: Duration = Duration::from_millis(10);

impl Tail {
    fn drain(self: Arc<Self>, mut from: impl Read + Send + 'static) {
        thread::Builder::new()
            .name("bitbridge-drain".into())
            .spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    let n = match from.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    st.0.extend(&buf[..n]);
                    st.2 += n as u64;
                    let excess = st.0.len().saturating_sub(TAIL);
                    st.0.drain(..excess);
                }
                self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
                self.done.notify_all();
            })
            .expect("spawning a drain thread");
    }

    /// The text so far, after waiting up to `wait` for the stream to end or to stay quiet for
    /// [`QUIET`] (its writer is dead, but a child of the library may keep it open).
    pub(crate) fn text(&self, wait: Duration) -> String {
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if st.1 || left.is_zero() {
                break;
            }
            let before = st.2;
            st = self.done.wait_timeout(st, left.min(QUIET)).unwrap_or_else(|e| e.into_inner()).0;
            if !st.1 && st.2 == before {
                break;
            }
        }
        String::from_utf8_lossy(&st.0.iter().copied().collect::<Vec<_>>()).into_owned()
    }
}

/// A running server process; killed and reaped on drop if nobody reaped it (never a zombie).
///
/// The server leads its own process group (processes a library forks join it), and the group is
/// killed whenever the server is reaped: before `wait`, while the server's pid (the group's id) cannot
/// have been reused.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) stdout: Arc<Tail>,
    pub(crate) stderr: Arc<Tail>,
    /// A pidfd for the server (Linux 5.3 and later): readable once it has exited, whoever still holds
    /// its end of the connection.
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
    reaped: Option<ExitReason>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `f` on bitbridge's spawner thread, which lives as long as the process.
///
/// Servers are forked from that thread because the parent-death signal they set (`PR_SET_PDEATHSIG`)
/// fires when the *thread* that forked them exits, not the process: a server started from a short-lived
/// worker thread would otherwise be killed when that thread ends, while its client still uses it.
fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // The thread and the process id it belongs to: after a fork() the child has the sender but not the
    // thread, so a new thread is started for the new process.
    static SPAWNER: Mutex<Option<(u32, mpsc::Sender<Job>)>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if spawner.as_ref().is_none_or(|(p, _)| *p != pid) {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("bitbridge-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("spawning bitbridge's spawner thread");
        *spawner = Some((pid, tx));
    }
    let (done_tx, done_rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = done_tx.send(f());
    });
    spawner.as_ref().expect("set above").1.send(job).expect("the spawner thread never exits");
    drop(spawner);
    done_rx.recv().expect("the spawner thread runs every job")
}

/// Starts `path` with one end of a fresh socketpair as its stdin; returns the process and our end.
/// No name in the filesystem and no port: only this process holds the other end.
/// What the server inherits of this process's environment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inherit<'a> {
    /// Nothing.
    pub(crate) clear: bool,
    /// All but these.
    pub(crate) remove: &'a [OsString],
}

///
/// With a `launcher` (a Wine loader), the command is `launcher path`: Wine runs the Windows program in
/// the process it was started as, so the process watched is the server itself.
pub(crate) fn spawn(
    path: &Path,
    launcher: Option<&Path>,
    env: &[(OsString, OsString)],
    inherit: Inherit<'_>,
) -> Result<(ServerProcess, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().map_err(Error::Io)?;
    let mut cmd = match launcher {
        Some(l) => {
            let mut c = Command::new(l);
            c.arg(path);
            c
        }
        None => Command::new(path),
    };
    if inherit.clear {
        cmd.env_clear();
    }
    for k in inherit.remove {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("BITBRIDGE_PARENT_PID", std::process::id().to_string())
        // Its own process group, which processes the library starts join: killed with the server.
        .process_group(0);
    // Only what this client sets: a stray BITBRIDGE_WORKERS could run a library on several threads.
    for k in ["BITBRIDGE_SHM", "BITBRIDGE_SPIN_US", "BITBRIDGE_WAIT", "BITBRIDGE_WORKERS"] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The Command (holding our copy of the server's end) is dropped on the spawner thread right after
    // the fork, so the server's death is seen here as EOF.
    let path_buf = path.to_path_buf();
    let mut child = on_spawner_thread(move || cmd.spawn()).map_err(|source| Error::Spawn { path: path_buf, source })?;
    let stdout = Arc::new(Tail::default());
    let stderr = Arc::new(Tail::default());
    stdout.clone().drain(child.stdout.take().expect("piped"));
    stderr.clone().drain(child.stderr.take().expect("piped"));
    let pidfd = rustix::process::Pid::from_raw(child.id() as i32)
        .and_then(|pid| rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok())
        .map(Arc::new);
    Ok((ServerProcess { child, stdout, stderr, pidfd, reaped: None }, ours))
}

impl ServerProcess {
    /// Waits up to `grace` for the process to exit, then kills it; says how it ended.
    pub(crate) fn reap(&mut self, grace: Duration) -> ExitReason {
        if let Some(r) = &self.reaped {
            return r.clone();
        }
        let r = self.reap_now(grace);
        self.reaped = Some(r.clone());
        r
    }

    fn reap_now(&mut self, grace: Duration) -> ExitReason {
        let exited = match self.pidfd.clone() {
            // Waits for the exit without reaping, so the group can be killed while its id is still ours.
            Some(fd) => wait_readable(&fd, grace),
            None => {
                let deadline = Instant::now() + grace;
                let mut pause = Duration::from_micros(50);
                loop {
                    match self.child.try_wait() {
                        Ok(Some(status)) => {
                            // Reaped already (no pidfd on this kernel): a group that still has members keeps
                            // its id reserved; pids are reused only after the whole pid space wraps.
                            self.kill_group();
                            return reason(status);
                        }
                        Ok(None) if Instant::now() < deadline => {
                            thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(5));
                        }
                        _ => break false,
                    }
                }
            }
        };
        if !exited {
            let _ = self.child.kill();
        }
        self.kill_group();
        // Killed by us (SIGKILL shows in the status) unless it exited just before.
        self.child.wait().map(reason).unwrap_or(ExitReason::Unknown)
    }

    /// Kills every process left in the server's process group (what the library started).
    fn kill_group(&self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Waits up to `wait` for `fd` to become readable (a pidfd: its process exited); true if it did.
pub(crate) fn wait_readable(fd: &OwnedFd, wait: Duration) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::time::Timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => return true,
            Ok(_) => return false,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

fn reason(s: ExitStatus) -> ExitReason {
    match (s.code(), s.signal()) {
        (Some(c), _) => ExitReason::Code(c),
        (None, Some(sig)) => ExitReason::Signal(sig),
        _ => ExitReason::Unknown,
    }
}

/// The client's end of the socket for the socket transport: each read and write first waits (poll) for
/// the socket or for the server's exit (its pidfd), up to a deadline. A library's child holding the
/// server's end of the socket therefore cannot hide the server's death, and no read or write waits
/// past the deadline, whether or not a frame has begun.
#[derive(Debug)]
pub(crate) struct Watched {
    sock: UnixStream,
    pidfd: Option<Arc<OwnedFd>>,
    /// No read or write waits past this (`None`: no limit).
    pub(crate) deadline: Option<Instant>,
}

impl Watched {
    pub(crate) fn new(sock: UnixStream, pidfd: Option<Arc<OwnedFd>>) -> Watched {
        Watched { sock, pidfd, deadline: None }
    }

    /// Waits until the socket is ready for `what`; an error once the server exited or the deadline passed.
    fn ready(&self, what: rustix::event::PollFlags) -> io::Result<()> {
        use rustix::event::{poll, PollFd, PollFlags};
        loop {
            let left = self.deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let ts = left.map(|l| rustix::time::Timespec { tv_sec: l.as_secs() as _, tv_nsec: l.subsec_nanos() as _ });
            let mut fds = [PollFd::new(&self.sock, what), PollFd::new(&self.sock, PollFlags::empty())];
            if let Some(p) = &self.pidfd {
                fds[1] = PollFd::new(&**p, PollFlags::IN);
            }
            match poll(&mut fds, ts.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            if !fds[0].revents().is_empty() {
                return Ok(());
            }
            if self.pidfd.is_some() && !fds[1].revents().is_empty() {
                // The server process has exited; what it sent before is read first (above).
                return Err(io::ErrorKind::ConnectionReset.into());
            }
        }
    }
}

impl io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.ready(rustix::event::PollFlags::IN)?;
            match rustix::net::recv(&self.sock, &mut *buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((n, _)) => return Ok(n),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl io::Write for Watched {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.ready(rustix::event::PollFlags::OUT)?;
            // NOSIGNAL: a server that died is an EPIPE error, not a SIGPIPE that kills the client.
            let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
            match rustix::net::send(&self.sock, buf, flags) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
