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

/// A callback that waits for another client thread's plain call, on a server with two workers: the
/// worker waiting for the callback's reply reads that call and queues it for the other worker, which
/// must run it (queued after the reader role was freed, a woken worker could find the queue empty,
/// block reading, and the call, the callback and this test would wait for each other forever).
#[test]
fn a_callback_waiting_for_another_threads_call_on_two_workers() {
    watchdog();
    let _guard = no_server_left();
    let lib =
        LibraryOptions::new(fixture("events", Bits::B32)).server(ServerOptions::new().concurrent(2)).open().unwrap();
    let sig = Signature::new(CType::Int).arg(CType::Int);
    let maybe_call =
        lib.function("maybe_call", Signature::new(CType::Int).arg(CType::fn_ptr(sig.clone())).arg(CType::Int)).unwrap();
    let plain = Arc::new(
        lib.function(
            "maybe_call",
            Signature::new(CType::Int).arg(CType::Pointer(Box::new(CType::Void))).arg(CType::Int),
        )
        .unwrap(),
    );
    let cb = lib
        .server()
        .callback(sig, move |a| {
            // Another thread's call, made and finished while this callback holds a worker.
            let plain = plain.clone();
            let r = std::thread::spawn(move || plain.call(&[Value::NULL, Value::Int(0)]).unwrap().ret).join().unwrap();
            assert_eq!(r, Value::Int(-1));
            Value::Int(a[0].as_i64().unwrap() * 2)
        })
        .unwrap();
    for i in 0..300 {
        assert_eq!(maybe_call.call(&[cb.value(), Value::Int(i)]).unwrap().ret, Value::Int(2 * i));
    }
}
