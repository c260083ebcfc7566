//! Buffers shared with the server: passed with nothing copied, kept by the library, written from both
//! sides.

use bitbridge::{CType, Error, Signature, Value};
use bitbridge_tests::{no_server_left, Backend};

fn ints(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn a_shared_buffer_is_the_same_memory_on_both_sides() {
    let _check = no_server_left();
    for b in [Backend::Server32, Backend::Server64] {
        let lib = b.open("edge");
        let buf = lib.server().share(12).unwrap();
        buf.write(0, &[1i32, 2, 3].iter().flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>()).unwrap();
        let keep =
            lib.function("keep", Signature::new(CType::Void).arg(CType::ptr(CType::Int)).arg(CType::Int)).unwrap();
        let kept_sum = lib.function("kept_sum", Signature::new(CType::Int)).unwrap();
        let fill = lib.function("fill_kept", Signature::new(CType::Void).arg(CType::Int)).unwrap();
        keep.call(&[buf.value(), 3.into()]).unwrap();
        assert_eq!(kept_sum.call(&[]).unwrap().ret, Value::Int(6), "{b:?}");
        // The client writes; the library sees it at its next call, with nothing sent.
        buf.write(0, &10i32.to_le_bytes()).unwrap();
        assert_eq!(kept_sum.call(&[]).unwrap().ret, Value::Int(15));
        // The library writes through the pointer it kept; the client reads it.
        fill.call(&[7.into()]).unwrap();
        assert_eq!(ints(&buf.read(0, 12).unwrap()), [7, 7, 7], "{b:?}");
        keep.call(&[Value::NULL, 0.into()]).unwrap();

        // A slice of it, as an in-out buffer: changed in place, nothing copied back.
        let inc = lib
            .function("inc_all", Signature::new(CType::Void).arg_inout(CType::ptr(CType::Int)).arg(CType::Int))
            .unwrap();
        inc.call(&[buf.slice(4, 8).unwrap(), 2.into()]).unwrap();
        assert_eq!(ints(&buf.read(0, 12).unwrap()), [7, 8, 8]);
        assert!(matches!(buf.slice(8, 8), Err(Error::Unsupported(_))));
    }
}

#[test]
fn a_large_shared_array_is_summed_in_place() {
    let _check = no_server_left();
    let lib = Backend::Server32.open("ctest");
    let n = 1usize << 20; // 8 MiB of doubles
    let buf = lib.server().share((n * 8) as u64).unwrap();
    let bytes: Vec<u8> = (0..n).flat_map(|i| (i as f64).to_le_bytes()).collect();
    buf.write(0, &bytes).unwrap();
    let sum4 =
        lib.function("sum4", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap();
    let want = (n as f64) * (n as f64 - 1.0) / 2.0;
    assert_eq!(sum4.call(&[buf.value(), (n as i64).into()]).unwrap().ret, Value::Float(want));
}

#[test]
fn shared_buffers_need_the_shared_memory_transport() {
    let _check = no_server_left();
    let lib = Backend::Server32Socket.open("edge");
    assert!(matches!(lib.server().share(16), Err(Error::Unsupported(_))));
}

#[test]
fn concurrent_shares_each_map_their_own_memory() {
    let _check = no_server_left();
    for workers in [1, 4] {
        let opts = bitbridge::ServerOptions::new().concurrent(workers);
        let lib = bitbridge::LibraryOptions::new(bitbridge_tests::fixture("ctest", bitbridge_tests::Bits::B32))
            .server(opts)
            .open()
            .unwrap();
        bitbridge_tests::track(lib.server());
        let sum = std::sync::Arc::new(
            lib.function("sum", Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int)).unwrap(),
        );
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (sum, server) = (sum.clone(), lib.server().clone());
                std::thread::spawn(move || {
                    for i in 0..100u32 {
                        let marker = f64::from(t * 100_000 + i);
                        let buf = server.share(8).unwrap();
                        buf.write(0, &marker.to_le_bytes()).unwrap();
                        let got = sum.call(&[buf.value(), 1.into()]).unwrap().ret;
                        assert_eq!(got, Value::Float(marker), "thread {t}, round {i}: another thread's buffer");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
