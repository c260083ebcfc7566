//! A child process for the shared-object tests, built for x86_64 and for i686:
//! - `square PREFIX`: squares the objects `PREFIX-n` (int), `PREFIX-x` (double), upper-cases `PREFIX-s`
//!   (char[32]), squares both coordinates of each point in `PREFIX-pts` and the `d` of `PREFIX-mixed`;
//! - `count NAME N`: adds 1 to the counter `NAME` N times, each under the object's lock.
use bitbridge::shared::{Backing, SharedArray};
use bitbridge::Value;

fn open(name: &str) -> SharedArray {
    SharedArray::open(&Backing::Named(name.to_owned())).unwrap_or_else(|e| panic!("opening {name}: {e}"))
}

fn sq(v: &Value) -> Value {
    match v {
        Value::Int(i) => Value::Int(i * i),
        Value::Float(f) => Value::Float(f * f),
        Value::Struct(fields) => Value::Struct(fields.iter().map(sq).collect()),
        other => other.clone(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("square") => {
            let p = &args[2];
            for suffix in ["n", "x", "pts"] {
                let a = open(&format!("{p}-{suffix}"));
                let _g = a.lock().unwrap(); // one update of the whole array
                for i in 0..a.len() {
                    a.set(i, &sq(&a.get(i).unwrap())).unwrap();
                }
            }
            let s = open(&format!("{p}-s"));
            let text = s.get(0).unwrap().as_str().unwrap().to_uppercase();
            s.set(0, &Value::Str(text)).unwrap();
            let m = open(&format!("{p}-mixed"));
            let Value::Struct(f) = m.get(0).unwrap() else { panic!() };
            m.set(0, &Value::Struct(vec![f[0].clone(), sq(&f[1])])).unwrap();
            println!("squared by a {}-bit process", usize::BITS);
        }
        Some("count") => {
            let c = open(&args[2]);
            let n: u32 = args[3].parse().unwrap();
            for _ in 0..n {
                let _g = c.lock().unwrap();
                let v = c.get(0).unwrap().as_i64().unwrap();
                c.set(0, &Value::Int(v + 1)).unwrap();
            }
        }
        _ => {
            eprintln!("usage: shared_child square PREFIX | count NAME N");
            std::process::exit(2);
        }
    }
}
