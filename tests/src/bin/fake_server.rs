//! A fake bitbridge server for x86_64 that greets like the real one, then misbehaves on command, so the
//! client's handling of a broken or hostile peer can be tested. `FAKE_FAULT` names the fault; requests
//! other than `Read` and `Call` are answered `Done`, and the first `Read` or `Call` gets the fault:
//!
//! - `partial-greeting`: a greeting header announcing 100 bytes, 10 bytes, then nothing.
//! - `huge-greeting`: a greeting header announcing 200 MB, then 1 MiB of bytes, then nothing.
//! - `silent`: no reply.
//! - `partial-frame`: a reply announcing 100 bytes, 10 bytes, then nothing (on shared memory: one
//!   10-byte chunk marked "more", then nothing).
//! - `huge-length`: a reply announcing almost 1 GiB, 10 bytes, then nothing (on shared memory: 4 MiB
//!   chunks marked "more", 4 of them).
//! - `over-limit`: a reply announcing 4 GiB - 1 bytes (socket only; as `huge-length` on shared memory).
//! - `unsent-reply`: a reply to request 999999, never sent.
//! - `wrong-id`: a reply to the previous request, already answered.
//! - `malformed`: 32 bytes that are no frame.
//! - `oversized-read`: a `Read` of n bytes answered with 256 n bytes.
//! - `oversized-return`: a `Call` answered with a 1 MiB return value.
//! - `wrong-return-size`: a `Call` answered with a return value of 8 bytes.
//! - `missing-block`: a `Call` answered without its copy-back blocks.
//! - `wrong-block-size`: a `Call` answered with copy-back blocks 3 bytes longer than sent.
//! - `big-bytes`: a `Call` answered with `Reply::Bytes` of 8 MiB.
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use bitbridge_proto::{msg, Arch, Frame, Hello, Os, Reply, Request, Returned, StreamTransport, Transport};

/// Waits to be killed (the client ends a server that broke the protocol).
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A fake server has no parent-death signal: it exits when its client is gone, or after 5 minutes.
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        for _ in 0..3000 {
            std::thread::sleep(Duration::from_millis(100));
            if std::os::unix::process::parent_id() != parent {
                break;
            }
        }
        std::process::exit(9);
    });
}

fn main() {
    exit_with_parent();
    let fault = std::env::var("FAKE_FAULT").unwrap_or_default();
    let shm = std::env::var("BITBRIDGE_SHM").is_ok_and(|v| v == "1");
    let mut conn = UnixStream::from(std::io::stdin().as_fd().try_clone_to_owned().expect("a connection on stdin"));
    match fault.as_str() {
        "partial-greeting" => {
            conn.write_all(&100u32.to_le_bytes()).unwrap();
            conn.write_all(&[0; 10]).unwrap();
            hang();
        }
        "huge-greeting" => {
            conn.write_all(&200_000_000u32.to_le_bytes()).unwrap();
            let _ = conn.write_all(&vec![0; 1 << 20]);
            hang();
        }
        _ => {}
    }
    let mut hello = Vec::new();
    msg::encode(&Hello::new(Arch::X86_64, Os::Linux, 8, std::process::id(), "fake"), &mut hello);
    StreamTransport::new(&conn).send(&hello).unwrap();
    let mut shm_transport = None;
    let mut t: Box<dyn Transport> = if shm {
        let seg = std::sync::Arc::new(bitbridge_shm::recv_segment(&conn).unwrap());
        shm_transport =
            Some(bitbridge_shm::ShmTransport::server(seg.clone(), conn.try_clone().unwrap(), Duration::ZERO));
        Box::new(bitbridge_shm::ShmTransport::server(seg, conn.try_clone().unwrap(), Duration::ZERO))
    } else {
        Box::new(StreamTransport::new(conn.try_clone().unwrap()))
    };
    let mut buf = Vec::new();
    let mut previous = 0;
    let send = |t: &mut Box<dyn Transport>, id: u64, reply: Reply| {
        let mut out = Vec::new();
        msg::encode(&Frame::Reply { id, reply: Ok(reply) }, &mut out);
        let _ = t.send(&out);
    };
    loop {
        if t.recv(&mut buf).is_err() {
            return;
        }
        let Ok(Frame::Request { id, request }) = msg::decode::<Frame>(&buf) else { return };
        let (read_len, blocks, nblocks) = match &request {
            Request::Read { len, .. } => (Some(*len), Vec::new(), 0),
            Request::Call { call, .. } => {
                let back = call.blocks.iter().filter(|b| b.copy_back && b.arena.is_none()).map(|b| b.len).collect();
                (None, back, call.blocks.len())
            }
            Request::Shutdown => return,
            Request::Prepare { .. } => {
                send(&mut t, id, Reply::Address(0x1000));
                previous = id;
                continue;
            }
            _ => {
                send(&mut t, id, Reply::Done);
                previous = id;
                continue;
            }
        };
        let returned = |value: Vec<u8>, blocks: Vec<Vec<u8>>| {
            // Addresses no pointer in the blocks holds: nothing was replaced.
            let addrs = (0..nblocks as u64).map(|i| 0x1000_0000 + 0x1000 * i).collect();
            Reply::Returned(Returned { value, string: None, blocks, errno: None, last_error: None, addrs })
        };
        match fault.as_str() {
            "silent" => hang(),
            "partial-frame" | "huge-length" | "over-limit" => {
                if let Some(s) = shm_transport.as_mut() {
                    if fault == "partial-frame" {
                        let _ = s.send_chunk(&[0; 10], true);
                    } else {
                        for _ in 0..4 {
                            if s.send_chunk(&vec![0; 4 << 20], true).is_err() {
                                break;
                            }
                        }
                    }
                } else {
                    let len: u32 = match fault.as_str() {
                        "partial-frame" => 100,
                        "huge-length" => (1 << 30) - 1,
                        _ => u32::MAX,
                    };
                    let _ = conn.write_all(&len.to_le_bytes());
                    let _ = conn.write_all(&[0; 10]);
                }
                hang()
            }
            "unsent-reply" => send(&mut t, 999_999, Reply::Done),
            "wrong-id" => send(&mut t, previous, Reply::Done),
            "malformed" => {
                let _ = t.send(&[0xff; 32]);
            }
            "oversized-read" => send(&mut t, id, Reply::Bytes(vec![7; read_len.unwrap_or(1) as usize * 256])),
            "oversized-return" => send(&mut t, id, returned(vec![0; 1 << 20], Vec::new())),
            "wrong-return-size" => send(&mut t, id, returned(vec![0; 8], Vec::new())),
            "missing-block" => send(&mut t, id, returned(vec![0; 4], Vec::new())),
            "wrong-block-size" => {
                let blocks = blocks.iter().map(|&n| vec![0; n as usize + 3]).collect();
                send(&mut t, id, returned(vec![0; 4], blocks))
            }
            "big-bytes" => send(&mut t, id, Reply::Bytes(vec![b'x'; 8 << 20])),
            other => panic!("fake_server: unknown FAKE_FAULT {other:?}"),
        }
        hang()
    }
}
