//! Every wait mode of the shared-memory transport gives the same answers, on both servers, with one and
//! with several client threads (the modes change only how a side waits, never what crosses).

use std::sync::Arc;

use bitbridge::{CType, LibraryOptions, ServerOptions, Signature, Value, WaitMode};
use bitbridge_tests::{fixture, no_server_left, watchdog, Bits};

#[test]
fn every_wait_mode_answers_the_same() {
    watchdog();
    let _guard = no_server_left();
    for bits in [Bits::B32, Bits::B64] {
        for mode in [WaitMode::Spin, WaitMode::Adaptive, WaitMode::Sleep] {
            let lib = LibraryOptions::new(fixture("cpp_lib", bits))
                .server(ServerOptions::new().wait_mode(mode).concurrent(2))
                .open()
                .unwrap();
            let add =
                Arc::new(lib.function("add", Signature::new(CType::Int).arg(CType::Int).arg(CType::Int)).unwrap());
            for i in 0..300 {
                assert_eq!(add.call(&[Value::Int(i), Value::Int(i)]).unwrap().ret, Value::Int(2 * i), "{mode:?}");
            }
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let add = add.clone();
                    std::thread::spawn(move || {
                        for i in 0..200 {
                            let r = add.call(&[Value::Int(t), Value::Int(i)]).unwrap().ret;
                            assert_eq!(r, Value::Int(t + i));
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
    }
}

#[test]
fn wait_modes_have_stable_names() {
    for mode in [WaitMode::Spin, WaitMode::Adaptive, WaitMode::Sleep] {
        assert_eq!(WaitMode::from_name(mode.name()), Some(mode));
    }
    assert_eq!(WaitMode::from_name("busy"), None);
    assert_eq!(WaitMode::default(), WaitMode::Spin);
}
