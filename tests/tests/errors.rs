//! Bad input gets a clear, typed error naming what was wrong, and loses nothing: missing files, wrong
//! architectures, missing servers, wrong signatures, missing symbols, malformed frames, libraries that
//! crash or hang, clients that die.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitbridge::{Arch, CType, Error, ExitReason, Library, LibraryOptions, Server, ServerOptions, Signature, Value};
use bitbridge_proto::{msg, Frame, Hello, Request};
use bitbridge_tests::{fixture, out_dir, process_alive, server_binary, Backend, Bits, BACKENDS};

#[test]
fn missing_file_text_file_and_foreign_architecture() {
    let _check = bitbridge_tests::no_server_left();
    let e = Library::open("/nonexistent/libnothing.so").unwrap_err();
    assert!(matches!(&e, Error::LibraryNotFound { path, .. } if path.ends_with("libnothing.so")), "{e}");

    // Debian's libm.so is a linker script, not a library.
    let script = out_dir().join("not-a-library.so");
    std::fs::write(&script, "/* GNU ld script */\nGROUP ( libm.so.6 )\n").unwrap();
    let e = Library::open(&script).unwrap_err();
    assert!(matches!(e, Error::NotALibrary { .. }), "{e}");
    assert!(e.to_string().contains("not a shared library"), "{e}");

    // A well-formed ELF header for AArch64: the error says what it is and what would be needed.
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1; // version
    elf[16] = 3; // ET_DYN
    elf[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    elf[20] = 1;
    elf[52] = 64; // e_ehsize
    let arm = out_dir().join("libarm64.so");
    std::fs::write(&arm, &elf).unwrap();
    let e = Library::open(&arm).unwrap_err();
    assert!(matches!(&e, Error::UnsupportedArchitecture { found, .. } if found.contains("Aarch64")), "{e}");
}

#[test]
fn server_missing_or_built_for_the_wrong_target() {
    let _check = bitbridge_tests::no_server_left();
    let lib = fixture("edge", Bits::B32);
    let opts = LibraryOptions::new(&lib).server(ServerOptions::new().server_path("/nonexistent/bitbridge-server"));
    let e = opts.open().unwrap_err();
    let Error::ServerNotFound { arch, searched, hint, .. } = &e else { panic!("{e}") };
    assert_eq!(*arch, Arch::X86);
    assert_eq!(searched.len(), 1);
    assert!(hint.contains("cargo build --release -p bitbridge-server --target i686-unknown-linux-gnu"), "{hint}");

    // The 64-bit server offered for a 32-bit library is refused before it is started.
    let wrong = server_binary(Bits::B64);
    let e = LibraryOptions::new(&lib).server(ServerOptions::new().server_path(&wrong)).open().unwrap_err();
    assert!(matches!(&e, Error::ServerNotFound { hint, .. } if hint.contains("is built for x86_64")), "{e}");

    // A program that is not a bitbridge server: it exits without greeting.
    let e = ServerOptions::new().server_path("/bin/true").spawn(Arch::X86_64).unwrap_err();
    assert!(matches!(&e, Error::ServerDied { status: ExitReason::Code(0), .. }), "{e}");
}

#[test]
fn load_failures_and_missing_symbols() {
    let _check = bitbridge_tests::no_server_left();
    // A 64-bit library in a 32-bit server: the loader's own words come back.
    let server = Server::spawn(Arch::X86).unwrap();
    bitbridge_tests::track(&server);
    let e = server.load(fixture("edge", Bits::B64)).unwrap_err();
    let Error::Load { message, .. } = &e else { panic!("{e}") };
    assert!(message.contains("wrong ELF class"), "{message}");
    // The server is still usable afterwards.
    let lib = server.load(fixture("edge", Bits::B32)).unwrap();

    let e = lib.function("no_such_function", Signature::new(CType::Int)).unwrap_err();
    assert!(
        matches!(&e, Error::SymbolNotFound { symbol, message } if symbol == "no_such_function" && message.contains("undefined symbol")),
        "{e}"
    );
    assert!(lib.symbol("id_int").unwrap() != 0);
}

#[test]
fn wrong_signatures_and_arguments() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let e = lib.function("id_int", Signature::new(CType::Int).arg(CType::Void)).unwrap_err();
        assert!(matches!(&e, Error::Signature { message, .. } if message.contains("void")), "{e}");
        let e = lib.function("id_int", Signature::new(CType::Int).arg(CType::array(CType::Int, 4))).unwrap_err();
        assert!(matches!(&e, Error::Signature { message, .. } if message.contains("pointer")), "{e}");
        let e =
            lib.function("id_int", Signature::new(CType::Int).arg(CType::structure::<&str>("Empty", []))).unwrap_err();
        assert!(matches!(&e, Error::Signature { .. }), "{e}");

        let f = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap();
        let e = f.call(&[]).unwrap_err();
        assert!(
            matches!(&e, Error::Argument { source, .. } if source.to_string().contains("takes 1 argument, 0 were given")),
            "{e:?}"
        );
        let e = f.call(&[Value::from("seven")]).unwrap_err();
        let Error::Argument { function, source } = &e else { panic!("{e}") };
        assert_eq!(function, "id_int");
        assert_eq!(source.to_string(), "argument 1: expected an integer for `int`, got a string");
        let buf = CType::structure("Buf", [("n", CType::Int), ("data", CType::ptr(CType::Int))]);
        let g = lib.function("buf_sum", Signature::new(CType::Int).arg(CType::ptr(buf))).unwrap();
        let e = g.call(&[Value::Struct(vec![2.into(), Value::Array(vec![1.into(), 2.5.into()])])]).unwrap_err();
        let Error::Argument { source, .. } = &e else { panic!("{e}") };
        assert_eq!(source.path, "argument 1 -> .data -> [1]", "{source}");
        // Nothing was lost: the function still works.
        assert_eq!(f.call(&[5.into()]).unwrap().ret, Value::Int(5), "{b:?}");
    }
}

/// Starts the server binary by hand, as a client would, and returns our end and its greeting.
fn raw_server(bits: Bits) -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(server_binary(bits))
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (child, ours)
}

fn read_frame(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut f = (bytes.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(bytes);
    f
}

#[test]
fn malformed_frames_are_refused_and_the_server_exits_cleanly() {
    let _check = bitbridge_tests::no_server_left();
    for bits in [Bits::B32, Bits::B64] {
        // Garbage in a well-formed frame: a protocol error reply, then the connection closes.
        let (mut child, mut s) = raw_server(bits);
        let hello: Hello = msg::decode(&read_frame(&mut s).unwrap()).unwrap();
        assert_eq!(hello.pointer_width, if bits == Bits::B32 { 4 } else { 8 });
        s.write_all(&frame(&[0xff; 13])).unwrap();
        let reply: Frame = msg::decode(&read_frame(&mut s).unwrap()).unwrap();
        let Frame::Reply { reply: Err(e), .. } = reply else { panic!("{reply:?}") };
        assert_eq!(e.kind, bitbridge_proto::ErrorKind::Protocol);
        assert!(read_frame(&mut s).is_none(), "the server closes after a protocol error");
        assert!(child.wait().unwrap().success());

        // Out of order: a reply, when the server has asked nothing.
        let (mut child, mut s) = raw_server(bits);
        read_frame(&mut s).unwrap();
        let mut stray = Vec::new();
        msg::encode(&Frame::Reply { id: 77, reply: Ok(bitbridge_proto::Reply::Done) }, &mut stray);
        s.write_all(&frame(&stray)).unwrap();
        let reply: Frame = msg::decode(&read_frame(&mut s).unwrap()).unwrap();
        assert!(format!("{reply:?}").contains("no request is pending"), "{reply:?}");
        assert!(read_frame(&mut s).is_none());
        assert!(child.wait().unwrap().success());

        // A length prefix above the maximum: refused before allocating; the server exits with status 3.
        let (mut child, mut s) = raw_server(bits);
        read_frame(&mut s).unwrap();
        s.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(3));
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(err.contains("exceeds the maximum"), "{err}");

        // A frame cut short by the client going away.
        let (mut child, mut s) = raw_server(bits);
        read_frame(&mut s).unwrap();
        s.write_all(&100u32.to_le_bytes()).unwrap();
        s.write_all(&[1, 2, 3]).unwrap();
        drop(s);
        assert_eq!(child.wait().unwrap().code(), Some(3));

        // A type nested a million levels deep is refused, not a stack overflow.
        let (mut child, mut s) = raw_server(bits);
        read_frame(&mut s).unwrap();
        let mut deep = Vec::new();
        msg::encode(&Frame::Request { id: 1, request: Request::Shutdown }, &mut deep);
        let mut body = Vec::new();
        body.extend_from_slice(&0u32.to_le_bytes()); // Frame::Request
        body.extend_from_slice(&1u64.to_le_bytes()); // id
        body.extend_from_slice(&2u32.to_le_bytes()); // Request::Prepare
        body.extend_from_slice(&0u32.to_le_bytes()); // lib
        body.extend_from_slice(&1u32.to_le_bytes()); // func
        body.extend_from_slice(&1u64.to_le_bytes()); // symbol length
        body.push(b'f');
        for _ in 0..1_000_000 {
            body.extend_from_slice(&27u32.to_le_bytes()); // CType::Pointer(...)
        }
        s.write_all(&frame(&body)).unwrap();
        let reply: Frame = msg::decode(&read_frame(&mut s).unwrap()).unwrap();
        assert!(format!("{reply:?}").contains("nests too deeply"), "{reply:?}");
        assert!(child.wait().unwrap().success());
    }
}

#[test]
fn a_library_that_crashes_is_an_error_with_the_signal_and_stderr() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("edge");
        let pid = lib.server().pid();
        let f = lib.function("say_and_crash", Signature::new(CType::Void)).unwrap();
        let t = Instant::now();
        let e = f.call(&[]).unwrap_err();
        let took = t.elapsed();
        let Error::ServerDied { pid: p, status, stderr } = &e else { panic!("{e}") };
        assert_eq!((*p, status), (pid, &ExitReason::Signal(11)), "{b:?}");
        assert!(stderr.contains("edge: about to crash"), "{stderr:?}");
        assert!(e.to_string().contains("killed by signal 11 (SIGSEGV)"), "{e}");
        assert!(took < Duration::from_secs(2), "reported in {took:?}");
        // Every later request fails the same way, at once.
        let again = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap_err();
        assert!(matches!(again, Error::ServerDied { .. }));
        assert!(!process_alive(pid));

        for (name, args, want) in [
            ("crash_abort", vec![], ExitReason::Signal(6)),
            ("crash_segv", vec![], ExitReason::Signal(11)),
            ("crash_exit", vec![Value::Int(7)], ExitReason::Code(7)),
        ] {
            // A fresh server for the same library after each death.
            let lib = b.open("edge");
            let params =
                if args.is_empty() { Signature::new(CType::Int) } else { Signature::new(CType::Void).arg(CType::Int) };
            let e = lib.function(name, params).unwrap().call(&args).unwrap_err();
            assert!(matches!(&e, Error::ServerDied { status, .. } if *status == want), "{name}: {e}");
        }
    }
}

#[test]
fn a_hung_library_times_out_and_the_server_is_killed() {
    let _check = bitbridge_tests::no_server_left();
    let opts = LibraryOptions::new(fixture("edge", Bits::B32))
        .server(ServerOptions::new().call_timeout(Duration::from_millis(300)));
    let lib = opts.open().unwrap();
    bitbridge_tests::track(lib.server());
    let pid = lib.server().pid();
    let ok = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap();
    assert_eq!(ok.call(&[1.into()]).unwrap().ret, Value::Int(1));
    let hang = lib.function("hang", Signature::new(CType::Void)).unwrap();
    let t = Instant::now();
    let e = hang.call(&[]).unwrap_err();
    assert!(matches!(e, Error::Timeout { pid: p } if p == pid), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(!process_alive(pid), "the hung server was killed");
    let e = ok.call(&[1.into()]).unwrap_err();
    assert!(matches!(e, Error::ServerDied { status: ExitReason::Signal(9), .. }), "{e}");
}

#[test]
fn a_server_never_outlives_its_client() {
    let _check = bitbridge_tests::no_server_left();
    let mut client = Command::new(env!("CARGO_BIN_EXE_hold_server")).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    let mut out = client.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let server: u32 = line.trim().parse().expect("the client prints its server's pid");
    assert!(process_alive(server));
    client.kill().unwrap(); // SIGKILL: no destructor runs in the client
    client.wait().unwrap();
    let t = Instant::now();
    while process_alive(server) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!process_alive(server), "server {server} outlived its killed client");
}

#[test]
fn shutdown_returns_what_the_library_printed() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("edge");
    let server = lib.server().clone();
    let e = lib.function("say_and_crash", Signature::new(CType::Void)).unwrap();
    drop(e);
    let out = server.shutdown().unwrap();
    assert_eq!(out.status, ExitReason::Code(0));
    let e = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap_err();
    assert!(matches!(e, Error::ShutDown), "{e}");
}

#[test]
fn oversized_values_are_refused_before_anything_is_sent() {
    let _check = bitbridge_tests::no_server_left();
    for b in BACKENDS {
        let lib = b.open("edge");
        let server = lib.server();
        // Reading more than one reply can carry: an error from the server, which stays up.
        let e = server.read(0x1000, 1 << 62).unwrap_err();
        assert!(matches!(&e, Error::Remote(r) if r.message.contains("more than one reply can carry")), "{e}");
        // A buffer whose size overflows: refused in the client.
        let huge = CType::ptr(CType::array(CType::Double, 1 << 31));
        let f = lib
            .function("get_two", Signature::new(CType::Void).arg_out(huge).arg_out(CType::ptr(CType::Double)))
            .unwrap();
        let e = f.call(&[Value::Zeros(1 << 30), Value::Zeros(1)]).unwrap_err();
        let msg = match &e {
            Error::Argument { source, .. } => source.to_string(),
            other => panic!("{other}"),
        };
        assert!(
            msg.contains("more than one block of memory may hold")
                || msg.contains("larger than the target's address space"),
            "{msg}"
        );
        // The Display carries the cause (where and why), not only "bad argument".
        assert!(e.to_string().starts_with("bad argument to `get_two`: argument 1: "), "{e}");
        assert!(!msg.contains("`memory of"), "{msg}");
        // Types nested deeper than the server decodes: refused when declared.
        let mut deep = CType::Int;
        for _ in 0..70 {
            deep = CType::ptr(deep);
        }
        let e = lib.function("id_ptr", Signature::new(CType::void_ptr()).arg(deep)).unwrap_err();
        assert!(matches!(e, Error::Signature { .. }), "{e}");
        assert!(server.is_alive(), "{b:?}");
        let id = lib.function("id_int", Signature::new(CType::Int).arg(CType::Int)).unwrap();
        assert_eq!(id.call(&[3.into()]).unwrap().ret, Value::Int(3));
    }
}
