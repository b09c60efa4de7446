//! Metadata values. Arrays are typed vectors, so a 49,152-entry vocab is one `Vec<String>`
//! rather than 49,152 boxed values.

use crate::GgufError;
use crate::reader::{Field, Reader};

/// Arrays may nest, but a real file never needs more than this; the cap bounds parser recursion.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// The GGUF value type tags, with their ids from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        match self {
            Self::U8 => 0,
            Self::I8 => 1,
            Self::U16 => 2,
            Self::I16 => 3,
            Self::U32 => 4,
            Self::I32 => 5,
            Self::F32 => 6,
            Self::Bool => 7,
            Self::String => 8,
            Self::Array => 9,
            Self::U64 => 10,
            Self::I64 => 11,
            Self::F64 => 12,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::F32 => "f32",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Array => "array",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type occupies in a file (an empty string or array).
    pub(crate) fn min_size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 4 + 8,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    /// The type for error messages, with the element type for arrays ("array of i32").
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Array(a) => a.type_name(),
            other => other.value_type().name(),
        }
    }

    /// Any integer variant, widened; `None` for floats, bools, strings and arrays.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A homogeneous array value; `Array(Vec<Array>)` is how arrays nest.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    pub fn elem_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self.elem_type() {
            ValueType::U8 => "array of u8",
            ValueType::I8 => "array of i8",
            ValueType::U16 => "array of u16",
            ValueType::I16 => "array of i16",
            ValueType::U32 => "array of u32",
            ValueType::I32 => "array of i32",
            ValueType::F32 => "array of f32",
            ValueType::Bool => "array of bool",
            ValueType::String => "array of string",
            ValueType::Array => "array of array",
            ValueType::U64 => "array of u64",
            ValueType::I64 => "array of i64",
            ValueType::F64 => "array of f64",
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements widened to i128 if this is an integer array, else `None`.
    pub fn ints(&self) -> Option<Vec<i128>> {
        fn widen<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
            v.iter().map(|&x| x.into()).collect()
        }
        Some(match self {
            Self::U8(v) => widen(v),
            Self::I8(v) => widen(v),
            Self::U16(v) => widen(v),
            Self::I16(v) => widen(v),
            Self::U32(v) => widen(v),
            Self::I32(v) => widen(v),
            Self::U64(v) => widen(v),
            Self::I64(v) => widen(v),
            _ => return None,
        })
    }
}

macro_rules! conversions {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        }
        impl From<Vec<$t>> for Array {
            fn from(v: Vec<$t>) -> Self {
                Array::$variant(v)
            }
        }
        impl From<Vec<$t>> for Value {
            fn from(v: Vec<$t>) -> Self {
                Value::Array(Array::$variant(v))
            }
        }
    )*};
}

conversions!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, Array => Array, u64 => U64, i64 => I64, f64 => F64,
);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl From<Vec<&str>> for Value {
    fn from(v: Vec<&str>) -> Self {
        Value::Array(Array::String(v.into_iter().map(str::to_owned).collect()))
    }
}

fn read_type(r: &mut Reader<'_>, what: Field<'_>) -> Result<ValueType, GgufError> {
    let offset = r.offset();
    let type_id = r.u32(what)?;
    ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        what: what.to_string(),
        type_id,
        offset,
    })
}

/// Reads a value type tag and the value of metadata key `key`.
pub(crate) fn read_value(r: &mut Reader<'_>, key: &str) -> Result<Value, GgufError> {
    let what = Field::Value { key };
    Ok(match read_type(r, Field::ValueType { key })? {
        ValueType::U8 => Value::U8(r.u8(what)?),
        ValueType::I8 => Value::I8(r.i8(what)?),
        ValueType::U16 => Value::U16(r.u16(what)?),
        ValueType::I16 => Value::I16(r.i16(what)?),
        ValueType::U32 => Value::U32(r.u32(what)?),
        ValueType::I32 => Value::I32(r.i32(what)?),
        ValueType::F32 => Value::F32(r.f32(what)?),
        ValueType::Bool => Value::Bool(r.bool(what)?),
        ValueType::String => Value::String(r.string(what)?),
        ValueType::Array => Value::Array(read_array(r, key, 1)?),
        ValueType::U64 => Value::U64(r.u64(what)?),
        ValueType::I64 => Value::I64(r.i64(what)?),
        ValueType::F64 => Value::F64(r.f64(what)?),
    })
}

fn read_array(r: &mut Reader<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    let header = Field::ArrayHeader { key };
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            what: header.to_string(),
            max: MAX_ARRAY_DEPTH,
            offset: r.offset(),
        });
    }
    let ty = read_type(r, header)?;
    let count = r.u64(header)?;
    let n = r.check_count(count, ty.min_size(), Field::Elements { key, count })?;
    let at = |index| Field::Element { key, index };
    Ok(match ty {
        ValueType::U8 => Array::U8(collect(r, n, |r, i| r.u8(at(i)))?),
        ValueType::I8 => Array::I8(collect(r, n, |r, i| r.i8(at(i)))?),
        ValueType::U16 => Array::U16(collect(r, n, |r, i| r.u16(at(i)))?),
        ValueType::I16 => Array::I16(collect(r, n, |r, i| r.i16(at(i)))?),
        ValueType::U32 => Array::U32(collect(r, n, |r, i| r.u32(at(i)))?),
        ValueType::I32 => Array::I32(collect(r, n, |r, i| r.i32(at(i)))?),
        ValueType::F32 => Array::F32(collect(r, n, |r, i| r.f32(at(i)))?),
        ValueType::Bool => Array::Bool(collect(r, n, |r, i| r.bool(at(i)))?),
        ValueType::String => Array::String(collect(r, n, |r, i| r.string(at(i)))?),
        ValueType::Array => Array::Array(collect(r, n, |r, _| read_array(r, key, depth + 1))?),
        ValueType::U64 => Array::U64(collect(r, n, |r, i| r.u64(at(i)))?),
        ValueType::I64 => Array::I64(collect(r, n, |r, i| r.i64(at(i)))?),
        ValueType::F64 => Array::F64(collect(r, n, |r, i| r.f64(at(i)))?),
    })
}

/// `n` has been checked against the remaining input, so reserving it up front is safe.
fn collect<'a, T>(
    r: &mut Reader<'a>,
    n: usize,
    mut read: impl FnMut(&mut Reader<'a>, usize) -> Result<T, GgufError>,
) -> Result<Vec<T>, GgufError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(read(r, i)?);
    }
    Ok(out)
}

/// Appends the type tag and encoding of `value`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(&value.value_type().id().to_le_bytes());
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(v) => write_str(out, v),
        Value::Array(v) => write_array(out, v),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_array(out: &mut Vec<u8>, array: &Array) {
    fn each<T>(out: &mut Vec<u8>, v: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
        for x in v {
            put(out, x);
        }
    }
    out.extend_from_slice(&array.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each(out, v, |o, x| o.push(u8::from(*x))),
        Array::String(v) => each(out, v, |o, x| write_str(o, x)),
        Array::Array(v) => each(out, v, write_array),
        Array::U64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each(out, v, |o, x| o.extend_from_slice(&x.to_le_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: &Value) -> Value {
        let mut buf = Vec::new();
        write_value(&mut buf, value);
        let mut r = Reader::new(&buf);
        let back = read_value(&mut r, "k").unwrap();
        assert_eq!(r.remaining(), 0, "{value:?} left bytes unread");
        back
    }

    #[test]
    fn type_ids_round_trip() {
        for id in 0..=12 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
    }

    #[test]
    fn every_scalar_round_trips() {
        let values: Vec<Value> = vec![
            u8::MAX.into(),
            i8::MIN.into(),
            u16::MAX.into(),
            i16::MIN.into(),
            u32::MAX.into(),
            i32::MIN.into(),
            (-1.5f32).into(),
            true.into(),
            false.into(),
            "héllo ✓".into(),
            "".into(),
            u64::MAX.into(),
            i64::MIN.into(),
            std::f64::consts::PI.into(),
        ];
        for v in &values {
            assert_eq!(&round_trip(v), v);
        }
    }

    #[test]
    fn every_array_type_round_trips_including_nesting() {
        let nested = Array::Array(vec![
            Array::Array(vec![Array::I32(vec![1, 2]), Array::String(vec![])]),
            Array::Array(vec![]),
            Array::Bool(vec![true, false]),
        ]);
        let arrays = vec![
            Array::U8(vec![0, 255]),
            Array::I8(vec![-128, 127]),
            Array::U16(vec![1, u16::MAX]),
            Array::I16(vec![i16::MIN]),
            Array::U32(vec![]),
            Array::I32(vec![-1, 0, 1]),
            Array::F32(vec![0.5, -0.0, f32::INFINITY]),
            Array::Bool(vec![true]),
            Array::String(vec!["a".into(), "".into(), "Ġt".into()]),
            Array::U64(vec![u64::MAX]),
            Array::I64(vec![i64::MIN]),
            Array::F64(vec![1e300]),
            nested,
        ];
        for a in arrays {
            let v = Value::Array(a);
            assert_eq!(round_trip(&v), v);
        }
    }

    #[test]
    fn nesting_is_capped() {
        let mut a = Array::U8(vec![1]);
        for _ in 1..MAX_ARRAY_DEPTH {
            a = Array::Array(vec![a]);
        }
        let ok = Value::Array(a.clone());
        assert_eq!(round_trip(&ok), ok);

        let too_deep = Value::Array(Array::Array(vec![a]));
        let mut buf = Vec::new();
        write_value(&mut buf, &too_deep);
        let err = read_value(&mut Reader::new(&buf), "k").unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::NestingTooDeep {
                    max: MAX_ARRAY_DEPTH,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn integer_widening() {
        assert_eq!(Value::U64(u64::MAX).as_int(), Some(u64::MAX.into()));
        assert_eq!(Value::F32(1.0).as_int(), None);
        assert_eq!(Array::I8(vec![-1]).ints(), Some(vec![-1]));
        assert_eq!(Array::String(vec![]).ints(), None);
        assert_eq!(Value::from(vec![1i32]).type_name(), "array of i32");
    }
}
