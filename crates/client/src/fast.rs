//! The fast path of a call: where each argument goes, planned once when the function is prepared, and
//! a call whose arguments all lay out as plain bytes (numbers, addresses, structs and arrays of them)
//! written into a buffer on the stack, then straight into the frame
//! ([`bitbridge_proto::flat`]). Nothing is allocated for the arguments, and the server answers with a
//! reply it also writes by hand. Everything else (strings, pointees to copy, shared buffers, variadic
//! calls, `char *` results) takes the general path, which also names any error: a value that does not
//! fit its type is left to it.

use bitbridge_proto::marshal::encode_plain;
use bitbridge_proto::msg::arg_slots;
use bitbridge_proto::{CType, Signature, Target, Value};

/// The most argument bytes the fast path lays out (on the stack): 16 slots of 16 bytes.
pub(crate) const MAX_ARGS: usize = 256;

/// A prepared function's argument slots and result size.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Each parameter's (offset, size) in the argument bytes.
    slots: Vec<(usize, usize)>,
    args_len: usize,
    /// The return type's size (0 for `void`).
    pub(crate) ret_size: u64,
}

impl Plan {
    /// The plan for `sig` on `target`, or `None` when no call of it can take the fast path.
    pub(crate) fn new(target: &Target, sig: &Signature) -> Option<Plan> {
        if sig.variadic || matches!(sig.ret, CType::CStr | CType::WStr) {
            return None;
        }
        let sizes: Vec<u64> =
            sig.params.iter().map(|p| target.layout(&p.ty).ok().map(|l| l.size)).collect::<Option<_>>()?;
        let (offsets, len) = arg_slots(sizes.iter().copied());
        if len > MAX_ARGS as u64 {
            return None;
        }
        let ret_size = match &sig.ret {
            CType::Void => 0,
            ty => target.layout(ty).ok()?.size,
        };
        let slots = offsets.iter().zip(&sizes).map(|(&o, &s)| (o as usize, s as usize)).collect();
        Some(Plan { slots, args_len: len as usize, ret_size })
    }

    /// Lays `args` out into `buf` and returns the argument bytes, or `None` when one of them needs
    /// memory of its own or does not fit its type (the general path then lays the call out or names
    /// the error).
    pub(crate) fn encode<'b>(
        &self,
        target: &Target,
        sig: &Signature,
        args: &[Value],
        buf: &'b mut [u8; MAX_ARGS],
    ) -> Option<&'b [u8]> {
        if args.len() != self.slots.len() {
            return None;
        }
        let bytes = &mut buf[..self.args_len];
        bytes.fill(0); // padding, and `Value::Zeros`, which writes nothing
        for ((p, v), &(off, size)) in sig.params.iter().zip(args).zip(&self.slots) {
            // A pointer that is not an address needs a block: known without trying.
            if p.ty.is_pointer() && !matches!(v, Value::Pointer(_)) {
                return None;
            }
            if !encode_plain(target, &p.ty, v, &mut bytes[off..off + size]) {
                return None;
            }
        }
        Some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitbridge_proto::encode_call;

    /// The fast path's bytes are the general encoder's, wherever it applies.
    #[test]
    fn the_same_bytes_as_the_general_encoder() {
        let point = CType::structure("point", [("x", CType::Double), ("y", CType::Int)]);
        let sig = Signature::new(CType::Int)
            .arg(CType::Char)
            .arg(CType::Long)
            .arg(CType::Double)
            .arg(point.clone())
            .arg(CType::ptr(CType::Int))
            .arg(CType::Array(Box::new(CType::Short), 3));
        let args = [
            Value::Int(-1),
            Value::Int(7),
            Value::Float(2.5),
            Value::Struct(vec![Value::Float(1.0), Value::Int(2)]),
            Value::Pointer(0x1000),
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(3)]),
        ];
        for target in [Target::I386_SYSV, Target::X86_64_SYSV, Target::WIN32, Target::WIN64] {
            let plan = Plan::new(&target, &sig).unwrap();
            let mut buf = [0xEE; MAX_ARGS];
            let fast = plan.encode(&target, &sig, &args, &mut buf).unwrap();
            let (general, _) = encode_call(&target, &sig, &args).unwrap();
            assert_eq!(fast, &general.args[..], "{target:?}");
            assert!(general.blocks.is_empty());
        }
    }

    #[test]
    fn what_needs_memory_or_is_wrong_is_left_to_the_general_path() {
        let t = Target::I386_SYSV;
        let sig = Signature::new(CType::Void).arg(CType::ptr(CType::Int)).arg(CType::Char);
        let plan = Plan::new(&t, &sig).unwrap();
        let mut buf = [0; MAX_ARGS];
        assert!(plan.encode(&t, &sig, &[Value::Array(vec![Value::Int(1)]), Value::Int(1)], &mut buf).is_none());
        assert!(plan.encode(&t, &sig, &[Value::Pointer(0), Value::Int(300)], &mut buf).is_none()); // out of range
        assert!(plan.encode(&t, &sig, &[Value::Pointer(1 << 40), Value::Int(1)], &mut buf).is_none()); // > 32 bits
        assert!(plan.encode(&t, &sig, &[Value::Pointer(0)], &mut buf).is_none()); // too few
        assert!(plan.encode(&t, &sig, &[Value::Pointer(0), Value::Int(1)], &mut buf).is_some());
        assert!(Plan::new(&t, &Signature::new(CType::CStr)).is_none());
        assert!(Plan::new(&t, &Signature::new(CType::Int).arg(CType::Int).variadic()).is_none());
        let big = Signature::new(CType::Void).arg(CType::Array(Box::new(CType::Char), 300));
        assert!(Plan::new(&t, &big).is_none());
    }
}
