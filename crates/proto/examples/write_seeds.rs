//! Writes the fuzzers' seed corpus (`fuzz/corpus/*/seed-*`) from real messages:
//! `cargo run -p bitbridge-proto --example write_seeds` after changing a message.
use bitbridge_proto::*;
fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode_frame");
    std::fs::create_dir_all(&dir).unwrap();
    let sdir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/stream_frames");
    std::fs::create_dir_all(&sdir).unwrap();
    let mdir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/marshal");
    std::fs::create_dir_all(&mdir).unwrap();
    let complex = CType::structure("Complex", [("re", CType::Double), ("im", CType::Double)]);
    let buf = CType::structure("Buf", [("n", CType::Int), ("data", CType::ptr(CType::Double))]);
    let sig = Signature::new(complex.clone())
        .arg(complex.clone())
        .arg_inout(CType::ptr(buf.clone()))
        .arg(CType::union("U", [("i", CType::Int), ("f", CType::Float)]))
        .arg(CType::CStr)
        .conv(CallConv::Stdcall);
    let (call, _) = encode_call(
        &Target::I386_SYSV,
        &Signature::new(CType::Void).arg_inout(CType::ptr(buf.clone())).arg(CType::CStr),
        &[Value::Struct(vec![2.into(), Value::f64s([1.0, 2.0])]), "hi".into()],
    )
    .unwrap();
    let frames = vec![
        Frame::Request { id: 1, request: Request::Load { lib: 1, path: "/lib32/libm.so.6".into() } },
        Frame::Request { id: 2, request: Request::Prepare { lib: 1, func: 2, symbol: "add".into(), sig } },
        Frame::Request { id: 3, request: Request::Call { func: 2, call } },
        Frame::Request { id: 4, request: Request::Alloc { size: 64, align: 8 } },
        Frame::Request { id: 5, request: Request::Write { addr: 0x1000, bytes: vec![1, 2, 3] } },
        Frame::Request { id: 6, request: Request::ReadString { addr: 0x1000, wide: true, max_len: 10 } },
        Frame::Request { id: 7, request: Request::Shutdown },
        Frame::Request {
            id: 10,
            request: Request::MakeCallback {
                cb: 3,
                sig: Signature::new(CType::Int).arg(CType::ptr(CType::Int)).arg(CType::ptr(CType::Int)),
            },
        },
        Frame::Request { id: 11, request: Request::Callback { cb: 3, call: CallData::default() } },
        Frame::Request { id: 12, request: Request::Start { options: vec![0xa1, 0x61, 0x6e, 0x01] } },
        Frame::Request { id: 13, request: Request::Invoke { method: "add".into(), args: vec![0x82, 0x01, 0x02] } },
        Frame::Request { id: 14, request: Request::Get { name: "serial".into() } },
        Frame::Reply { id: 13, reply: Ok(Reply::Raised { kind: "DeviceError".into(), message: "closed".into() }) },
        Frame::Reply {
            id: 3,
            reply: Ok(Reply::Returned(Returned {
                value: vec![0; 16],
                string: Some(b"x".to_vec()),
                blocks: vec![vec![0; 8], vec![0; 16]],
                errno: Some(34),
                last_error: None,
                addrs: vec![0x1000, 0x2000],
            })),
        },
        Frame::Reply { id: 9, reply: Err(RemoteError { kind: ErrorKind::SymbolNotFound, message: "nope".into() }) },
    ];
    let mut stream = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let mut out = Vec::new();
        msg::encode(f, &mut out);
        std::fs::write(dir.join(format!("seed-{i}")), &out).unwrap();
        stream.extend_from_slice(&(out.len() as u32).to_le_bytes());
        stream.extend_from_slice(&out);
    }
    std::fs::write(sdir.join("seed-all"), &stream).unwrap();
    let r = Returned {
        value: vec![1; 16],
        string: None,
        blocks: vec![vec![2; 16], vec![3; 16], vec![4; 4]],
        errno: None,
        last_error: None,
        addrs: vec![0x1000, 0x2000, 0x3000],
    };
    let mut out = Vec::new();
    msg::encode(&r, &mut out);
    std::fs::write(mdir.join("seed-0"), &out).unwrap();
    let mut hello = Vec::new();
    msg::encode(&Hello::new(Arch::X86, Os::Linux, 4, 1, "0.1.0"), &mut hello);
    std::fs::write(dir.join("seed-hello"), &hello).unwrap();
}
