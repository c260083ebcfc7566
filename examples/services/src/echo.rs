//! The echo server: returns every argument it gets, and its constructor options, unchanged (plus a
//! few methods that misbehave on purpose, for the lifecycle tests).
//!
//! It checks that any serde value survives the trip to a 32-bit process and back: the client sends
//! typed values, the server holds them as self-describing [`Value`]s, and the client decodes them into
//! the same types.

use bitbridge_service::{Methods, Result, Service, Value};

/// The echo service. Its options are any value; the `options` property gives them back.
#[derive(Debug)]
pub struct Echo {
    options: Value,
    calls: u64,
}

impl Drop for Echo {
    /// Says so on stdout, which the client gets back from `shutdown`: the tests check that a service
    /// object is dropped when its server shuts down, with any number of workers.
    fn drop(&mut self) {
        println!("echo: dropped after {} calls", self.calls);
    }
}

impl Service for Echo {
    type Options = Value;

    fn start(options: Value) -> Result<Self> {
        Ok(Echo { options, calls: 0 })
    }

    fn methods(m: &mut Methods<Self>) {
        // Positional arguments, as a sequence: echo(a, b, c) returns (a, b, c).
        m.method("echo", |e: &mut Echo, args: Vec<Value>| {
            e.calls += 1;
            Ok(args)
        });
        // One argument of any shape returned as is.
        m.method("echo_one", |e: &mut Echo, (arg,): (Value,)| {
            e.calls += 1;
            Ok(arg)
        });
        // For the lifecycle tests: a method that takes its time, one that kills the process, one that
        // panics, and one that prints.
        m.method("sleep", |_: &mut Echo, (ms,): (u64,)| {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        });
        m.method("abort", |_: &mut Echo, ()| -> Result<()> { std::process::abort() });
        m.method("panic", |_: &mut Echo, (message,): (String,)| -> Result<()> { panic!("{message}") });
        m.method("print", |_: &mut Echo, (text,): (String,)| {
            println!("{text}");
            Ok(())
        });
        m.property("options", |e: &Echo| e.options.clone());
        m.property("calls", |e: &Echo| e.calls);
        m.property("pointer_width", |_: &Echo| std::mem::size_of::<usize>() * 8);
    }
}
