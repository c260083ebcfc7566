//! `long double` (x87 80-bit extended) as decimal text, both ways, exactly.
//!
//! The conversions are `rustc_apfloat`'s (the Rust port of LLVM's APFloat, which compilers use for
//! exactly this): correctly rounded decimal → 80-bit, and exact 80-bit → decimal at a given precision.
//! Printing picks the shortest decimal that reads back as the same 80 bits (at most 21 significant
//! digits, enough for any 64-bit significand).

use bitbridge::ExtF80;
use rustc_apfloat::ieee::X87DoubleExtended;
use rustc_apfloat::{Float, Round};

fn to_apfloat(x: ExtF80) -> X87DoubleExtended {
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(&x.0);
    X87DoubleExtended::from_bits(u128::from_le_bytes(b))
}

fn from_apfloat(f: X87DoubleExtended) -> ExtF80 {
    let b = f.to_bits().to_le_bytes();
    ExtF80(b[..10].try_into().expect("10 bytes"))
}

/// Reads decimal text (`1.000000000000000000867`, `-2e-4000`, `12`) as the nearest 80-bit value
/// (ties to even), as a C compiler reads a literal with the `L` suffix.
pub fn parse(text: &str) -> Result<ExtF80, String> {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let v = match body.to_ascii_lowercase().as_str() {
        "inf" | "infinity" => X87DoubleExtended::INFINITY,
        "nan" => X87DoubleExtended::NAN,
        _ => {
            X87DoubleExtended::from_str_r(body, Round::NearestTiesToEven)
                .map_err(|e| format!("`{text}` is not a number ({})", e.0))?
                .value
        }
    };
    Ok(from_apfloat(if neg { -v } else { v }))
}

/// The shortest decimal that reads back as `x` (`1.0000000000000000009` for 1 + 2^-60), `inf`,
/// `-inf` or `nan`.
pub fn format(x: ExtF80) -> String {
    let f = to_apfloat(x);
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f.is_negative() { "-inf".into() } else { "inf".into() };
    }
    let mut last = String::new();
    for digits in 1..=21 {
        let s = tidy(&format!("{f:.digits$}"));
        if parse(&s).is_ok_and(|back| back == x) {
            return s;
        }
        last = s;
    }
    last
}

/// APFloat's text in the CLI's float syntax: a lower-case exponent without `+`.
fn tidy(s: &str) -> String {
    s.replace("E+", "e").replace('E', "e").replace(".0e", "e")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_precision_survives_text() {
        // 1 + 2^-60: the significand's 61st bit.
        let x = ExtF80([0x08, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
        assert_eq!(format(x), "1.0000000000000000009");
        assert_eq!(parse("1.00000000000000000087").unwrap(), x);
        assert_eq!(parse("1.000000000000000000867").unwrap(), x);
        assert_eq!(format(ExtF80::from_f64(1.0)), "1");
        assert_eq!(format(ExtF80::from_f64(-2.5)), "-2.5");
        assert_eq!(format(ExtF80::from_f64(0.1)), "0.10000000000000000555");
        assert_eq!(format(parse("0.1").unwrap()), "0.1");
        assert_eq!(format(ExtF80::from_f64(f64::NEG_INFINITY)), "-inf");
        assert_eq!(format(parse("1e4000").unwrap()), "1e4000");
        // 2^63 + 1 is exact in 64 bits of significand.
        assert_eq!(format(parse("9223372036854775809").unwrap()), "9223372036854775809");
    }
}
