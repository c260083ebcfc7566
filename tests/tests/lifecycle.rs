//! The server's life: start-up diagnostics, timeouts that leave the client usable, restarts, output
//! capture, threads, and servers that never outlive their client.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use bitbridge::{Arch, CType, Error, ExitReason, Library, LibraryOptions, Server, ServerOptions, Signature, Value};
use bitbridge_tests::{fixture, fixture_in, no_server_left, process_alive, program, track, Backend, Bits};

fn int_fn() -> Signature {
    Signature::new(CType::Int)
}

#[test]
fn a_missing_dependency_is_named_and_library_dir_fixes_it() {
    let _check = no_server_left();
    for bits in [Bits::B32, Bits::B64] {
        let dep = fixture_in("dep", bits, "deps", "bbdep", &[]);
        let dep_dir = dep.parent().unwrap().to_path_buf();
        let lib = fixture_in("needs_dep", bits, "needs", "needs_dep", &["-L", dep_dir.to_str().unwrap(), "-lbbdep"]);
        let e = Library::open(&lib).unwrap_err();
        let Error::Load { message, missing, .. } = &e else { panic!("{e}") };
        assert!(message.contains("libbbdep.so"), "the loader's text: {message}");
        assert_eq!(missing, &["libbbdep.so"], "our own look at DT_NEEDED");
        assert!(e.to_string().contains("library_dir"), "the fix is named: {e}");

        assert_eq!(
            bitbridge::dependencies(&lib, std::slice::from_ref(&dep_dir)).unwrap()[0].found.as_deref(),
            Some(&*dep)
        );
        // libc resolves, and for a 32-bit library to the 32-bit libc.
        let deps = bitbridge::dependencies(&fixture("edge", bits), &[]).unwrap();
        let libc = deps.iter().find(|d| d.name == "libc.so.6").and_then(|d| d.found.clone());
        let libc = libc.unwrap_or_else(|| panic!("{deps:?}"));
        assert_eq!(bitbridge::inspect(&libc).unwrap().arch, if bits == Bits::B32 { Arch::X86 } else { Arch::X86_64 });

        let opened = LibraryOptions::new(&lib).server(ServerOptions::new().library_dir(&dep_dir)).open().unwrap();
        track(opened.server());
        let f = opened.function("twice_dep", int_fn()).unwrap();
        assert_eq!(f.call(&[]).unwrap().ret, Value::Int(8484));
    }
}

#[test]
fn a_library_that_exits_while_loading_reports_its_stderr() {
    let _check = no_server_left();
    let lib = fixture("bad_init", Bits::B32);
    let server = Server::spawn(Arch::X86).unwrap();
    track(&server);
    let e = server.load(&lib).unwrap_err();
    let Error::ServerDied { status, stderr, .. } = &e else { panic!("{e}") };
    assert_eq!(status, &ExitReason::Code(42));
    assert!(stderr.contains("bad_init: no license found"), "{stderr:?}");
}

#[test]
fn a_server_that_never_greets_hits_the_startup_timeout() {
    let _check = no_server_left();
    let silent = program("silent_server", Bits::B64, &[]);
    let opts = ServerOptions::new().server_path(&silent).startup_timeout(Duration::from_millis(200));
    let e = opts.spawn(Arch::X86_64).unwrap_err();
    let Error::StartupTimeout { pid, after } = e else { panic!("{e}") };
    assert_eq!(after, Duration::from_millis(200));
    assert!(!process_alive(pid), "the silent server was killed");
}

#[test]
fn a_timed_out_call_kills_the_server_and_a_restart_brings_it_back() {
    let _check = no_server_left();
    let opts = LibraryOptions::new(fixture("edge", Bits::B32)).server(ServerOptions::new().restart_on_failure(true));
    let lib = opts.open().unwrap();
    let first = lib.server().pid();
    track(lib.server());
    let id = lib.function("id_int", int_fn().arg(CType::Int)).unwrap();
    let hang = lib.function("hang", Signature::new(CType::Void)).unwrap();
    // No timeout by default; one for this call only.
    let e = hang.call_timeout(&[], Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e, Error::Timeout { pid } if pid == first), "{e}");
    assert!(!process_alive(first));
    // The next call starts a fresh server, with the library loaded and the function prepared again.
    assert_eq!(id.call(&[5.into()]).unwrap().ret, Value::Int(5));
    let second = lib.server().pid();
    track(lib.server());
    assert_ne!(first, second);
    // A crash, likewise.
    let crash = lib.function("crash_segv", int_fn()).unwrap();
    assert!(matches!(crash.call(&[]).unwrap_err(), Error::ServerDied { status: ExitReason::Signal(11), .. }));
    assert_eq!(id.call(&[6.into()]).unwrap().ret, Value::Int(6));
    track(lib.server());
    assert_ne!(lib.server().pid(), second);
}

#[test]
fn without_restart_a_dead_server_fails_every_later_call_clearly() {
    let _check = no_server_left();
    let lib = Backend::Server32.open("edge");
    let id = lib.function("id_int", int_fn().arg(CType::Int)).unwrap();
    let hang = lib.function("hang", Signature::new(CType::Void)).unwrap();
    assert!(matches!(hang.call_timeout(&[], Duration::from_millis(100)), Err(Error::Timeout { .. })));
    for _ in 0..3 {
        let e = id.call(&[1.into()]).unwrap_err();
        assert!(matches!(e, Error::ServerDied { status: ExitReason::Signal(9), .. }), "{e}");
    }
    assert!(!lib.server().is_alive());
}

#[test]
fn shutdown_returns_the_status_and_everything_the_library_printed() {
    let _check = no_server_left();
    let lib = Backend::Server32.open("edge");
    // 20,000 lines (~600 KB) to stdout: far more than a pipe holds, so only draining keeps it moving.
    let chatter = lib.function("chatter", Signature::new(CType::Void).arg(CType::Int)).unwrap();
    chatter.call(&[20_000.into()]).unwrap();
    let out = lib.server().shutdown().unwrap();
    assert_eq!(out.status, ExitReason::Code(0));
    assert!(out.stdout.ends_with("chatter line 20000 of 20000\n"), "{}", &out.stdout[out.stdout.len() - 100..]);
    assert!(out.stdout.len() <= 64 * 1024, "the tail is bounded");
    assert!(matches!(chatter.call(&[1.into()]), Err(Error::ShutDown)));
}

#[test]
fn a_server_started_from_a_short_lived_thread_outlives_that_thread() {
    let _check = no_server_left();
    // PR_SET_PDEATHSIG fires when the forking *thread* exits; bitbridge forks from a thread of its own.
    let lib = std::thread::spawn(|| Backend::Server32.open("edge")).join().unwrap();
    track(lib.server());
    std::thread::sleep(Duration::from_millis(50));
    let id = lib.function("id_int", int_fn().arg(CType::Int)).unwrap();
    assert_eq!(id.call(&[3.into()]).unwrap().ret, Value::Int(3));
}

#[test]
fn several_libraries_in_one_server_and_several_servers_in_one_client() {
    let _check = no_server_left();
    let server = Server::spawn(Arch::X86).unwrap();
    track(&server);
    let a = server.load(fixture("ctest", Bits::B32)).unwrap();
    let b = server.load(fixture("cpp_lib", Bits::B32)).unwrap();
    let sum = a.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
    let add = b.function("add", int_fn().arg(CType::Int).arg(CType::Int)).unwrap();
    let other = Backend::Server64.open("cpp_lib");
    let add64 = other.function("add", int_fn().arg(CType::Int).arg(CType::Int)).unwrap();
    assert_ne!(server.pid(), other.server().pid());
    assert_eq!(sum.call(&[Value::f64s([1.0, 2.0]), 2.into()]).unwrap().ret, Value::Float(3.0));
    assert_eq!(add.call(&[1.into(), 2.into()]).unwrap().ret, Value::Int(3));
    assert_eq!(add64.call(&[1.into(), 2.into()]).unwrap().ret, Value::Int(3));
    // Unloading one library leaves the other usable.
    drop(sum);
    drop(a);
    assert_eq!(add.call(&[4.into(), 2.into()]).unwrap().ret, Value::Int(6));
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn eight_threads_times_ten_thousand_calls_all_checked() {
    let _check = no_server_left();
    assert_send_sync::<Server>();
    assert_send_sync::<Library>();
    assert_send_sync::<bitbridge::Function>();
    let lib = Backend::Server32.open("cpp_lib");
    let add = Arc::new(lib.function("add", int_fn().arg(CType::Int).arg(CType::Int)).unwrap());
    let threads: Vec<_> = (0..8i64)
        .map(|t| {
            let add = add.clone();
            std::thread::spawn(move || {
                for i in 0..10_000i64 {
                    let r = add.call(&[Value::Int(t * 1_000_000), Value::Int(i)]).unwrap().ret;
                    assert_eq!(r, Value::Int(t * 1_000_000 + i), "thread {t} call {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn concurrent_workers_let_one_call_release_another() {
    let _check = no_server_left();
    let path = fixture("edge", Bits::B32);
    let opts = LibraryOptions::new(&path).server(ServerOptions::new().concurrent(2));
    let lib = opts.open().unwrap();
    track(lib.server());
    let block = Arc::new(lib.function("block_until_released", int_fn()).unwrap());
    let release = lib.function("release_blocked", Signature::new(CType::Void)).unwrap();
    let start = Arc::new(Barrier::new(2));
    let blocked = {
        let (block, start) = (block.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            block.call(&[]).unwrap().ret
        })
    };
    start.wait();
    std::thread::sleep(Duration::from_millis(50)); // let the blocking call reach the server first
                                                   // With two workers the release runs while the blocked call still occupies the other one.
    release.call(&[]).unwrap();
    assert_eq!(blocked.join().unwrap(), Value::Int(1));

    // With the default single worker the same release queues behind the blocked call, which therefore
    // never returns: its timeout proves calls run one at a time.
    let lib1 = Backend::Server32.open("edge");
    let block1 = Arc::new(lib1.function("block_until_released", int_fn()).unwrap());
    let release1 = lib1.function("release_blocked", Signature::new(CType::Void)).unwrap();
    let b = block1.clone();
    let waiter = std::thread::spawn(move || b.call_timeout(&[], Duration::from_millis(1500)));
    // Generous, so the blocking call is surely in the server first even on a loaded machine.
    std::thread::sleep(Duration::from_millis(300));
    let released = release1.call(&[]);
    assert!(matches!(waiter.join().unwrap(), Err(Error::Timeout { .. })));
    assert!(released.is_err(), "the release was queued behind the blocked call and died with the server");
}

#[test]
fn a_call_timeout_also_bounds_waiting_to_send() {
    let _check = no_server_left();
    let lib = Backend::Server32.open("edge");
    let block = Arc::new(lib.function("block_until_released", int_fn()).unwrap());
    let sleep = Arc::new(lib.function("sleep_us", int_fn().arg(CType::Int)).unwrap());
    // The single server thread is busy; a second request fills the mailbox; a third must still time out.
    let a = {
        let block = block.clone();
        std::thread::spawn(move || block.call(&[]))
    };
    std::thread::sleep(Duration::from_millis(50));
    let b = {
        let sleep = sleep.clone();
        std::thread::spawn(move || sleep.call(&[1.into()]))
    };
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    let e = sleep.call_timeout(&[1.into()], Duration::from_millis(100)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    assert!(a.join().unwrap().is_err());
    assert!(b.join().unwrap().is_err());
}
