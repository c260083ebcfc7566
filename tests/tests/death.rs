//! Death is learned from the process, not from the socket: a library that forks a child holding the
//! server's descriptors cannot hide the server's death, and the processes a library starts never
//! outlive the server or the client.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bitbridge::{CType, Error, ExitReason, Signature};
use bitbridge_tests::{process_alive, Backend};

/// Waits up to 5 s for a process to be gone (exited and reaped, or a zombie nobody needs).
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn kill(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

#[test]
fn a_forked_child_holding_the_connection_does_not_hide_the_servers_death() {
    let _check = bitbridge_tests::no_server_left();
    for b in [Backend::Server32, Backend::Server32Socket, Backend::Server64, Backend::Server64Socket] {
        for leave_group in [false, true] {
            let lib = b.open("forker");
            let spawn = lib.function("spawn_sleeper", Signature::new(CType::Int).arg(CType::Int)).unwrap();
            let crash = lib.function("crash", Signature::new(CType::Void)).unwrap();
            let child = spawn.call(&[i64::from(leave_group).into()]).unwrap().ret.as_i64().unwrap() as u32;
            assert!(process_alive(child));
            let pid = lib.server().pid();
            let start = Instant::now();
            let e = crash.call(&[]).unwrap_err();
            let took = start.elapsed();
            assert!(matches!(&e, Error::ServerDied { status: ExitReason::Signal(11), .. }), "{b:?}: {e}");
            eprintln!("{b:?}, child leaves the group: {leave_group}: ServerDied after {took:?}");
            // Reaped: not even a zombie is left.
            assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "{b:?}: the server {pid} was not reaped");
            if leave_group {
                // A child that left the group (a daemon) is beyond the guarantee; the death was still seen.
                assert!(process_alive(child));
                kill(child);
            } else {
                assert!(gone_soon(child), "{b:?}: the library's child {child} outlived its server");
            }
        }
    }
}

#[test]
fn the_librarys_children_end_with_a_server_that_shuts_down() {
    let _check = bitbridge_tests::no_server_left();
    let lib = Backend::Server32.open("forker");
    let spawn = lib.function("spawn_sleeper", Signature::new(CType::Int).arg(CType::Int)).unwrap();
    let child = spawn.call(&[0.into()]).unwrap().ret.as_i64().unwrap() as u32;
    let out = lib.server().shutdown().unwrap();
    assert_eq!(out.status, ExitReason::Code(0));
    assert!(gone_soon(child), "the library's child {child} outlived a server that shut down");
}

#[test]
fn the_librarys_children_end_with_a_client_that_exits_or_is_killed() {
    let _check = bitbridge_tests::no_server_left();
    for how in ["exit", "kill"] {
        let mut client =
            Command::new(env!("CARGO_BIN_EXE_fork_client")).arg(how).stdout(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(client.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let pids: Vec<u32> = line.split_whitespace().map(|p| p.parse().unwrap()).collect();
        let [server, child] = pids[..] else { panic!("{line}") };
        client.wait().unwrap();
        assert!(gone_soon(server), "{how}: the server {server} outlived its client");
        assert!(gone_soon(child), "{how}: the library's child {child} outlived the client");
    }
}
