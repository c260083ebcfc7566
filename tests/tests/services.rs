//! Custom servers (bitbridge-service): the example services of `examples/services`, each run through
//! its 32-bit build and in-process, with the same assertions both ways.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bitbridge::{CType, Error, ServerOptions, ServiceClient, Signature, Value};
use bitbridge_examples::cpp::{Cpp, CppOptions, Point};
use bitbridge_examples::device::{Device, DeviceOptions, Status};
use bitbridge_examples::echo::Echo;
use bitbridge_examples::fortran::{Fortran, FortranOptions};
use bitbridge_service::kinds;
use bitbridge_tests::{fixture, no_server_left, process_alive, server_binary, service_program, track, Bits};
use serde::{Deserialize, Serialize};

/// Where the service runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Its i686 program, hosting the 32-bit build of the library.
    Server32,
    /// Inside the test process, with the 64-bit build of the library (msl-loadlib's mock mode).
    InProcess,
}

const MODES: [Mode; 2] = [Mode::Server32, Mode::InProcess];

impl Mode {
    fn bits(self) -> Bits {
        match self {
            Mode::Server32 => Bits::B32,
            Mode::InProcess => Bits::B64,
        }
    }

    /// Starts service `S` (program `program` when out of process) with `options`.
    fn start<S: bitbridge_service::Service>(
        self,
        program: &str,
        options: &impl Serialize,
    ) -> Result<ServiceClient, Error> {
        let client = match self {
            Mode::Server32 => ServiceClient::spawn(service_program(program, Bits::B32), options)?,
            // SAFETY: the example services and the fixtures they load are ours, written to run anywhere.
            Mode::InProcess => unsafe { ServiceClient::in_process::<S, _>(options)? },
        };
        track(client.server());
        Ok(client)
    }
}

fn raised(e: Error) -> (String, String) {
    match e {
        Error::Raised { kind, message, .. } => (kind, message),
        other => panic!("expected a raised error, got {other:?}"),
    }
}

// ---- the echo: every serde data shape comes back identical ----

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UnitStruct;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Newtype(i32);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TupleStruct(i8, String, f32);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    scores: BTreeMap<String, f64>,
    child: Option<Box<Record>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect(f64, f64),
    Poly { sides: u8, names: Vec<char> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Tagged {
    A { x: i32 },
    B { y: String },
}

type Scalars = ((bool, i8, i16, i32, i64, i128), (u8, u16, u32, u64, u128), (f32, f64, char, String));

fn scalars() -> Scalars {
    (
        (true, i8::MIN, i16::MIN, i32::MIN, i64::MIN, i128::MIN),
        (u8::MAX, u16::MAX, u32::MAX, u64::MAX, u128::MAX),
        (f32::MAX, f64::MIN_POSITIVE, 'λ', "text with \0 and ü".to_string()),
    )
}

type Compounds = (
    (serde_bytes::ByteBuf, Vec<u8>, Option<i32>, Option<Option<String>>, (), UnitStruct, Newtype, TupleStruct),
    (Record, Vec<Shape>, HashMap<u32, String>, Vec<Vec<i64>>, Vec<Tagged>, [u16; 3], BTreeMap<(i8, bool), Vec<f32>>),
);

fn compounds() -> Compounds {
    let leaf = Record { id: 2, name: "leaf".into(), tags: vec![], scores: BTreeMap::new(), child: None };
    (
        (
            serde_bytes::ByteBuf::from(vec![0u8, 1, 255, 128]),
            vec![0u8, 1, 255],
            None,
            Some(Some("some".into())),
            (),
            UnitStruct,
            Newtype(-7),
            TupleStruct(-1, "tuple".into(), 0.25),
        ),
        (
            Record {
                id: u64::MAX - 1,
                name: "root".into(),
                tags: vec!["a".into(), String::new()],
                scores: BTreeMap::from([("x".into(), 1.5), ("y".into(), -2.0)]),
                child: Some(Box::new(leaf)),
            },
            vec![
                Shape::Empty,
                Shape::Circle(1.0),
                Shape::Rect(2.0, 3.0),
                Shape::Poly { sides: 5, names: vec!['a', '€'] },
            ],
            HashMap::from([(1, "one".into()), (u32::MAX, "max".into())]),
            vec![vec![], vec![i64::MAX, i64::MIN]],
            vec![Tagged::A { x: 3 }, Tagged::B { y: "b".into() }],
            [1, 2, 3],
            BTreeMap::from([((-1, true), vec![0.5, 1.5]), ((0, false), vec![])]),
        ),
    )
}

#[test]
fn echo_returns_every_serde_shape_identical() {
    let _check = no_server_left();
    for mode in MODES {
        let echo = mode.start::<Echo>("echo_server", &()).unwrap();
        let back: Scalars = echo.call("echo", scalars()).unwrap();
        assert_eq!(back, scalars(), "{mode:?}");
        let back: Compounds = echo.call("echo", compounds()).unwrap();
        assert_eq!(back, compounds(), "{mode:?}");
        // The one shape a self-describing format cannot keep (as with JSON): `Some(None)` is `None`.
        let back: Option<Option<u8>> = echo.call("echo_one", (Some(None::<u8>),)).unwrap();
        assert_eq!(back, None);
        // Floats that equality cannot check: bit for bit.
        let floats = (f64::NAN, -0.0f64, f64::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE / 2.0);
        let back: (f64, f64, f64, f32, f32) = echo.call("echo", floats).unwrap();
        assert!(back.0.is_nan() && back.1.to_bits() == (-0.0f64).to_bits(), "{mode:?}: {back:?}");
        assert_eq!((back.2, back.3, back.4.to_bits()), (floats.2, floats.3, floats.4.to_bits()), "{mode:?}");
        // One argument of any shape, no arguments, and a large one.
        let big: Vec<f64> = (0..100_000).map(|i| i as f64 / 3.0).collect();
        let back: Vec<f64> = echo.call("echo_one", (big.clone(),)).unwrap();
        assert_eq!(back, big);
        let none: Vec<u8> = echo.call("echo", ()).unwrap();
        assert!(none.is_empty(), "no arguments is the empty sequence");
        assert_eq!(echo.get::<u64>("calls").unwrap(), 6);
        let width: usize = echo.get("pointer_width").unwrap();
        assert_eq!(width, if mode == Mode::Server32 { 32 } else { 64 }, "the service really runs in a 32-bit process");
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct EchoOptions {
    port: u16,
    rate: f64,
    label: Option<String>,
    channels: Vec<u8>,
    mode: Shape,
}

#[test]
fn constructor_options_arrive_with_their_types() {
    let _check = no_server_left();
    let options = EchoOptions { port: 8080, rate: 0.1, label: None, channels: vec![1, 3], mode: Shape::Rect(1.0, 2.0) };
    for mode in MODES {
        let echo = mode.start::<Echo>("echo_server", &options).unwrap();
        assert_eq!(echo.get::<EchoOptions>("options").unwrap(), options, "{mode:?}");
        // msl-loadlib would have given the strings "8080" and "None" here: typed values stay typed, and
        // reading them as another type is a clear error.
        let options_as_text = echo.get::<String>("options").unwrap_err();
        assert!(
            matches!(&options_as_text, Error::Value { call, .. } if call == "property `options`"),
            "{options_as_text:?}"
        );
    }
}

#[test]
fn bad_calls_raise_typed_errors_and_leave_the_service_usable() {
    let _check = no_server_left();
    for mode in MODES {
        let echo = mode.start::<Echo>("echo_server", &()).unwrap();
        let (kind, message) = raised(echo.call::<_, ()>("ecco", (1,)).unwrap_err());
        assert_eq!(kind, kinds::UNKNOWN_METHOD, "{mode:?}");
        assert!(message.contains("no method `ecco`") && message.contains("`echo`"), "{message}");
        let (kind, message) = raised(echo.call::<_, ()>("sleep", ("ten",)).unwrap_err());
        assert_eq!(kind, kinds::BAD_ARGUMENTS);
        assert!(message.contains("`sleep` takes (u64,): invalid type: string"), "{message}");
        let (kind, message) = raised(echo.call::<_, ()>("panic", ("on purpose",)).unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), (kinds::PANIC, "on purpose"));
        assert_eq!(raised(echo.get::<u8>("nope").unwrap_err()).0, kinds::UNKNOWN_PROPERTY);
        // A result of another type than asked for is the client's own typed error.
        match echo.call::<_, String>("echo_one", (1.5,)).unwrap_err() {
            Error::Value { call, message } => {
                assert_eq!(call, "method `echo_one`");
                assert!(message.contains("invalid type: floating point"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // No arguments for a method that takes some: the error is about what was sent.
        let (kind, message) = raised(echo.call::<_, ()>("sleep", ()).unwrap_err());
        assert_eq!(kind, kinds::BAD_ARGUMENTS);
        assert!(message.ends_with("`sleep` takes (u64,): invalid length 0, expected a tuple of size 1"), "{message}");
        // A lone `None` is a value, not "no arguments".
        let (kind, _) = raised(echo.call::<_, Vec<u8>>("echo", None::<u8>).unwrap_err());
        assert_eq!(kind, kinds::BAD_ARGUMENTS);
        let display = echo.call::<_, ()>("ecco", ()).unwrap_err().to_string();
        assert!(display.starts_with("method `ecco` raised bitbridge::UnknownMethod: "), "{display}");
        // Everything above left the service working.
        assert_eq!(echo.call::<_, (i32,)>("echo", (7,)).unwrap(), (7,));
        assert_eq!(echo.server().is_in_process(), mode == Mode::InProcess);
    }
}

// ---- the C++ wrapper ----

#[test]
fn cpp_wrapper() {
    let _check = no_server_left();
    for mode in MODES {
        let options = CppOptions { library: fixture("cpp_lib", mode.bits()) };
        let cpp = mode.start::<Cpp>("cpp_server", &options).unwrap();
        assert_eq!(cpp.call::<_, i32>("add", (1, 2)).unwrap(), 3);
        // C's signed overflow is undefined: the wrapper refuses it rather than pass it on.
        let (kind, message) = raised(cpp.call::<_, i32>("add", (i32::MAX, 1)).unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), ("OverflowError", "2147483647 + 1 does not fit in a C int"));
        assert_eq!(cpp.call::<_, f32>("subtract", (7.5f32, 2.25f32)).unwrap(), 5.25);
        assert_eq!(cpp.call::<_, f64>("add_or_subtract", (1.0, 2.0, true)).unwrap(), 3.0);
        assert_eq!(cpp.call::<_, f64>("add_or_subtract", (1.0, 2.0, false)).unwrap(), -1.0);
        let out: Vec<f64> = cpp.call("scalar_multiply", (2.0, vec![1.0, 2.0, 3.0])).unwrap();
        assert_eq!(out, [2.0, 4.0, 6.0]);
        assert_eq!(cpp.call::<_, String>("reverse_string_v1", ("hello world",)).unwrap(), "dlrow olleh");
        assert_eq!(cpp.call::<_, String>("reverse_string_v2", ("bitbridge",)).unwrap(), "egdirbtib");
        let square = vec![
            Point { x: 0.0, y: 0.0 },
            Point { x: 0.0, y: 1.0 },
            Point { x: 1.0, y: 1.0 },
            Point { x: 1.0, y: 0.0 },
        ];
        assert_eq!(cpp.call::<_, f64>("distance_4_points", (square.clone(),)).unwrap(), 4.0);
        let (kind, message) = raised(cpp.call::<_, f64>("distance_4_points", (square[..3].to_vec(),)).unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), ("ValueError", "4 points are needed, not 3"));
        let triangle = vec![Point { x: 0.0, y: 0.0 }, Point { x: 3.0, y: 0.0 }, Point { x: 3.0, y: 4.0 }];
        assert_eq!(cpp.call::<_, f64>("distance_n_points", (triangle,)).unwrap(), 12.0);
        assert_eq!(cpp.get::<std::path::PathBuf>("library").unwrap(), options.library);
        // A NUL inside a string is the wrapper's error, typed by its Rust error type.
        let (kind, _) = raised(cpp.call::<_, String>("reverse_string_v2", ("a\0b",)).unwrap_err());
        assert_eq!(kind, "alloc::ffi::c_str::NulError");
    }
}

#[test]
fn a_constructor_failure_is_a_raised_error() {
    let _check = no_server_left();
    for mode in MODES {
        let missing = CppOptions { library: "/nonexistent/libnothing.so".into() };
        let e = mode.start::<Cpp>("cpp_server", &missing).unwrap_err();
        let display = e.to_string();
        match e {
            Error::Raised { call, kind, message } => {
                assert_eq!((call.as_str(), kind.as_str()), ("the constructor", "LoadError"), "{mode:?}");
                assert!(message.contains("/nonexistent/libnothing.so"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(display.starts_with("the constructor raised LoadError: "), "{display}");
        // Options of another type than the service's: the same error in-process as over the wire.
        let (kind, message) = raised(mode.start::<Cpp>("cpp_server", &serde_bytes::ByteBuf::new()).unwrap_err());
        assert_eq!(kind, kinds::BAD_OPTIONS, "{mode:?}");
        assert!(message.contains("CppOptions") && message.contains("invalid type: bytes, expected map"), "{message}");
    }
}

// ---- the stateful device wrapper ----

#[test]
fn device_wrapper_keeps_state_across_calls() {
    let _check = no_server_left();
    for mode in MODES {
        let options = DeviceOptions { library: fixture("device", mode.bits()), device: "sim1".into(), level: 2.0 };
        let dev = mode.start::<Device>("device_server", &options).unwrap();
        assert_eq!(dev.call::<_, Vec<f64>>("read", (3u32,)).unwrap(), [2.0, 2.5, 3.0]);
        assert_eq!(dev.call::<_, Vec<f64>>("read", (2u32,)).unwrap(), [3.5, 4.0]);
        dev.call::<_, ()>("set_level", (10.0,)).unwrap();
        assert_eq!(dev.call::<_, Vec<f64>>("read", (1u32,)).unwrap(), [12.5]);
        let status: Status = dev.get("status").unwrap();
        assert_eq!(status, Status { device: "sim1".into(), open: true, reads: 6 });
        let serial: String = dev.call("serial", ()).unwrap();
        assert!(serial.starts_with("SIM-10"), "{serial}");
        dev.call::<_, ()>("close", ()).unwrap();
        let (kind, message) = raised(dev.call::<_, Vec<f64>>("read", (1u32,)).unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), ("DeviceError", "sim1 is closed"));
        assert!(!dev.get::<Status>("status").unwrap().open);
        // The driver's own errors: a second open of a busy device, an unknown device.
        let again = mode.start::<Device>("device_server", &DeviceOptions { device: "sim2".into(), ..options.clone() });
        let other = mode.start::<Device>("device_server", &DeviceOptions { device: "sim9".into(), ..options.clone() });
        let (kind, message) = raised(other.unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), ("DeviceError", "no such device (status -1)"));
        let again = again.unwrap();
        if mode == Mode::InProcess {
            // One library in one process: sim2 is now open, so a second in-process service is refused.
            let busy =
                mode.start::<Device>("device_server", &DeviceOptions { device: "sim2".into(), ..options.clone() });
            assert_eq!(raised(busy.unwrap_err()).1, "the device is already open (status -2)");
        }
        drop(again);
    }
}

// ---- the Fortran wrapper ----

#[test]
fn fortran_wrapper() {
    let _check = no_server_left();
    for mode in MODES {
        let options = FortranOptions { library: fixture("fortran_lib", mode.bits()) };
        let f = mode.start::<Fortran>("fortran_server", &options).unwrap();
        assert_eq!(f.call::<_, i8>("sum_8bit", (-50i8, 20i8)).unwrap(), -30);
        assert_eq!(f.call::<_, i64>("sum_64bit", (i64::MAX - 5, 5i64)).unwrap(), i64::MAX);
        assert_eq!(f.call::<_, f32>("multiply_float32", (1.5f32, -4.0f32)).unwrap(), -6.0);
        assert!(f.call::<_, bool>("is_positive", (0.5,)).unwrap());
        assert!(!f.call::<_, bool>("is_positive", (-0.5,)).unwrap());
        assert_eq!(f.call::<_, f64>("factorial", (10i8,)).unwrap(), 3628800.0);
        let sd: f64 = f.call("standard_deviation", (vec![2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0],)).unwrap();
        assert!((sd - 2.138089935299395).abs() < 1e-12, "{sd}");
        let j0: f64 = f.call("besselj0", (1.0,)).unwrap();
        assert!((j0 - 0.7651976865579666).abs() < 1e-12, "{j0}");
        assert_eq!(f.call::<_, String>("reverse_string", ("Fortran",)).unwrap(), "nartroF");
        let a = vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]];
        let b = vec![vec![7.0, 8.0], vec![9.0, 10.0], vec![11.0, 12.0]];
        let m: Vec<Vec<f64>> = f.call("matrix_multiply", (a.clone(), b)).unwrap();
        assert_eq!(m, [[58.0, 64.0], [139.0, 154.0]]);
        let (kind, message) = raised(f.call::<_, Vec<Vec<f64>>>("matrix_multiply", (a.clone(), a)).unwrap_err());
        assert_eq!((kind.as_str(), message.as_str()), ("ValueError", "cannot multiply 2x3 by 2x3"));
        // 65536 x 65537 cells: more than a C int, and on a 32-bit server a product that wraps to 65536.
        let (column, row) = (vec![vec![1.0]; 65536], vec![vec![1.0; 65537]]);
        let (kind, message) = raised(f.call::<_, Vec<Vec<f64>>>("matrix_multiply", (column, row)).unwrap_err());
        assert_eq!(
            (kind.as_str(), message.as_str()),
            ("ValueError", "a 65536x65537 result is too large for the library")
        );
    }
}

// ---- the lifecycle: the same as the generic server's ----

#[test]
fn a_custom_server_has_the_generic_servers_lifecycle() {
    let _check = no_server_left();
    let program = service_program("echo_server", Bits::B32);
    // A hung method: the call times out, the server is killed, later calls fail clearly.
    let opts = ServerOptions::new().call_timeout(Duration::from_millis(200));
    let echo = ServiceClient::spawn_with(&program, &"first", opts.clone()).unwrap();
    track(echo.server());
    let pid = echo.server().pid();
    assert!(matches!(echo.call::<_, ()>("sleep", (5_000u64,)), Err(Error::Timeout { .. })));
    assert!(!process_alive(pid));
    assert!(matches!(echo.call::<_, ()>("echo", ()), Err(Error::ServerDied { .. } | Error::Timeout { .. })));
    // Per-call timeouts override the server's.
    let echo = ServiceClient::spawn(&program, &"second").unwrap();
    track(echo.server());
    echo.call_timeout::<_, ()>("sleep", (50u64,), Duration::from_secs(5)).unwrap();
    // A crash is a typed error with the status, never a hang.
    match echo.call::<_, ()>("abort", ()) {
        Err(Error::ServerDied { status, .. }) => assert_eq!(status, bitbridge::ExitReason::Signal(6)),
        other => panic!("{other:?}"),
    }
    // With restart_on_failure, once the crash has been reported, the next call starts a new server,
    // which constructs the service again from the same options.
    let echo = ServiceClient::spawn_with(&program, &"third", ServerOptions::new().restart_on_failure(true)).unwrap();
    track(echo.server());
    let first = echo.server().pid();
    echo.call::<_, (u8,)>("echo", (1u8,)).unwrap();
    assert!(echo.call::<_, ()>("abort", ()).is_err());
    assert_eq!(echo.call::<_, (u8,)>("echo", (2u8,)).unwrap(), (2,));
    assert_ne!(echo.server().pid(), first);
    track(echo.server());
    assert_eq!(echo.get::<String>("options").unwrap(), "third");
    assert_eq!(echo.get::<u64>("calls").unwrap(), 1, "a restarted service starts afresh");
    // shutdown returns what the service printed.
    echo.call::<_, ()>("print", ("printed by the service",)).unwrap();
    let out = echo.shutdown().unwrap();
    assert_eq!(out.status, bitbridge::ExitReason::Code(0));
    assert_eq!(out.stdout, "printed by the service\necho: dropped after 1 calls\n");
    assert!(matches!(echo.call::<_, ()>("echo", ()), Err(Error::ShutDown)));
}

#[test]
fn a_custom_server_also_calls_c_functions_and_serves_client_threads() {
    let _check = no_server_left();
    let echo = ServiceClient::spawn(service_program("echo_server", Bits::B32), &()).unwrap();
    track(echo.server());
    let lib = echo.server().load(fixture("ctest", Bits::B32)).unwrap();
    let sig = Signature::new(CType::Double).arg(CType::ptr(CType::Double)).arg(CType::Int);
    let sum = lib.function("sum", sig).unwrap();
    assert_eq!(sum.call(&[Value::f64s([1.0, 2.0, 3.0]), 3.into()]).unwrap().ret.as_f64(), Some(6.0));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let echo = &echo;
            s.spawn(move || {
                for i in 0..200u32 {
                    assert_eq!(echo.call::<_, (u32, u32)>("echo", (t, i)).unwrap(), (t, i));
                }
            });
        }
    });
    assert_eq!(echo.get::<u64>("calls").unwrap(), 800);
}

#[test]
fn starting_something_that_is_not_a_custom_server_fails_clearly() {
    let _check = no_server_left();
    // The generic server hosts no service.
    let e = ServiceClient::spawn(server_binary(Bits::B32), &()).unwrap_err();
    assert!(matches!(&e, Error::Unsupported(m) if m.contains("it hosts no service")), "{e:?}");
    // A missing program, with the command that builds it.
    match ServiceClient::spawn("/nonexistent/my_server", &()).unwrap_err() {
        Error::Spawn { path, source } => {
            assert_eq!(path, std::path::Path::new("/nonexistent/my_server"));
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            assert!(source.to_string().contains("--target i686-unknown-linux-gnu --bin my_server"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    // A file that is not a program for a supported architecture.
    let e = ServiceClient::spawn(bitbridge_tests::root().join("README.md"), &()).unwrap_err();
    assert!(matches!(&e, Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput), "{e:?}");
}

#[test]
fn concurrent_workers_share_one_object_and_drop_it_at_shutdown() {
    let _check = no_server_left();
    let opts = ServerOptions::new().concurrent(4);
    let echo = ServiceClient::spawn_with(service_program("echo_server", Bits::B32), &(), opts).unwrap();
    track(echo.server());
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let echo = &echo;
            s.spawn(move || {
                for i in 0..50u32 {
                    match i % 10 {
                        0 => echo.call::<_, ()>("sleep", (1u64,)).unwrap(),
                        5 => assert_eq!(raised(echo.call::<_, ()>("panic", ("x",)).unwrap_err()).0, kinds::PANIC),
                        _ => assert_eq!(echo.call::<_, (u32, u32)>("echo", (t, i)).unwrap(), (t, i)),
                    }
                    echo.get::<u64>("calls").unwrap();
                }
            });
        }
    });
    assert_eq!(echo.get::<u64>("calls").unwrap(), 160);
    // The other workers are still blocked reading when the process ends: the object is dropped anyway.
    let out = echo.shutdown().unwrap();
    assert_eq!(out.stdout, "echo: dropped after 160 calls\n");
}

#[test]
fn a_constructor_that_fails_on_restart_says_why() {
    let _check = no_server_left();
    // The service's library disappears while its server runs; the server then dies.
    let dir = bitbridge_tests::out_dir().join(format!("vanishing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let library = dir.join("libcpp_lib32.so");
    std::fs::copy(fixture("cpp_lib", Bits::B32), &library).unwrap();
    let opts = ServerOptions::new().restart_on_failure(true);
    let cpp = ServiceClient::spawn_with(
        service_program("cpp_server", Bits::B32),
        &CppOptions { library: library.clone() },
        opts,
    )
    .unwrap();
    track(cpp.server());
    assert_eq!(cpp.call::<_, i32>("add", (1, 2)).unwrap(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
    let pid = cpp.server().pid();
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    while process_alive(pid) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(cpp.call::<_, i32>("add", (1, 2)), Err(Error::ServerDied { .. })));
    match cpp.call::<_, i32>("add", (1, 2)).unwrap_err() {
        Error::Raised { call, kind, message } => {
            assert_eq!((call.as_str(), kind.as_str()), ("the constructor, run again by a restart", "LoadError"));
            assert!(message.contains("libcpp_lib32.so"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
