//! Platform code behind one small API: Linux, and Windows (run under Wine).

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::take_connection;
#[cfg(unix)]
pub(crate) use unix::ServingThread;
#[cfg(unix)]
pub(crate) use unix::{
    copy_own_memory, copy_to_own_memory, get_errno, get_last_error, load_library, open_arena, set_errno, set_last_error,
};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::take_connection;
#[cfg(windows)]
pub(crate) use windows::ServingThread;
#[cfg(windows)]
pub(crate) use windows::{
    copy_own_memory, copy_to_own_memory, get_errno, get_last_error, load_library, open_arena, set_errno, set_last_error,
};
