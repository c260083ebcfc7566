//! Callbacks from several client threads at once: each thread's calls call back into its own closure.

use std::sync::Arc;

use bitbridge::{CType, LibraryOptions, ServerOptions, Signature, Value};
use bitbridge_tests::{fixture, no_server_left, watchdog, Bits};

#[test]
fn callbacks_from_eight_threads_at_once() {
    watchdog();
    let _guard = no_server_left();
    for bits in [Bits::B32, Bits::B64] {
        let lib = LibraryOptions::new(fixture("events", bits)).server(ServerOptions::new()).open().unwrap();
        let sig = Signature::new(CType::Int).arg(CType::Int);
        let maybe_call = Arc::new(
            lib.function("maybe_call", Signature::new(CType::Int).arg(CType::fn_ptr(sig.clone())).arg(CType::Int))
                .unwrap(),
        );
        let threads: Vec<_> = (0..8i64)
            .map(|k| {
                let server = lib.server().clone();
                let f = maybe_call.clone();
                let sig = sig.clone();
                std::thread::spawn(move || {
                    let cb = server.callback(sig, move |a| Value::Int(a[0].as_i64().unwrap() + k)).unwrap();
                    for i in 0..500 {
                        let r = f.call(&[cb.value(), Value::Int(i)]).unwrap().ret;
                        assert_eq!(r, Value::Int(i + k));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
