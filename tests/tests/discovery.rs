//! Server discovery trusts only what this user controls, the chosen server is visible, and the server
//! gets only the descriptors and environment bitbridge passes.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use bitbridge::{Arch, Error, Server, ServerOptions};
use bitbridge_tests::{out_dir, server_binary, track, Bits};

#[test]
fn a_server_binary_others_could_replace_is_refused() {
    let _check = bitbridge_tests::no_server_left();
    let dir = out_dir().join(format!("untrusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let planted = dir.join("bitbridge-server");
    std::fs::copy(server_binary(Bits::B64), &planted).unwrap();
    for mode in [0o777, 0o775, 0o757] {
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = ServerOptions::new().server_path(&planted).spawn(Arch::X86_64).unwrap_err();
        let Error::UntrustedServer { path, reason } = &e else { panic!("{mode:o}: {e}") };
        assert_eq!(path, &planted);
        assert!(reason.contains("writable by"), "{reason}");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
    }
    // Only its owner may write it: accepted, and the server says which binary it runs.
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = ServerOptions::new().server_path(&planted).spawn(Arch::X86_64).unwrap();
    track(&s);
    assert_eq!(s.path(), Some(planted.as_path()));
    s.shutdown().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    // The one found by the search is shown too.
    let s = Server::spawn(Arch::X86).unwrap();
    track(&s);
    assert!(s.path().is_some_and(|p| bitbridge::find_server(Arch::X86, None).unwrap() == p));
}

#[test]
fn the_server_gets_only_the_descriptors_bitbridge_passes() {
    let _check = bitbridge_tests::no_server_left();
    // A client that inherited descriptors 7 and 8 without CLOEXEC (opened by the shell): its server
    // must not have them.
    let mut client = Command::new("sh")
        .args(["-c", &format!("exec 7</etc/hostname 8</etc/hostname; exec {}", env!("CARGO_BIN_EXE_hold_server"))])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(client.stdout.take().unwrap()), &mut line).unwrap();
    let server: u32 = line.trim().parse().unwrap();
    let client_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", client.id()))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap().display().to_string())
        .collect();
    assert!(client_fds.iter().any(|f| f == "/etc/hostname"), "the client holds them: {client_fds:?}");
    let server_fds: Vec<String> = std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .map(|e| std::fs::read_link(e.unwrap().path()).unwrap().display().to_string())
        .collect();
    assert!(!server_fds.iter().any(|f| f == "/etc/hostname"), "the server inherited them: {server_fds:?}");
    client.kill().unwrap();
    client.wait().unwrap();
}

#[test]
fn the_servers_environment_can_be_cleared_or_filtered() {
    let _check = bitbridge_tests::no_server_left();
    let environ = |s: &Server| -> Vec<String> {
        let raw = std::fs::read(format!("/proc/{}/environ", s.pid())).unwrap();
        raw.split(|b| *b == 0).filter(|v| !v.is_empty()).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
    };
    let s = ServerOptions::new().env_remove("PATH").env("BB_MINE", "1").spawn(Arch::X86_64).unwrap();
    track(&s);
    let env = environ(&s);
    assert!(!env.iter().any(|v| v.starts_with("PATH=")), "{env:?}");
    assert!(env.iter().any(|v| v == "BB_MINE=1"), "{env:?}");
    assert!(env.iter().any(|v| v.starts_with("HOME=")) || std::env::var_os("HOME").is_none(), "{env:?}");

    let s = ServerOptions::new().env_clear().env("BB_MINE", "2").spawn(Arch::X86).unwrap();
    track(&s);
    let env = environ(&s);
    let names: Vec<&str> = env.iter().map(|v| v.split('=').next().unwrap()).collect();
    for n in &names {
        assert!(n.starts_with("BITBRIDGE_") || *n == "BB_MINE", "{n} leaked into a cleared environment: {env:?}");
    }
    assert!(env.iter().any(|v| v == "BB_MINE=2"), "{env:?}");
    // It still works.
    assert!(s.alloc(16, 8).is_ok());
}
