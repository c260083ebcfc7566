//! A client that starts a server, prints the server's pid, and waits to be killed: used to check
//! that a server never outlives its client. With the argument `windows32` or `windows64`, the server
//! is a Windows one under Wine, and the client keeps it busy in a call that never returns (`hang`), so
//! only the parent-death signal can end it.
use std::io::Write;

fn main() {
    let lib = match std::env::args().nth(1).as_deref() {
        Some("windows32") => bitbridge_tests::open_windows("windll", bitbridge_tests::Bits::B32, false),
        Some("windows64") => bitbridge_tests::open_windows("windll", bitbridge_tests::Bits::B64, false),
        _ => bitbridge_tests::Backend::Server32.open("edge"),
    };
    println!("{}", lib.server().pid());
    std::io::stdout().flush().unwrap();
    if lib.server().target().os == bitbridge::Os::Windows {
        let hang = lib.function("hang", bitbridge::Signature::new(bitbridge::CType::Void)).unwrap();
        std::thread::spawn(move || hang.call(&[]));
    }
    std::thread::sleep(std::time::Duration::from_secs(600));
}
