//! [`Unlocked`]: a client object whose drop releases the GIL.
//!
//! Dropping a server, library, function, callback or shared object sends a request to the server and
//! may wait for its answer; a Python object's destructor runs with the GIL held. Waiting there while
//! another thread's call needs the GIL to run a Python callback (the server waits for that callback
//! before it answers anything else) deadlocks the interpreter: found with eight threads calling a
//! function that calls back. So every such object lives in an `Unlocked`, whose drop lets go of the GIL
//! around the native drop, as the calls themselves do.

use std::ops::Deref;

use pyo3::Python;

/// A value dropped with the GIL released.
#[derive(Debug)]
pub struct Unlocked<T: Send>(Option<T>);

impl<T: Send> Unlocked<T> {
    pub fn new(value: T) -> Unlocked<T> {
        Unlocked(Some(value))
    }
}

impl<T: Send> Deref for Unlocked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send> Drop for Unlocked<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            // Destructors run attached (tp_dealloc), so this attach is the thread's own.
            Python::attach(|py| py.detach(move || drop(value)));
        }
    }
}
