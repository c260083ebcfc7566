//! Typed shared objects between 32- and 64-bit processes: the sharedctypes example with 32- and 64-bit
//! children, a lock under contention from both bitnesses, zero-copy passing to a bridged function, and
//! a file-backed exchange with a C program.

use std::path::PathBuf;
use std::process::Command;

use bitbridge::shared::{LockKind, SharedOptions};
use bitbridge::{CType, Error, Signature, Target, Value};
use bitbridge_tests::{no_server_left, program, root, Backend, Bits};

/// The child program for `bits` (the 32-bit one is built by `./x servers`).
fn child(bits: Bits) -> PathBuf {
    match bits {
        Bits::B64 => PathBuf::from(env!("CARGO_BIN_EXE_shared_child")),
        Bits::B32 => {
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"));
            let p = target.join("i686-unknown-linux-gnu/debug/shared_child");
            assert!(p.is_file(), "{} is missing: run ./x servers (or ./x test)", p.display());
            p
        }
    }
}

fn run(bits: Bits, args: &[&str]) -> String {
    let out = Command::new(child(bits)).args(args).output().unwrap();
    assert!(out.status.success(), "{bits:?} child {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn unique(tag: &str) -> String {
    format!("test-{tag}-{}", std::process::id())
}

fn point() -> CType {
    CType::structure("Point", [("x", CType::Double), ("y", CType::Double)])
}

fn pt(x: f64, y: f64) -> Value {
    Value::Struct(vec![x.into(), y.into()])
}

#[test]
fn the_sharedctypes_example_with_32_and_64_bit_children() {
    for bits in [Bits::B32, Bits::B64] {
        let p = unique(&format!("square{bits:?}"));
        let opts = |suffix: &str| SharedOptions::new(Target::I386_SYSV).named(&format!("{p}-{suffix}"));
        let n = opts("n").copy(CType::Int, &[7.into()]).unwrap();
        let x = opts("x").copy(CType::Double, &[(1.0f64 / 3.0).into()]).unwrap();
        let s = opts("s").copy(CType::array(CType::Char, 32), &["hello world".into()]).unwrap();
        let pts = opts("pts").copy(point(), &[pt(1.875, -6.25), pt(-5.75, 2.0), pt(2.375, 9.5)]).unwrap();
        // Declared for x86_64, where `d` is at offset 8 (4 on i386): the 32-bit child follows the header.
        let mixed_ty = CType::structure("Mixed", [("c", CType::Char), ("d", CType::Double)]);
        let mixed = SharedOptions::new(Target::X86_64_SYSV)
            .named(&format!("{p}-mixed"))
            .copy(mixed_ty, &[Value::Struct(vec![b'm'.into(), 1.5.into()])])
            .unwrap();

        let said = run(bits, &["square", &p]);
        assert!(said.contains(&format!("{}-bit", if bits == Bits::B32 { 32 } else { 64 })), "{said}");

        assert_eq!(n.get(0).unwrap(), Value::Int(49));
        assert_eq!(x.get(0).unwrap(), Value::Float((1.0f64 / 3.0) * (1.0 / 3.0)));
        assert_eq!(s.get(0).unwrap().as_str(), Some("HELLO WORLD"));
        assert_eq!(pts.to_vec().unwrap(), [pt(3.515625, 39.0625), pt(33.0625, 4.0), pt(5.640625, 90.25)], "{bits:?}");
        assert_eq!(mixed.get(0).unwrap(), Value::Struct(vec![Value::Int(b'm' as i64), Value::Float(2.25)]));
    }
}

#[test]
fn one_lock_under_contention_from_both_bitnesses() {
    let name = unique("counter");
    let counter = SharedOptions::new(Target::I386_SYSV).named(&name).value(CType::LongLong).unwrap();
    let per = 20_000u32;
    let children: Vec<_> = [Bits::B32, Bits::B64]
        .iter()
        .map(|&b| Command::new(child(b)).args(["count", &name, &per.to_string()]).spawn().unwrap())
        .collect();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let c = counter.clone();
            std::thread::spawn(move || {
                for _ in 0..per {
                    // A multi-step update under the (recursive) lock, whose get/set take it again.
                    let _g = c.lock().unwrap();
                    let v = c.get(0).unwrap().as_i64().unwrap();
                    c.set(0, &Value::Int(v + 1)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(counter.get(0).unwrap(), Value::Int(4 * i64::from(per)));
}

#[test]
fn plain_and_recursive_locks() {
    // Plain: while one thread holds it, another waits.
    let plain = SharedOptions::new(Target::X86_64_SYSV).lock_kind(LockKind::Plain).raw().value(CType::Int).unwrap();
    let held = plain.lock().unwrap();
    let other = plain.clone();
    let waiter = std::thread::spawn(move || {
        let _g = other.lock().unwrap();
        other.set(0, &Value::Int(1)).unwrap(); // a raw object's accesses do not take the lock
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!waiter.is_finished(), "the plain lock let a second thread in");
    drop(held);
    waiter.join().unwrap();
    assert_eq!(plain.get(0).unwrap(), Value::Int(1));

    // Recursive (the default): the holder takes it again, and it is free once released as often.
    let rec = SharedOptions::new(Target::X86_64_SYSV).value(CType::Int).unwrap();
    let g1 = rec.lock().unwrap();
    let g2 = rec.lock().unwrap();
    rec.set(0, &Value::Int(5)).unwrap();
    drop(g2);
    drop(g1);
    let r2 = rec.clone();
    assert_eq!(std::thread::spawn(move || r2.get(0).unwrap()).join().unwrap(), Value::Int(5));
}

#[test]
fn synchronized_views_and_raw_objects() {
    let lock_owner = SharedOptions::new(Target::X86_64_SYSV).value(CType::Int).unwrap();
    let raw = SharedOptions::new(Target::X86_64_SYSV).raw().array(CType::Double, 4).unwrap();
    raw.set(2, &2.5.into()).unwrap();
    let synced = raw.synchronized(Some(&lock_owner));
    {
        let _g = lock_owner.lock().unwrap();
        // The view waits for the other object's lock, which this thread holds (recursive): it may go on.
        assert_eq!(synced.get(2).unwrap(), Value::Float(2.5));
    }
    let e = SharedOptions::new(Target::I386_SYSV).array(CType::ptr(CType::Int), 2).unwrap_err();
    assert!(matches!(e, Error::Unsupported(m) if m.contains("pointers")));
    assert!(matches!(raw.get(4), Err(Error::Unsupported(_))));
}

#[test]
fn a_shared_object_is_passed_to_the_32_bit_library_without_a_copy() {
    let _check = no_server_left();
    let lib = Backend::Server32.open("edge");
    let ints = SharedOptions::new(Target::I386_SYSV).copy(CType::Int, &[1.into(), 2.into(), 3.into()]).unwrap();
    let arg = ints.share_with(lib.server()).unwrap();
    let keep = lib.function("keep", Signature::new(CType::Void).arg(CType::ptr(CType::Int)).arg(CType::Int)).unwrap();
    let kept_sum = lib.function("kept_sum", Signature::new(CType::Int)).unwrap();
    let fill = lib.function("fill_kept", Signature::new(CType::Void).arg(CType::Int)).unwrap();
    keep.call(&[arg, 3.into()]).unwrap();
    ints.set(0, &100.into()).unwrap();
    assert_eq!(kept_sum.call(&[]).unwrap().ret, Value::Int(105));
    // The library fills it later, through the pointer it kept: the client sees it (the camera case).
    fill.call(&[9.into()]).unwrap();
    assert_eq!(ints.to_vec().unwrap(), [Value::Int(9), Value::Int(9), Value::Int(9)]);
    keep.call(&[Value::NULL, 0.into()]).unwrap();
    // Laid out for another target than the server's: refused.
    let wrong = SharedOptions::new(Target::X86_64_SYSV).value(CType::Long).unwrap();
    assert!(matches!(wrong.share_with(lib.server()), Err(Error::Unsupported(_))));
}

#[test]
fn a_file_backed_exchange_with_a_c_program() {
    for bits in [Bits::B32, Bits::B64] {
        let path = bitbridge_tests::out_dir().join(format!("exchange-{bits:?}-{}.bin", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let ty = CType::structure("Exchange", [("turn", CType::Int), ("value", CType::Int)]);
        let obj =
            SharedOptions::new(Target::X86_64_SYSV).file(&path).raw().lock_kind(LockKind::Plain).value(ty).unwrap();
        let peer = Command::new(program("mmap_peer", bits, &[]))
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let exchange = |turn: i64, value: i64| {
            let _g = obj.lock().unwrap();
            obj.set(0, &Value::Struct(vec![turn.into(), value.into()])).unwrap();
        };
        let read = || {
            let _g = obj.lock().unwrap();
            let Value::Struct(f) = obj.get(0).unwrap() else { panic!() };
            (f[0].as_i64().unwrap(), f[1].as_i64().unwrap())
        };
        for i in 1..=200i64 {
            exchange(1, i);
            let t = std::time::Instant::now();
            loop {
                let (turn, value) = read();
                if turn == 0 {
                    assert_eq!(value, i * i);
                    break;
                }
                assert!(t.elapsed().as_secs() < 10, "the C peer did not answer");
                std::thread::yield_now();
            }
        }
        exchange(1, -1);
        let out = peer.wait_with_output().unwrap();
        assert!(out.status.success());
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("squared 200 numbers"), "{said}");
        drop(obj);
        let _ = std::fs::remove_file(&path);
    }
}

#[test]
fn a_missing_existing_or_foreign_object_is_named_with_the_cause() {
    use bitbridge::shared::{Backing, SharedArray};
    let missing = unique("missing");
    let e = SharedArray::open(&Backing::Named(missing.clone())).unwrap_err();
    let text = e.to_string();
    assert!(matches!(&e, Error::SharedObject { action: "open", .. }), "{e}");
    assert!(text.contains(&format!("/dev/shm/bitbridge-{missing}")) && text.contains("does not exist"), "{text}");

    let name = unique("twice");
    let first = SharedOptions::new(Target::I386_SYSV).named(&name).value(CType::Int).unwrap();
    let e = SharedOptions::new(Target::I386_SYSV).named(&name).value(CType::Int).unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with(&format!("cannot create shared object \"{name}\"")), "{text}");
    assert!(text.contains("already exists"), "{text}");
    drop(first);

    // Something that is not a bitbridge object, by name and as a file.
    let foreign = unique("foreign");
    let path = std::path::Path::new("/dev/shm").join(format!("bitbridge-{foreign}"));
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let e = SharedArray::open(&Backing::Named(foreign.clone())).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(e.to_string().contains(&format!("shared object \"{foreign}\"")), "{e}");
    assert!(e.to_string().contains("not a bitbridge shared object"), "{e}");
    let file = bitbridge_tests::out_dir().join(format!("{foreign}.txt"));
    std::fs::write(&file, "hello").unwrap();
    let e = SharedArray::open(&Backing::File(file.clone())).unwrap_err();
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    assert!(e.to_string().contains("not a bitbridge shared object: too small"), "{e}");
}
