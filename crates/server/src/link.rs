//! The server's side of a connection, shared by its threads: serving requests, and sending requests of
//! its own (callbacks) whose replies come back on the same connection.
//!
//! Threads take turns reading (leader/follower), as in the client: a worker reads until it gets a
//! request and runs it itself; a thread waiting for a callback's reply reads until the reply is there,
//! storing replies for other waiters and running any request that arrives meanwhile (the client's
//! callback calling back into the library: nested calls run on the thread that waits).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex};

use bitbridge_proto::{msg, ErrorKind, Frame, FrameError, RemoteError, Reply, Request, Transport};

use crate::host::{FlatAnswer, Host};

pub(crate) struct Link {
    recv: Mutex<(Box<dyn Transport>, Vec<u8>)>,
    /// The transport and the buffer each frame is encoded into (reused: no allocation per reply).
    send: Mutex<(Box<dyn Transport>, Vec<u8>)>,
    state: Mutex<State>,
    wake: Condvar,
    next_id: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
}

#[derive(Default)]
struct State {
    reading: bool,
    /// Threads sleeping on `wake`: nobody to notify (a system call saved per frame) when zero.
    waiters: usize,
    /// Replies awaited by threads: `None` until it arrives.
    replies: HashMap<u64, Option<Result<Reply, RemoteError>>>,
    /// Set when the connection ended: waiters stop waiting.
    closed: bool,
    /// Requests read by a thread waiting for a callback reply that are not its nested calls: for the
    /// workers.
    queue: std::collections::VecDeque<(u64, Request)>,
    /// Nested calls read by another thread, per callback request they belong to.
    nested: HashMap<u64, std::collections::VecDeque<(u64, Request)>>,
}

/// The most argument bytes a call read by the fast path carries (copied out of the receive buffer);
/// a larger one is decoded as a general request.
pub(crate) const FLAT_ARGS: usize = 256;

/// A call with plain arguments, copied out of the receive buffer (`bitbridge_proto::flat`).
pub(crate) struct FlatCall {
    pub(crate) id: u64,
    pub(crate) func: u32,
    len: usize,
    args: [u8; FLAT_ARGS],
}

impl FlatCall {
    pub(crate) fn args(&self) -> &[u8] {
        &self.args[..self.len]
    }

    /// The same call as a general request, for the paths that queue requests.
    fn into_request(self) -> (u64, Request) {
        (self.id, bitbridge_proto::flat::call_request(self.func, self.args()))
    }
}

/// What a worker got.
// The flat call's arguments are inline: boxing them would allocate per call, which the fast path exists
// to avoid, and a `Next` only lives on a worker's stack.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next {
    /// A request to run and answer.
    Request(u64, Request),
    /// A call with plain arguments: [`Host::call_flat`], answered by [`Link::answer_flat`].
    Flat(FlatCall),
    /// The end of the session: the client went away, or sent something that ends it (answered).
    Stop(Result<(), FrameError>),
}

#[allow(clippy::large_enum_variant)] // as for `Next`
enum Read {
    Frame(Frame),
    Flat(FlatCall),
    Malformed(String),
    Failed(FrameError),
}

/// The largest send buffer kept between frames.
const KEEP_BUFFER: usize = 64 << 10;

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    pub(crate) fn new(recv: Box<dyn Transport>, send: Box<dyn Transport>) -> Link {
        Link {
            recv: Mutex::new((recv, Vec::new())),
            send: Mutex::new((send, Vec::new())),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            next_id: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn read(&self) -> Read {
        let mut r = lock(&self.recv);
        let (transport, buf) = &mut *r;
        match transport.recv(buf) {
            Ok(()) => match bitbridge_proto::flat::peek_call(buf) {
                Some(c) if c.args.len() <= FLAT_ARGS => {
                    let mut call = FlatCall { id: c.id, func: c.func, len: c.args.len(), args: [0; FLAT_ARGS] };
                    call.args[..c.args.len()].copy_from_slice(c.args);
                    Read::Flat(call)
                }
                _ => Self::decode(buf),
            },
            Err(e) => Read::Failed(e),
        }
    }

    fn decode(buf: &[u8]) -> Read {
        match msg::decode::<Frame>(buf) {
            Ok(f) => Read::Frame(f),
            Err(e) => Read::Malformed(e.to_string()),
        }
    }

    /// Sends a frame; a reply too large for a frame is replaced by an error reply.
    pub(crate) fn send(&self, frame: &Frame) -> Result<(), FrameError> {
        let mut guard = lock(&self.send);
        let (transport, out) = &mut *guard;
        out.clear();
        msg::encode(frame, out);
        let sent = transport.send(out);
        if out.capacity() > KEEP_BUFFER {
            // A large reply's buffer is not kept for the session (a 32-bit server's address space).
            *out = Vec::new();
        }
        match sent {
            Err(FrameError::TooLarge { len, max }) => {
                let id = match frame {
                    Frame::Reply { id, .. } | Frame::Request { id, .. } | Frame::Nested { id, .. } => *id,
                };
                let message = format!("the reply of {len} bytes exceeds the maximum frame of {max}");
                out.clear();
                msg::encode(
                    &Frame::Reply { id, reply: Err(RemoteError { kind: ErrorKind::BadArguments, message }) },
                    out,
                );
                transport.send(out)
            }
            other => other,
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.wake.notify_all();
    }

    /// The next request for a worker to run (replies read meanwhile go to their waiters).
    pub(crate) fn next_request(&self) -> Next {
        loop {
            {
                let mut st = lock(&self.state);
                while st.reading && !st.closed && st.queue.is_empty() {
                    st.waiters += 1;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.waiters -= 1;
                }
                if let Some((id, request)) = st.queue.pop_front() {
                    if !st.reading && st.waiters > 0 {
                        // Woken for the reader role, this worker runs a queued request instead.
                        self.wake.notify_one();
                    }
                    return Next::Request(id, request);
                }
                if st.closed {
                    return Next::Stop(Ok(()));
                }
                st.reading = true;
            }
            let got = self.read();
            match &got {
                // Counted before another worker can read a Shutdown behind it.
                Read::Frame(Frame::Request { request, .. }) if !matches!(request, Request::Shutdown) => {
                    self.in_flight.fetch_add(1, SeqCst);
                }
                Read::Flat(_) => {
                    self.in_flight.fetch_add(1, SeqCst);
                }
                _ => {}
            }
            let got = self.release_reader(got, false);
            match got {
                None => {} // a reply or a nested call, delivered to its thread
                Some(Read::Flat(call)) => return Next::Flat(call),
                Some(Read::Frame(Frame::Request { id, request } | Frame::Nested { id, request, .. })) => {
                    return Next::Request(id, request)
                }
                Some(Read::Frame(Frame::Reply { id, .. })) => {
                    let _ = self.send(&unexpected_reply(id));
                    self.close();
                    return Next::Stop(Ok(()));
                }
                Some(Read::Malformed(m)) => {
                    let _ = self.send(&protocol_error(0, m));
                    self.close();
                    return Next::Stop(Ok(()));
                }
                Some(Read::Failed(FrameError::Closed)) => {
                    self.close();
                    return Next::Stop(Ok(()));
                }
                Some(Read::Failed(e)) => {
                    self.close();
                    return Next::Stop(Err(e));
                }
            }
        }
    }

    /// Gives up the reader role and, in the same step, delivers a reply that was read to the thread
    /// awaiting it (a waiter woken before the delivery could take the reader role and block reading,
    /// its reply sitting unseen), and with `queue` a request to the workers' queue (for a thread that
    /// waits for a callback's reply and does not run other requests: queued later, a woken worker could
    /// find the queue empty and block reading, the request unrun). Returns what is left to handle:
    /// `None` for a delivered reply or a queued request.
    fn release_reader(&self, got: Read, queue: bool) -> Option<Read> {
        let mut st = lock(&self.state);
        st.reading = false;
        let rest = match got {
            Read::Flat(call) if queue => {
                self.in_flight.fetch_add(1, SeqCst);
                st.queue.push_back(call.into_request());
                None
            }
            Read::Frame(Frame::Request { id, request }) if queue => {
                // Anything else is the workers' (one worker: every call on its thread, in order).
                if !matches!(request, Request::Shutdown) {
                    self.in_flight.fetch_add(1, SeqCst);
                }
                st.queue.push_back((id, request));
                None
            }
            Read::Frame(Frame::Reply { id, reply }) => match st.replies.get_mut(&id) {
                Some(slot @ None) => {
                    *slot = Some(reply);
                    None
                }
                _ => Some(Read::Frame(Frame::Reply { id, reply })),
            },
            // A nested call goes to the thread waiting for the callback it was made from.
            Read::Frame(Frame::Nested { id, parent, request }) if st.replies.contains_key(&parent) => {
                st.nested.entry(parent).or_default().push_back((id, request));
                None
            }
            other => Some(other),
        };
        let wake = st.waiters > 0;
        drop(st);
        if wake && rest.is_none() {
            // Delivered to a thread waiting for a callback's reply, or queued: every sleeper checks.
            self.wake.notify_all();
        } else if wake {
            // Only the reader role is free: one thread takes it (any sleeper can; waking them all
            // would have every idle worker contend for the state on every request).
            self.wake.notify_one();
        }
        rest
    }

    /// Sends a request to the client and waits for its reply, running requests that arrive meanwhile.
    pub(crate) fn request(&self, host: &Host, request: Request) -> Result<Reply, RemoteError> {
        let lost = || RemoteError { kind: ErrorKind::Protocol, message: "the client went away".into() };
        let id = self.next_id.fetch_add(1, SeqCst);
        lock(&self.state).replies.insert(id, None);
        if self.send(&Frame::Request { id, request }).is_err() {
            lock(&self.state).replies.remove(&id);
            return Err(lost());
        }
        loop {
            {
                let mut st = lock(&self.state);
                loop {
                    if let Some((rid, request)) = st.nested.get_mut(&id).and_then(|q| q.pop_front()) {
                        drop(st);
                        self.run_nested(host, rid, request);
                        st = lock(&self.state);
                        continue;
                    }
                    if matches!(st.replies.get(&id), Some(Some(_))) {
                        st.nested.remove(&id);
                        return st.replies.remove(&id).flatten().expect("present");
                    }
                    if st.closed {
                        st.replies.remove(&id);
                        return Err(lost());
                    }
                    if !st.reading {
                        break;
                    }
                    st.waiters += 1;
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.waiters -= 1;
                }
                st.reading = true;
            }
            let got = self.read();
            match self.release_reader(got, true) {
                // Delivered, or queued for the workers (never left to us: `queue` is set).
                None | Some(Read::Frame(Frame::Request { .. }) | Read::Flat(_)) => {}
                Some(Read::Frame(Frame::Reply { .. })) => self.close(),
                // A nested call of a callback nobody waits for any more: run it here rather than drop it.
                Some(Read::Frame(Frame::Nested { id: rid, request, .. })) => self.run_nested(host, rid, request),
                Some(Read::Malformed(_) | Read::Failed(_)) => self.close(),
            }
        }
    }

    /// Runs a nested call (the client's callback calling into the library) on this thread and answers it.
    fn run_nested(&self, host: &Host, id: u64, request: Request) {
        let answer = host.handle(request);
        if self.send(&Frame::Reply { id, reply: answer }).is_err() {
            self.close();
        }
    }

    /// Runs a call read by the fast path and answers it, with the reply written by hand when it is
    /// plain; marks it done.
    pub(crate) fn answer_flat(&self, host: &Host, call: &FlatCall) -> Result<(), FrameError> {
        let mut value = [0u8; 32];
        let sent = match host.call_flat(call.func, call.args(), &mut value) {
            FlatAnswer::Plain { len, errno, last_error } => {
                let mut guard = lock(&self.send);
                let (transport, out) = &mut *guard;
                out.clear();
                bitbridge_proto::flat::encode_returned(out, call.id, &value[..len], errno, last_error);
                transport.send(out)
            }
            FlatAnswer::General(reply) => self.send(&Frame::Reply { id: call.id, reply }),
        };
        self.in_flight.fetch_sub(1, SeqCst);
        sent
    }

    /// Answers a request and marks it done.
    pub(crate) fn answer(&self, id: u64, reply: Result<Reply, RemoteError>) -> Result<(), FrameError> {
        let sent = self.send(&Frame::Reply { id, reply });
        self.in_flight.fetch_sub(1, SeqCst);
        sent
    }
}

pub(crate) fn protocol_error(id: u64, message: String) -> Frame {
    Frame::Reply { id, reply: Err(RemoteError { kind: ErrorKind::Protocol, message }) }
}

pub(crate) fn unexpected_reply(id: u64) -> Frame {
    protocol_error(id, format!("unexpected reply {id}: no request is pending"))
}
