//! A client whose library forks a sleeping child: prints the server's and the child's pids, then exits
//! without shutting anything down (`exit`, or SIGKILL to itself with `kill` as its argument). Used to
//! check that processes a library starts never outlive the client.
use std::io::Write;

use bitbridge::{CType, Signature};

fn main() {
    let how = std::env::args().nth(1).unwrap_or_default();
    let lib = bitbridge_tests::Backend::Server32.open("forker");
    let spawn = lib.function("spawn_sleeper", Signature::new(CType::Int).arg(CType::Int)).unwrap();
    let child = spawn.call(&[0.into()]).unwrap().ret.as_i64().unwrap();
    println!("{} {child}", lib.server().pid());
    std::io::stdout().flush().unwrap();
    if how == "kill" {
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    std::process::exit(0);
}
