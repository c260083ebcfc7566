//! Every wait has a deadline: loading a library whose constructor never returns ends at the load
//! timeout (30 s by default, whatever the call timeout), with the server killed.

use std::time::{Duration, Instant};

use bitbridge::{Error, LibraryOptions, ServerOptions, DEFAULT_LOAD_TIMEOUT};
use bitbridge_tests::{fixture, process_alive, Bits};

#[test]
fn a_constructor_that_never_returns_ends_at_the_load_timeout() {
    let _check = bitbridge_tests::no_server_left();
    assert_eq!(DEFAULT_LOAD_TIMEOUT, Duration::from_secs(30));
    for bits in [Bits::B32, Bits::B64] {
        for shm in [true, false] {
            let path = fixture("spin_init", bits);
            let opts = ServerOptions::new().shared_memory(shm).load_timeout(Duration::from_millis(300));
            let start = Instant::now();
            let e = LibraryOptions::new(&path).server(opts).open().unwrap_err();
            let took = start.elapsed();
            let Error::LoadTimeout { path: p, pid, after } = &e else { panic!("{bits:?}: {e}") };
            assert!(p.ends_with("libspin_init32.so") || p.ends_with("libspin_init64.so"), "{e}");
            assert_eq!(*after, Duration::from_millis(300));
            assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
            assert!(!process_alive(*pid), "the server stuck in the constructor was killed");
            eprintln!("{bits:?} shm={shm}: LoadTimeout after {took:?}");
        }
    }
}
