//! Platform code behind one small API. Only Unix exists so far; Windows slots in beside it.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::take_connection;
#[cfg(unix)]
pub(crate) use unix::{copy_own_memory, copy_to_own_memory};
