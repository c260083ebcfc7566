//! The fast path's frames, written and read by hand without allocating.
//!
//! A call whose arguments are plain bytes (no memory blocks, relocations or variadic types) and the
//! reply that carries only its return value, `errno` and last error are the common case: `add(int,
//! int)`, an instrument's `set_voltage(int channel, double volts)`. Both sides write these frames
//! straight into their send buffer and recognise them in the received bytes before the general
//! decoder runs. The bytes are exactly what bincode writes for the general messages
//! ([`Frame::Request`](crate::Frame::Request) with [`Request::Call`](crate::Request::Call), and
//! [`Frame::Reply`](crate::Frame::Reply) with `Ok(`[`Reply::Returned`](crate::Reply::Returned)`)`),
//! so the protocol is unchanged: either side may send them through the general encoder and read them
//! with the general decoder. The tests below check the equality for both, and that a frame these
//! functions do not recognise is left to the general decoder.

/// bincode's variant index of [`Frame::Request`](crate::Frame::Request) (a `u32` in fixed-int mode).
const FRAME_REQUEST: u32 = 0;
/// ... of [`Frame::Reply`](crate::Frame::Reply).
const FRAME_REPLY: u32 = 2;
/// ... of [`Request::Call`](crate::Request::Call).
const REQUEST_CALL: u32 = 4;
/// ... of `Ok` in `Result<Reply, RemoteError>`.
const RESULT_OK: u32 = 0;
/// ... of [`Reply::Returned`](crate::Reply::Returned).
const REPLY_RETURNED: u32 = 3;

/// The general request a plain call stands for: [`Request::Call`](crate::Request::Call) with only
/// `args` (for the paths that queue or handle requests rather than run the fast path).
pub fn call_request(func: u32, args: &[u8]) -> crate::Request {
    crate::Request::Call { func, call: crate::CallData { args: args.to_vec(), ..crate::CallData::default() } }
}

/// A call frame with plain arguments, borrowed from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatCall<'a> {
    /// The request's id.
    pub id: u64,
    /// The prepared function's handle.
    pub func: u32,
    /// [`CallData::args`](crate::CallData::args): each argument in its slot.
    pub args: &'a [u8],
}

/// A reply frame carrying only a call's return value, `errno` and last error, borrowed from the
/// received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatReturned<'a> {
    /// The id of the request answered.
    pub id: u64,
    /// [`Returned::value`](crate::Returned::value).
    pub value: &'a [u8],
    /// [`Returned::errno`](crate::Returned::errno).
    pub errno: Option<i32>,
    /// [`Returned::last_error`](crate::Returned::last_error).
    pub last_error: Option<u32>,
}

/// Appends the frame `Frame::Request { id, Request::Call { func, CallData { args, .. } } }` (no
/// variadic types, blocks or relocations) to `out`.
pub fn encode_call(out: &mut Vec<u8>, id: u64, func: u32, args: &[u8]) {
    out.reserve(52 + args.len());
    out.extend_from_slice(&FRAME_REQUEST.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&REQUEST_CALL.to_le_bytes());
    out.extend_from_slice(&func.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // variadic: none
    out.extend_from_slice(&(args.len() as u64).to_le_bytes());
    out.extend_from_slice(args);
    out.extend_from_slice(&0u64.to_le_bytes()); // blocks: none
    out.extend_from_slice(&0u64.to_le_bytes()); // relocs: none
}

/// The call in `frame` if it is one [`encode_call`] writes (a plain call), else `None`: any other
/// frame, or malformed bytes, which the general decoder then reports.
pub fn peek_call(frame: &[u8]) -> Option<FlatCall<'_>> {
    let mut r = Reader(frame);
    if r.u32()? != FRAME_REQUEST {
        return None;
    }
    let id = r.u64()?;
    if r.u32()? != REQUEST_CALL {
        return None;
    }
    let func = r.u32()?;
    if r.u64()? != 0 {
        return None;
    }
    let len = usize::try_from(r.u64()?).ok()?;
    let args = r.take(len)?;
    if r.u64()? != 0 || r.u64()? != 0 || !r.0.is_empty() {
        return None;
    }
    Some(FlatCall { id, func, args })
}

/// Appends the frame `Frame::Reply { id, Ok(Reply::Returned(Returned { value, errno, last_error, .. })) }`
/// (no string, blocks or addresses) to `out`.
pub fn encode_returned(out: &mut Vec<u8>, id: u64, value: &[u8], errno: Option<i32>, last_error: Option<u32>) {
    out.reserve(54 + value.len());
    out.extend_from_slice(&FRAME_REPLY.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&RESULT_OK.to_le_bytes());
    out.extend_from_slice(&REPLY_RETURNED.to_le_bytes());
    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
    out.extend_from_slice(value);
    out.push(0); // string: None
    out.extend_from_slice(&0u64.to_le_bytes()); // blocks: none
    match errno {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    match last_error {
        None => out.push(0),
        Some(e) => {
            out.push(1);
            out.extend_from_slice(&e.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u64.to_le_bytes()); // addrs: none
}

/// The reply in `frame` if it is one [`encode_returned`] writes, else `None` (any other frame, or
/// malformed bytes, for the general decoder).
pub fn peek_returned(frame: &[u8]) -> Option<FlatReturned<'_>> {
    let mut r = Reader(frame);
    if r.u32()? != FRAME_REPLY {
        return None;
    }
    let id = r.u64()?;
    if r.u32()? != RESULT_OK || r.u32()? != REPLY_RETURNED {
        return None;
    }
    let len = usize::try_from(r.u64()?).ok()?;
    let value = r.take(len)?;
    if r.u8()? != 0 || r.u64()? != 0 {
        return None;
    }
    let errno = match r.u8()? {
        0 => None,
        1 => Some(i32::from_le_bytes(r.array()?)),
        _ => return None,
    };
    let last_error = match r.u8()? {
        0 => None,
        1 => Some(u32::from_le_bytes(r.array()?)),
        _ => return None,
    };
    if r.u64()? != 0 || !r.0.is_empty() {
        return None;
    }
    Some(FlatReturned { id, value, errno, last_error })
}

/// Checks, for any bytes, that the hand readers agree with the general decoder: what [`peek_call`] or
/// [`peek_returned`] recognises decodes to the same message, and every message of those shapes the
/// general decoder reads is recognised. Panics on a disagreement (for the fuzzer and the corpus tests).
#[doc(hidden)]
pub fn assert_agrees_with_general_decoder(bytes: &[u8]) {
    use crate::msg::{self, Reply, Request, Returned};
    use crate::Frame;
    let general = msg::decode::<Frame>(bytes).ok();
    let call = peek_call(bytes).map(|c| Frame::Request { id: c.id, request: call_request(c.func, c.args) });
    let reply = peek_returned(bytes).map(|r| Frame::Reply {
        id: r.id,
        reply: Ok(Reply::Returned(Returned {
            value: r.value.to_vec(),
            errno: r.errno,
            last_error: r.last_error,
            ..Returned::default()
        })),
    });
    for flat in [&call, &reply].into_iter().flatten() {
        assert_eq!(general.as_ref(), Some(flat), "the hand reader and the general decoder disagree");
    }
    let plain_call = |f: &Frame| {
        matches!(f, Frame::Request { request: Request::Call { call, .. }, .. }
            if call.variadic.is_empty() && call.blocks.is_empty() && call.relocs.is_empty())
    };
    let plain_reply = |f: &Frame| {
        matches!(f, Frame::Reply { reply: Ok(Reply::Returned(r)), .. }
            if r.string.is_none() && r.blocks.is_empty() && r.addrs.is_empty())
    };
    if let Some(f) = &general {
        assert_eq!(plain_call(f), call.is_some(), "a plain call the hand reader misses: {f:?}");
        assert_eq!(plain_reply(f), reply.is_some(), "a plain reply the hand reader misses: {f:?}");
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{self, Block, CallData, Loc, Reloc, RemoteError, Reply, Request, Returned};
    use crate::{CType, ErrorKind, Frame};

    fn general(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        msg::encode(frame, &mut out);
        out
    }

    fn call(id: u64, func: u32, args: Vec<u8>) -> Frame {
        Frame::Request { id, request: Request::Call { func, call: CallData { args, ..CallData::default() } } }
    }

    fn returned(id: u64, value: Vec<u8>, errno: Option<i32>, last_error: Option<u32>) -> Frame {
        Frame::Reply { id, reply: Ok(Reply::Returned(Returned { value, errno, last_error, ..Returned::default() })) }
    }

    #[test]
    fn a_call_is_what_bincode_writes_and_reads_back() {
        for (id, func, args) in [
            (1u64, 0u32, vec![]),
            (u64::MAX, u32::MAX, vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]),
            (77, 5, (0..=255).collect()),
        ] {
            let mut out = vec![0xAA]; // appends
            encode_call(&mut out, id, func, &args);
            let frame = call(id, func, args.clone());
            assert_eq!(out[1..], general(&frame)[..]);
            assert_eq!(msg::decode::<Frame>(&out[1..]).unwrap(), frame);
            assert_eq!(peek_call(&out[1..]), Some(FlatCall { id, func, args: &args }));
        }
    }

    #[test]
    fn a_reply_is_what_bincode_writes_and_reads_back() {
        for (value, errno, last_error) in [
            (vec![], None, None),
            (vec![5, 0, 0, 0], Some(-3), None),
            (vec![1; 12], None, Some(0xC000_0005)),
            (vec![9; 32], Some(i32::MIN), Some(u32::MAX)),
        ] {
            let mut out = Vec::new();
            encode_returned(&mut out, 42, &value, errno, last_error);
            let frame = returned(42, value.clone(), errno, last_error);
            assert_eq!(out, general(&frame));
            assert_eq!(msg::decode::<Frame>(&out).unwrap(), frame);
            assert_eq!(peek_returned(&out), Some(FlatReturned { id: 42, value: &value, errno, last_error }));
        }
    }

    #[test]
    fn the_hand_readers_agree_with_the_general_decoder_on_mutated_frames() {
        let mut frames = Vec::new();
        let mut f = Vec::new();
        encode_call(&mut f, 9, 3, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
        frames.push(f);
        let mut f = Vec::new();
        encode_returned(&mut f, 9, &[7, 0, 0, 0], Some(5), Some(6));
        frames.push(f);
        frames.push(general(&Frame::Reply { id: 1, reply: Ok(Reply::Done) }));
        // xorshift: a fixed sequence, the same on every run.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for frame in &frames {
            assert_agrees_with_general_decoder(frame);
            for _ in 0..2000 {
                let mut m = frame.clone();
                match next() % 4 {
                    0 => {
                        let i = next() as usize % m.len();
                        m[i] = next() as u8;
                    }
                    1 => m.truncate(next() as usize % m.len()),
                    2 => m.push(next() as u8),
                    _ => {
                        // A small length or flag at a random place.
                        let i = next() as usize % m.len();
                        m[i] = (next() % 3) as u8;
                    }
                }
                assert_agrees_with_general_decoder(&m);
            }
        }
    }

    #[test]
    fn anything_else_is_left_to_the_general_decoder() {
        let block = Block { data: vec![1, 2], len: 2, align: 1, ..Block::default() };
        let others = [
            Frame::Request {
                id: 1,
                request: Request::Call {
                    func: 1,
                    call: CallData { variadic: vec![CType::Int], args: vec![0; 4], ..CallData::default() },
                },
            },
            Frame::Request {
                id: 1,
                request: Request::Call {
                    func: 1,
                    call: CallData {
                        args: vec![0; 4],
                        blocks: vec![block],
                        relocs: vec![Reloc { at: Loc::Arg(0), offset: 0, block: 0 }],
                        ..CallData::default()
                    },
                },
            },
            Frame::Request { id: 1, request: Request::Release { func: 1 } },
            Frame::Nested { id: 1, parent: 2, request: Request::Call { func: 1, call: CallData::default() } },
            Frame::Reply { id: 1, reply: Ok(Reply::Done) },
            Frame::Reply { id: 1, reply: Err(RemoteError { kind: ErrorKind::BadArguments, message: "no".into() }) },
            Frame::Reply {
                id: 1,
                reply: Ok(Reply::Returned(Returned { string: Some(b"hi".to_vec()), ..Returned::default() })),
            },
            Frame::Reply {
                id: 1,
                reply: Ok(Reply::Returned(Returned { blocks: vec![vec![1]], addrs: vec![8], ..Returned::default() })),
            },
        ];
        for f in &others {
            let bytes = general(f);
            assert_eq!(peek_call(&bytes), None, "{f:?}");
            assert_eq!(peek_returned(&bytes), None, "{f:?}");
        }
        // Truncated, padded and corrupted frames are not recognised either.
        let mut good = Vec::new();
        encode_call(&mut good, 3, 4, &[1, 2, 3, 4]);
        for cut in 0..good.len() {
            assert_eq!(peek_call(&good[..cut]), None);
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(peek_call(&long), None);
        let mut lying = good.clone();
        lying[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // args length past the end
        assert_eq!(peek_call(&lying), None);
        let mut reply = Vec::new();
        encode_returned(&mut reply, 3, &[1, 2, 3, 4], Some(1), None);
        for cut in 0..reply.len() {
            assert_eq!(peek_returned(&reply[..cut]), None);
        }
        let errno_flag = 4 + 8 + 4 + 4 + 8 + 4 + 1 + 8;
        reply[errno_flag] = 2; // neither None nor Some
        assert_eq!(peek_returned(&reply), None);
        assert!(msg::decode::<Frame>(&reply).is_err());
    }
}
