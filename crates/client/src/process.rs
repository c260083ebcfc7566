//! The server process: spawning it with its end of a socketpair as stdin, draining its output on
//! threads so a chatty library never blocks, and telling how it ended.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
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
    state: Mutex<(VecDeque<u8>, bool)>,
    done: Condvar,
}

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
                    let excess = st.0.len().saturating_sub(TAIL);
                    st.0.drain(..excess);
                }
                self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
                self.done.notify_all();
            })
            .expect("spawning a drain thread");
    }

    /// The text so far, after waiting up to `wait` for the stream to end.
    pub(crate) fn text(&self, wait: Duration) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (st, _) = self.done.wait_timeout_while(st, wait, |s| !s.1).unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&st.0.iter().copied().collect::<Vec<_>>()).into_owned()
    }
}

/// A running server process; killed and reaped on drop if nobody reaped it (never a zombie).
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) stdout: Arc<Tail>,
    pub(crate) stderr: Arc<Tail>,
    reaped: Option<ExitReason>,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.child.kill();
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
pub(crate) fn spawn(path: &Path, env: &[(OsString, OsString)]) -> Result<(ServerProcess, UnixStream)> {
    let (ours, theirs) = UnixStream::pair().map_err(Error::Io)?;
    let mut cmd = Command::new(path);
    cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("BITBRIDGE_PARENT_PID", std::process::id().to_string());
    // Only what this client sets: a stray BITBRIDGE_WORKERS could run a library on several threads.
    for k in ["BITBRIDGE_SHM", "BITBRIDGE_SPIN_US", "BITBRIDGE_WORKERS"] {
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
    Ok((ServerProcess { child, stdout, stderr, reaped: None }, ours))
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
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return reason(status),
                Ok(None) if Instant::now() < deadline => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                _ => {
                    let _ = self.child.kill();
                    // Killed by us (SIGKILL shows in the status) unless it exited just before.
                    return self.child.wait().map(reason).unwrap_or(ExitReason::Unknown);
                }
            }
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn reason(s: ExitStatus) -> ExitReason {
    match (s.code(), s.signal()) {
        (Some(c), _) => ExitReason::Code(c),
        (None, Some(sig)) => ExitReason::Signal(sig),
        _ => ExitReason::Unknown,
    }
}
