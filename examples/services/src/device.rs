//! A wrapper that holds state across calls: it opens a device of the driver `fixtures/device.c` when
//! constructed, keeps the handle, reads samples on request, and closes the device when asked (or when
//! the server shuts down). Driver status codes become errors of kind `DeviceError` with the driver's
//! own message.

use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::path::PathBuf;

use bitbridge_service::{Error, Methods, Result, Service};
use serde::{Deserialize, Serialize};

/// The most samples one `read` returns (8 MiB of doubles: one reply, on any server).
pub const MAX_SAMPLES: u32 = 1 << 20;

/// The constructor's options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceOptions {
    /// The driver library (built for the server's architecture).
    pub library: PathBuf,
    /// Which device: `sim0` to `sim3`.
    pub device: String,
    /// The level to set right after opening.
    pub level: f64,
}

/// What the `status` property reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The device name.
    pub device: String,
    /// Whether it is still open.
    pub open: bool,
    /// Samples read since it was opened, as the driver counts them.
    pub reads: u32,
}

#[derive(Debug)]
struct Driver {
    open: unsafe extern "C" fn(*const c_char, *mut c_int) -> c_int,
    set_level: extern "C" fn(c_int, f64) -> c_int,
    read: unsafe extern "C" fn(c_int, *mut f64, c_int) -> c_int,
    serial: unsafe extern "C" fn(c_int, *mut c_char, c_int) -> c_int,
    reads: extern "C" fn(c_int) -> c_uint,
    close: extern "C" fn(c_int) -> c_int,
    strerror: extern "C" fn(c_int) -> *const c_char,
}

/// The wrapper.
#[derive(Debug)]
pub struct Device {
    name: String,
    handle: Option<c_int>,
    driver: Driver,
    _lib: libloading::Library,
}

impl Device {
    /// A driver status as a result.
    fn check(&self, code: c_int) -> Result<c_int> {
        if code >= 0 {
            return Ok(code);
        }
        // SAFETY: dev_strerror returns a static NUL-terminated string for any code.
        let text = unsafe { CStr::from_ptr((self.driver.strerror)(code)) };
        Err(Error::new("DeviceError", format!("{} (status {code})", text.to_string_lossy())))
    }

    fn handle(&self) -> Result<c_int> {
        self.handle.ok_or_else(|| Error::new("DeviceError", format!("{} is closed", self.name)))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            (self.driver.close)(h);
        }
    }
}

impl Service for Device {
    type Options = DeviceOptions;

    fn start(o: DeviceOptions) -> Result<Self> {
        let lib = crate::open(&o.library)?;
        // SAFETY: each type is the C declaration of the function in fixtures/device.c.
        let driver = unsafe {
            Driver {
                open: crate::symbol(&lib, "dev_open")?,
                set_level: crate::symbol(&lib, "dev_set_level")?,
                read: crate::symbol(&lib, "dev_read")?,
                serial: crate::symbol(&lib, "dev_serial")?,
                reads: crate::symbol(&lib, "dev_reads")?,
                close: crate::symbol(&lib, "dev_close")?,
                strerror: crate::symbol(&lib, "dev_strerror")?,
            }
        };
        let mut device = Device { name: o.device.clone(), handle: None, driver, _lib: lib };
        let name = CString::new(o.device)?;
        let mut handle: c_int = -1;
        // SAFETY: a NUL-terminated name and a pointer to one int, as dev_open takes.
        let code = unsafe { (device.driver.open)(name.as_ptr(), &mut handle) };
        device.check(code)?;
        device.handle = Some(handle);
        device.check((device.driver.set_level)(handle, o.level))?;
        Ok(device)
    }

    fn methods(m: &mut Methods<Self>) {
        m.method("read", |d: &mut Device, (n,): (u32,)| {
            let h = d.handle()?;
            if n > MAX_SAMPLES {
                return Err(Error::new("ValueError", format!("at most {MAX_SAMPLES} samples per read, not {n}")));
            }
            let n = n as c_int;
            let mut buf = vec![0.0; n as usize];
            // SAFETY: the buffer holds n doubles.
            let got = d.check(unsafe { (d.driver.read)(h, buf.as_mut_ptr(), n) })?;
            buf.truncate(got as usize);
            Ok(buf)
        });
        m.method("set_level", |d: &mut Device, (level,): (f64,)| {
            let h = d.handle()?;
            d.check((d.driver.set_level)(h, level)).map(drop)
        });
        m.method("serial", |d: &mut Device, ()| {
            let h = d.handle()?;
            let mut buf = [0u8; 32];
            // SAFETY: the buffer's length is passed with it; the driver NUL-terminates within it.
            d.check(unsafe { (d.driver.serial)(h, buf.as_mut_ptr().cast(), buf.len() as c_int) })?;
            Ok(CStr::from_bytes_until_nul(&buf)?.to_string_lossy().into_owned())
        });
        m.method("close", |d: &mut Device, ()| {
            let h = d.handle()?;
            d.check((d.driver.close)(h))?;
            d.handle = None;
            Ok(())
        });
        m.property("status", |d: &Device| Status {
            device: d.name.clone(),
            open: d.handle.is_some(),
            reads: d.handle.map_or(0, |h| (d.driver.reads)(h)),
        });
    }
}
