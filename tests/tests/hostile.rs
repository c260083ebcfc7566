//! A hostile or broken server: a fake one (`tests/src/bin/fake_server.rs`) greets, then misbehaves on
//! command. Every fault ends in a typed error within its deadline, the client's memory stays small
//! (asserted on the process's peak RSS, VmHWM), and error messages quote a bounded prefix of what the
//! peer sent.

use std::time::{Duration, Instant};

use bitbridge::{Arch, CType, Error, Server, ServerOptions, Signature, Value};

const MIB: u64 = 1 << 20;

/// The peak resident set of this test process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Memory stays small: far below the 1 GiB a hostile length announces (several cases run at once in
/// this process, the largest legitimately receiving 8 MiB).
fn assert_small_memory(case: &str) {
    let peak = peak_rss();
    eprintln!("{case}: peak RSS of the test process so far {} MiB", peak / MIB);
    assert!(peak < 64 * MIB, "{case}: peak RSS {} MiB", peak / MIB);
}

fn fake(fault: &str, shm: bool) -> ServerOptions {
    ServerOptions::new()
        .server_path(env!("CARGO_BIN_EXE_fake_server"))
        .env("FAKE_FAULT", fault)
        .shared_memory(shm)
        .startup_timeout(Duration::from_millis(500))
}

fn spawn(fault: &str, shm: bool, call_timeout: Option<Duration>) -> Server {
    let mut o = fake(fault, shm);
    if let Some(t) = call_timeout {
        o = o.call_timeout(t);
    }
    let s = o.spawn(Arch::X86_64).unwrap_or_else(|e| panic!("{fault}: {e}"));
    bitbridge_tests::track(&s);
    s
}

fn timed<T>(case: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let r = f();
    eprintln!("{case}: reported after {:?}", start.elapsed());
    r
}

#[test]
fn a_broken_greeting_is_a_startup_error() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        let e = timed("partial greeting", || fake("partial-greeting", shm).spawn(Arch::X86_64).unwrap_err());
        assert!(matches!(e, Error::StartupTimeout { after, .. } if after == Duration::from_millis(500)), "{e}");
        let e = timed("huge greeting", || fake("huge-greeting", shm).spawn(Arch::X86_64).unwrap_err());
        assert!(
            matches!(&e, Error::Handshake(m) if m.contains("200000000 bytes") && m.contains("at most 4096")),
            "{e}"
        );
        assert_small_memory("greetings");
    }
}

#[test]
fn a_frame_that_stops_part_way_respects_the_call_timeout() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        for fault in ["silent", "partial-frame"] {
            let s = spawn(fault, shm, Some(Duration::from_millis(300)));
            let e = timed(&format!("{fault}, shm={shm}"), || s.read(0x1000, 16).unwrap_err());
            assert!(matches!(e, Error::Timeout { .. }), "{fault}: {e}");
        }
        // A length of almost 1 GiB announced for a reply that may be that long (a returned string),
        // then 10 bytes: memory follows the bytes received, and the deadline holds.
        let s = spawn("huge-length", shm, Some(Duration::from_millis(300)));
        let lib = s.load("/fake/libfake.so").unwrap();
        let f = lib.function("f", Signature::new(CType::CStr)).unwrap();
        let e = timed(&format!("huge length for a string, shm={shm}"), || f.call(&[]).unwrap_err());
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_small_memory("huge length");
    }
}

#[test]
fn a_frame_that_stops_part_way_without_a_call_timeout_ends_after_frame_stall() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        let s = spawn("partial-frame", shm, None);
        let start = Instant::now();
        let e = timed(&format!("partial frame, no call timeout, shm={shm}"), || s.read(0x1000, 16).unwrap_err());
        assert!(matches!(&e, Error::Protocol(m) if m.contains("stopped part-way")), "{e}");
        assert!(start.elapsed() >= bitbridge::FRAME_STALL);
    }
}

#[test]
fn replies_larger_than_the_request_allows_are_refused_naming_both_sizes() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        // Announced lengths beyond what a 16-byte read can produce: refused at the header.
        for fault in ["huge-length", "over-limit"] {
            let s = spawn(fault, shm, None);
            let e = timed(&format!("{fault} for a read, shm={shm}"), || s.read(0x1000, 16).unwrap_err());
            let Error::Protocol(m) = &e else { panic!("{fault}: {e}") };
            assert!(m.contains("at most 65552"), "{fault}: {m}");
        }
        let s = spawn("oversized-read", shm, None);
        let e = timed("oversized read", || s.read(0x1000, 16).unwrap_err());
        assert!(matches!(&e, Error::Protocol(m) if m.contains("a read of 16 bytes with 4096 bytes")), "{e}");

        let s = spawn("oversized-return", shm, None);
        let lib = s.load("/fake/libfake.so").unwrap();
        let f = lib.function("f", Signature::new(CType::Int)).unwrap();
        let e = timed("1 MiB return value for an int", || f.call(&[]).unwrap_err());
        assert!(matches!(&e, Error::Protocol(m) if m.contains("at most 65540")), "{e}");

        let s = spawn("wrong-return-size", shm, None);
        let lib = s.load("/fake/libfake.so").unwrap();
        let f = lib.function("f", Signature::new(CType::Int)).unwrap();
        let e = timed("8-byte return value for an int", || f.call(&[]).unwrap_err());
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("returns `int`, 4 bytes, but the server sent 8 bytes")),
            "{e}"
        );
        assert!(!s.is_alive(), "a server that broke the protocol is ended");
        assert_small_memory("oversized replies");
    }
}

#[test]
fn malformed_blocks_wrong_ids_and_garbage_are_protocol_errors() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        let out = Signature::new(CType::Int).arg_out(CType::ptr(CType::Int));
        let s = spawn("missing-block", shm, None);
        let f = s.load("/fake/libfake.so").unwrap().function("f", out.clone()).unwrap();
        let e = timed("missing block", || f.call(&[Value::Zeros(1)]).unwrap_err());
        assert!(matches!(&e, Error::Protocol(m) if m.contains("0 blocks came back from `f`, 1 were sent")), "{e}");

        let s = spawn("wrong-block-size", shm, None);
        let f = s.load("/fake/libfake.so").unwrap().function("f", out).unwrap();
        let e = timed("wrong block size", || f.call(&[Value::Zeros(1)]).unwrap_err());
        assert!(
            matches!(&e, Error::Protocol(m) if m.contains("block 0 of `f` came back with 7 bytes, 4 were sent")),
            "{e}"
        );

        for (fault, says) in [
            ("unsent-reply", "reply to request 999999, which was never sent"),
            ("wrong-id", "which was never sent"),
            ("malformed", ""),
        ] {
            let s = spawn(fault, shm, None);
            s.load("/fake/libfake.so").unwrap();
            let e = timed(&format!("{fault}, shm={shm}"), || s.read(0x1000, 16).unwrap_err());
            assert!(matches!(&e, Error::Protocol(m) if m.contains(says)), "{fault}: {e}");
            assert!(!s.is_alive());
        }
        assert_small_memory("malformed");
    }
}

#[test]
fn an_error_quotes_only_a_bounded_prefix_of_what_the_peer_sent() {
    let _check = bitbridge_tests::no_server_left();
    for shm in [true, false] {
        let s = spawn("big-bytes", shm, None);
        let f = s.load("/fake/libfake.so").unwrap().function("f", Signature::new(CType::CStr)).unwrap();
        let e = timed("8 MiB of bytes answering a call", || f.call(&[]).unwrap_err());
        let text = e.to_string();
        assert!(matches!(&e, Error::Protocol(m) if m.starts_with("unexpected reply Bytes(")), "{text:.300}");
        assert!(text.len() < 300, "{} characters", text.len());
        assert_small_memory("big bytes");
    }
}
