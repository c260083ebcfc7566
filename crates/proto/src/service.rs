//! The data of custom servers' services ([`Request::Start`](crate::Request::Start),
//! [`Request::Invoke`](crate::Request::Invoke), [`Request::Get`](crate::Request::Get)): any serde value,
//! encoded as CBOR.
//!
//! CBOR describes itself, unlike the fixed-width bincode of the rest of the protocol: a method given an
//! argument of the wrong type reports "invalid type: string, expected i32" instead of misreading bytes,
//! and an echo can hand back whatever it was given. Integers keep their width (up to 128 bits) on both
//! sides whatever the pointer width, so nothing depends on the server's bitness.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Kinds of [`Reply::Raised`](crate::Reply::Raised) errors that bitbridge itself raises around a
/// service's code (a service's own errors carry kinds it chooses).
pub mod kinds {
    /// No method of that name is registered.
    pub const UNKNOWN_METHOD: &str = "bitbridge::UnknownMethod";
    /// No property of that name is registered.
    pub const UNKNOWN_PROPERTY: &str = "bitbridge::UnknownProperty";
    /// The arguments do not decode as the method's parameter types.
    pub const BAD_ARGUMENTS: &str = "bitbridge::BadArguments";
    /// The constructor options do not decode as the service's options type.
    pub const BAD_OPTIONS: &str = "bitbridge::BadOptions";
    /// The method's result could not be encoded.
    pub const BAD_RESULT: &str = "bitbridge::BadResult";
    /// The service code panicked; the message is the panic's.
    pub const PANIC: &str = "bitbridge::Panic";
    /// A method or property was asked for before the service object was constructed.
    pub const NOT_STARTED: &str = "bitbridge::NotStarted";
}

/// The arguments of a call without any: the empty sequence (what [`encode_args`] makes of `()`).
pub const NO_ARGUMENTS: &[u8] = &[0x80];

/// Encodes a method's arguments: always a sequence, so `()` (which serde sees as a unit value, not as
/// an empty tuple) becomes the empty one.
pub fn encode_args<T: Serialize + ?Sized>(args: &T) -> Result<Vec<u8>, String> {
    // Only `()` itself: `None` or a unit struct as the only argument encodes as null too, and is sent as
    // given (then refused by a method that takes a sequence).
    if is_unit::<T>() {
        return Ok(NO_ARGUMENTS.to_vec());
    }
    encode(args)
}

/// Whether `T` is `()`: what a call without arguments passes, and what a method without parameters
/// takes. (`TypeId` would need `T: 'static`, which borrowed arguments are not.)
pub fn is_unit<T: ?Sized>() -> bool {
    std::any::type_name::<T>() == "()"
}

/// `()` (serde's unit) as encoded: what a method without parameters decodes its arguments from.
pub const UNIT: &[u8] = &[0xf6];

/// Encodes a value, refusing one larger than `max` bytes as soon as it passes the limit (so a huge
/// result never allocates more than `max`).
pub fn encode_bounded<T: Serialize + ?Sized>(value: &T, max: u64) -> Result<Vec<u8>, String> {
    struct Bounded {
        out: Vec<u8>,
        max: u64,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.out.len() as u64 + buf.len() as u64 > self.max {
                return Err(std::io::Error::other("too large"));
            }
            self.out.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Bounded { out: Vec::new(), max };
    match ciborium::into_writer(value, &mut w) {
        Ok(()) => Ok(w.out),
        Err(ciborium::ser::Error::Io(_)) => Err(format!("it is larger than the {max}-byte frame limit")),
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    encode_bounded(value, u64::MAX)
}

/// Decodes a value of type `T` from all of `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|e| match e {
        ciborium::de::Error::Semantic(_, m) => m,
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".into(),
        other => other.to_string(),
    })?;
    if !reader.is_empty() {
        return Err(format!("{} bytes after the value", reader.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_are_named() {
        let bytes = encode(&("text", 1u8)).unwrap();
        let err = decode::<(i32, u8)>(&bytes).unwrap_err();
        assert!(err.contains("invalid type") && err.contains("string"), "{err}");
        assert_eq!(decode::<(String, u8)>(&bytes).unwrap(), ("text".to_string(), 1));
        assert!(decode::<(String, u8)>(&[bytes.as_slice(), &[0]].concat()).unwrap_err().contains("1 bytes after"));
    }

    #[test]
    fn only_unit_means_no_arguments() {
        assert_eq!(encode(&()).unwrap(), UNIT);
        assert_eq!(encode_args(&()).unwrap(), NO_ARGUMENTS);
        assert_eq!(encode_args(&None::<u8>).unwrap(), encode(&None::<u8>).unwrap());
        assert_eq!(encode_args(&(1u8,)).unwrap(), encode(&(1u8,)).unwrap());
    }

    #[test]
    fn bounded_encoding_stops_at_the_limit() {
        let big = vec![1.5f64; 1000];
        assert!(encode_bounded(&big, 100).unwrap_err().contains("larger than the 100-byte frame limit"));
        assert_eq!(encode_bounded(&big, 1 << 20).unwrap(), encode(&big).unwrap());
    }

    #[test]
    fn wide_integers_survive() {
        let v = (u128::MAX, i128::MIN, u64::MAX, i64::MIN);
        assert_eq!(decode::<(u128, i128, u64, i64)>(&encode(&v).unwrap()).unwrap(), v);
        assert!(decode::<u8>(&encode(&300u32).unwrap()).is_err());
    }
}
