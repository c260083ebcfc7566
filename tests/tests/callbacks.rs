//! Callbacks through the 32- and 64-bit servers: qsort's comparison from the system's libc, events
//! fired from a library's own thread (during a call and later), structs by value and arrays behind
//! pointers, nested re-entrant calls, NULL callbacks, out pointers, and panics.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bitbridge::{Arch, CType, Error, Function, LibraryOptions, ServerOptions, Signature, Value};
use bitbridge_tests::{no_server_left, track, Backend};

const SERVERS: [Backend; 4] = [Backend::Server32, Backend::Server32Socket, Backend::Server64, Backend::Server64Socket];

/// `int start_events(void (*)(int), int n)` and `int join_events(void)` of fixtures/events.c.
fn event_functions(lib: &bitbridge::Library) -> (Function, Function) {
    let sig = Signature::new(CType::Int).arg(CType::fn_ptr(Signature::new(CType::Void))).arg(CType::Int);
    (lib.function("start_events", sig).unwrap(), lib.function("join_events", Signature::new(CType::Int)).unwrap())
}

#[test]
fn qsort_from_the_system_libc_with_a_comparison_callback() {
    let _check = no_server_left();
    for b in SERVERS {
        let socket = matches!(b, Backend::Server32Socket | Backend::Server64Socket);
        let libc = LibraryOptions::new("libc.so.6")
            .arch(if b.is_32() { Arch::X86 } else { Arch::X86_64 })
            .server(ServerOptions::new().shared_memory(!socket))
            .open()
            .unwrap();
        track(libc.server());
        let calls = Arc::new(AtomicI64::new(0));
        let seen = calls.clone();
        let cmp = libc
            .server()
            .callback(Signature::new(CType::Int).arg(CType::ptr(CType::Int)).arg(CType::ptr(CType::Int)), move |a| {
                seen.fetch_add(1, Ordering::Relaxed);
                Value::Int((a[0].as_i64().unwrap() - a[1].as_i64().unwrap()).signum())
            })
            .unwrap();
        let sig = Signature::new(CType::Void)
            .arg_inout(CType::ptr(CType::Int))
            .arg(CType::SizeT)
            .arg(CType::SizeT)
            .arg(CType::fn_ptr(Signature::new(CType::Int)));
        let qsort = libc.function("qsort", sig).unwrap();
        let r = qsort.call(&[Value::ints([5, -3, 9, 1, 7, 1]), 6.into(), 4.into(), cmp.value()]).unwrap();
        assert_eq!(r.out(0), Some(&Value::ints([-3, 1, 1, 5, 7, 9])), "{b:?}");
        assert!(calls.load(Ordering::Relaxed) >= 5);
    }
}

#[test]
fn events_from_the_librarys_own_thread_during_a_call_and_later() {
    let _check = no_server_left();
    for b in SERVERS {
        let lib = b.open("events");
        let got = Arc::new(AtomicI64::new(0));
        let g = got.clone();
        let cb = lib
            .server()
            .callback(Signature::new(CType::Void).arg(CType::Int), move |a| {
                g.fetch_add(1 + a[0].as_i64().unwrap(), Ordering::SeqCst);
                Value::Void
            })
            .unwrap();
        let (start, join) = event_functions(&lib);
        // Fired while the client waits in join_events: run on the waiting thread.
        assert_eq!(start.call(&[cb.value(), 5.into()]).unwrap().ret, Value::Int(0));
        assert_eq!(join.call(&[]).unwrap().ret, Value::Int(0));
        assert_eq!(got.load(Ordering::SeqCst), 15, "{b:?}"); // 1+2+3+4+5
                                                             // Fired after start_events returned, with no call in flight: run on bitbridge's callback thread.
        got.store(0, Ordering::SeqCst);
        start.call(&[cb.value(), 4.into()]).unwrap();
        let t = Instant::now();
        while got.load(Ordering::SeqCst) < 10 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(got.load(Ordering::SeqCst), 10, "{b:?}");
        join.call(&[]).unwrap();
        assert!(cb.take_errors().is_empty());
    }
}

#[test]
fn structs_by_value_arrays_nesting_null_and_out_pointers() {
    let _check = no_server_left();
    let pt = CType::structure("Pt", [("x", CType::Double), ("y", CType::Double)]);
    for b in SERVERS {
        let lib = b.open("events");
        let server = lib.server();
        // A struct by value and a pointer to an array of three doubles.
        let f = server
            .callback(
                Signature::new(CType::Double)
                    .arg(pt.clone())
                    .arg(CType::ptr(CType::array(CType::Double, 3)))
                    .arg(CType::Int),
                |a| {
                    let p = a[0].as_slice().unwrap()[0].as_f64().unwrap();
                    let sum: f64 = a[1].to_f64_vec().unwrap().iter().sum();
                    Value::Float(p * 100.0 + sum + a[2].as_f64().unwrap())
                },
            )
            .unwrap();
        let apply = lib
            .function(
                "apply_pt",
                Signature::new(CType::Double).arg(CType::fn_ptr(Signature::new(CType::Double))).arg(pt.clone()),
            )
            .unwrap();
        let r = apply.call(&[f.value(), Value::Struct(vec![2.5.into(), 0.0.into()])]).unwrap();
        assert_eq!(r.ret, Value::Float(250.0 + 6.0 + 3.0), "{b:?}");

        // Nested: the callback calls back into the library, which calls the callback again.
        let nest: Arc<OnceLock<(Function, Value)>> = Arc::new(OnceLock::new());
        let inner = nest.clone();
        let cb = server
            .callback(Signature::new(CType::Int).arg(CType::Int), move |a| {
                let d = a[0].as_i64().unwrap();
                if d == 0 {
                    return Value::Int(0);
                }
                let (f, me) = inner.get().unwrap();
                f.call(&[me.clone(), Value::Int(d - 1)]).unwrap().ret
            })
            .unwrap();
        let nest_fn = lib
            .function("nest", Signature::new(CType::Int).arg(CType::fn_ptr(Signature::new(CType::Int))).arg(CType::Int))
            .unwrap();
        assert!(nest.set((nest_fn, cb.value())).is_ok());
        let (nest_fn, me) = nest.get().unwrap();
        assert_eq!(nest_fn.call(&[me.clone(), 4.into()]).unwrap().ret, Value::Int(5), "{b:?}");

        // NULL where the library accepts none.
        let maybe = lib
            .function(
                "maybe_call",
                Signature::new(CType::Int).arg(CType::fn_ptr(Signature::new(CType::Int))).arg(CType::Int),
            )
            .unwrap();
        assert_eq!(maybe.call(&[Value::NULL, 3.into()]).unwrap().ret, Value::Int(-1));
        assert_eq!(maybe.call(&[cb.value(), 0.into()]).unwrap().ret, Value::Int(0));

        // An out pointer in the callback's signature: what the callback leaves there is written back.
        let fill = server
            .callback(Signature::new(CType::Void).arg_out(CType::ptr(CType::Int)).arg(CType::Int), |a| {
                a[0] = Value::Int(a[1].as_i64().unwrap() * 10);
                Value::Void
            })
            .unwrap();
        let fill_with = lib
            .function(
                "fill_with",
                Signature::new(CType::Void)
                    .arg(CType::fn_ptr(Signature::new(CType::Void)))
                    .arg_out(CType::ptr(CType::Int))
                    .arg(CType::Int),
            )
            .unwrap();
        let r = fill_with.call(&[fill.value(), Value::Zeros(4), 4.into()]).unwrap();
        assert_eq!(r.out(1), Some(&Value::ints([0, 10, 20, 30])), "{b:?}");
    }
}

#[test]
fn a_panicking_callback_is_an_error_to_the_caller_never_an_unwind_into_c() {
    let _check = no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("events");
        let cb = lib
            .server()
            .callback(Signature::new(CType::Int).arg(CType::Int), |_| panic!("boom in the callback"))
            .unwrap();
        let maybe = lib
            .function(
                "maybe_call",
                Signature::new(CType::Int).arg(CType::fn_ptr(Signature::new(CType::Int))).arg(CType::Int),
            )
            .unwrap();
        let e = maybe.call(&[cb.value(), 1.into()]).unwrap_err();
        assert!(matches!(&e, Error::Callback { message, .. } if message.contains("boom in the callback")), "{e}");
        // The server and the connection are fine.
        assert_eq!(maybe.call(&[Value::NULL, 1.into()]).unwrap().ret, Value::Int(-1), "{b:?}");
    }
}

#[test]
fn calls_stay_on_the_servers_thread_while_a_library_thread_waits_in_a_callback() {
    let _check = no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("events");
        let tid = Arc::new(lib.function("thread_id", Signature::new(CType::Long)).unwrap());
        let main_tid = tid.call(&[]).unwrap().ret;
        let nested_tids = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (t, seen) = (tid.clone(), nested_tids.clone());
        // Each event: a nested call (runs on the library's thread, which is waiting in the callback),
        // then a pause so the library thread sits in the callback while the test calls from outside.
        let cb = lib
            .server()
            .callback(Signature::new(CType::Void).arg(CType::Int), move |_| {
                seen.lock().unwrap().push(t.call(&[]).unwrap().ret);
                std::thread::sleep(Duration::from_millis(2));
                Value::Void
            })
            .unwrap();
        let (start, join) = event_functions(&lib);
        start.call(&[cb.value(), 20.into()]).unwrap();
        for _ in 0..200 {
            // Unrelated calls: always on the server's one worker thread, never on the library's thread.
            assert_eq!(tid.call(&[]).unwrap().ret, main_tid, "{b:?}");
        }
        join.call(&[]).unwrap();
        let nested = nested_tids.lock().unwrap();
        assert_eq!(nested.len(), 20);
        assert!(nested.iter().all(|t| *t != main_tid), "nested calls run on the thread inside the callback");
    }
}
