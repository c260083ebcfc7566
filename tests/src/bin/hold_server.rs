//! A client that starts a 32-bit server, prints the server's pid, and waits to be killed: used to check
//! that a server never outlives its client.
use std::io::Write;

fn main() {
    let lib = bitbridge_tests::Backend::Server32.open("edge");
    println!("{}", lib.server().pid());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(600));
}
