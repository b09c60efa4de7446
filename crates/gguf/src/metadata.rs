//! The metadata key/value store: file order kept, lookup by key, and typed getters whose errors
//! name the key, so a consumer can `?` its way through a model's hyperparameters.

use std::collections::HashMap;

use crate::{Array, GgufError, Value};

/// The key/value pairs of a GGUF file, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

/// Why a present value could not be converted; the caller adds the key.
enum Mismatch {
    WrongType,
    OutOfRange { value: String, target: &'static str },
}

fn int<T: TryFrom<i128>>(value: &Value, target: &'static str) -> Result<T, Mismatch> {
    let v = value.as_int().ok_or(Mismatch::WrongType)?;
    T::try_from(v).map_err(|_| Mismatch::OutOfRange {
        value: v.to_string(),
        target,
    })
}

fn narrow_f64(v: f64) -> Result<f32, Mismatch> {
    let narrowed = v as f32;
    if v.is_finite() && !narrowed.is_finite() {
        return Err(Mismatch::OutOfRange {
            value: v.to_string(),
            target: "f32",
        });
    }
    Ok(narrowed)
}

macro_rules! required {
    ($($get:ident => $opt:ident -> $t:ty;)*) => {$(
        #[doc = concat!("Like [`Self::", stringify!($opt), "`], but a missing key is an error too.")]
        pub fn $get(&self, key: &str) -> Result<$t, GgufError> {
            self.$opt(key)?.ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
        }
    )*};
}

impl Metadata {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    /// Adds an entry; gives the key back if it is already present.
    pub(crate) fn insert(&mut self, key: String, value: Value) -> Result<(), String> {
        if self.index.contains_key(&key) {
            return Err(key);
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.index.get(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// Looks `key` up and converts it; `Ok(None)` if absent, an error naming the key if the
    /// value has the wrong type or does not fit.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        convert: impl FnOnce(&'a Value) -> Result<T, Mismatch>,
    ) -> Result<Option<T>, GgufError> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        convert(value).map(Some).map_err(|m| match m {
            Mismatch::WrongType => GgufError::WrongType {
                key: key.to_owned(),
                expected,
                found: value.type_name(),
            },
            Mismatch::OutOfRange { value, target } => GgufError::OutOfRange {
                key: key.to_owned(),
                value,
                target,
            },
        })
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", |v| v.as_str().ok_or(Mismatch::WrongType))
    }

    /// Any integer type whose value fits in a u32.
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "u32", |v| int(v, "u32"))
    }

    /// Any integer type whose value fits in a u64.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "u64", |v| int(v, "u64"))
    }

    /// Any integer type whose value fits in an i64.
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "i64", |v| int(v, "i64"))
    }

    /// F32, or F64 narrowed (an error if it overflows f32).
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "f32", |v| match *v {
            Value::F32(x) => Ok(x),
            Value::F64(x) => narrow_f64(x),
            _ => Err(Mismatch::WrongType),
        })
    }

    /// F64, or F32 widened.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.typed(key, "f64", |v| match *v {
            Value::F32(x) => Ok(x.into()),
            Value::F64(x) => Ok(x),
            _ => Err(Mismatch::WrongType),
        })
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", |v| match *v {
            Value::Bool(b) => Ok(b),
            _ => Err(Mismatch::WrongType),
        })
    }

    /// An array of any element type.
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.typed(key, "array", |v| v.as_array().ok_or(Mismatch::WrongType))
    }

    pub fn opt_str_array(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        self.typed(key, "array of string", |v| match v {
            Value::Array(Array::String(s)) => Ok(s.as_slice()),
            _ => Err(Mismatch::WrongType),
        })
    }

    /// An array of any integer element type whose values all fit in an i32.
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.typed(key, "array of integers", |v| {
            if let Value::Array(Array::I32(v)) = v {
                return Ok(v.clone());
            }
            let ints = v
                .as_array()
                .and_then(Array::ints)
                .ok_or(Mismatch::WrongType)?;
            ints.iter()
                .enumerate()
                .map(|(i, &x)| {
                    i32::try_from(x).map_err(|_| Mismatch::OutOfRange {
                        value: format!("{x} (element {i})"),
                        target: "i32",
                    })
                })
                .collect()
        })
    }

    /// An array of F32, or of F64 narrowed.
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.typed(key, "array of floats", |v| match v {
            Value::Array(Array::F32(v)) => Ok(v.clone()),
            Value::Array(Array::F64(v)) => v.iter().map(|&x| narrow_f64(x)).collect(),
            _ => Err(Mismatch::WrongType),
        })
    }

    required! {
        get_str => opt_str -> &str;
        get_u32 => opt_u32 -> u32;
        get_u64 => opt_u64 -> u64;
        get_i64 => opt_i64 -> i64;
        get_f32 => opt_f32 -> f32;
        get_f64 => opt_f64 -> f64;
        get_bool => opt_bool -> bool;
        get_array => opt_array -> &Array;
        get_str_array => opt_str_array -> &[String];
        get_i32_array => opt_i32_array -> Vec<i32>;
        get_f32_array => opt_f32_array -> Vec<f32>;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(entries: Vec<(&str, Value)>) -> Metadata {
        let mut m = Metadata::default();
        for (k, v) in entries {
            m.insert(k.to_owned(), v).unwrap();
        }
        m
    }

    #[test]
    fn keeps_file_order_and_rejects_duplicates() {
        let mut m = metadata(vec![("b", 1u8.into()), ("a", 2u8.into())]);
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(m.insert("a".into(), 3u8.into()), Err("a".to_owned()));
        assert_eq!(m.get("a"), Some(&Value::U8(2)));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn integers_convert_when_they_fit() {
        let m = metadata(vec![
            ("u8", 7u8.into()),
            ("i64", 5i64.into()),
            ("neg", (-1i32).into()),
            ("big", u64::MAX.into()),
            ("f", 1.0f32.into()),
        ]);
        assert_eq!(m.get_u32("u8").unwrap(), 7);
        assert_eq!(m.get_u32("i64").unwrap(), 5);
        assert_eq!(m.get_u64("big").unwrap(), u64::MAX);
        assert_eq!(m.get_i64("neg").unwrap(), -1);

        let err = m.get_u32("neg").unwrap_err();
        assert!(matches!(&err, GgufError::OutOfRange { key, target: "u32", .. } if key == "neg"));
        assert_eq!(
            err.to_string(),
            "metadata key \"neg\": value -1 does not fit in u32"
        );
        assert!(matches!(
            m.get_i64("big"),
            Err(GgufError::OutOfRange { .. })
        ));

        let err = m.get_u32("f").unwrap_err();
        assert_eq!(err.to_string(), "metadata key \"f\" is f32, expected u32");
    }

    #[test]
    fn missing_and_optional() {
        let m = metadata(vec![("s", "x".into())]);
        let err = m.get_u32("nope").unwrap_err();
        assert_eq!(err.to_string(), "metadata key \"nope\" is missing");
        assert_eq!(m.opt_u32("nope").unwrap(), None);
        assert_eq!(m.opt_str("s").unwrap(), Some("x"));
        // Present with the wrong type is an error even for the optional getter.
        assert!(matches!(
            m.opt_u32("s"),
            Err(GgufError::WrongType {
                found: "string",
                ..
            })
        ));
        assert!(matches!(
            m.opt_bool("s"),
            Err(GgufError::WrongType {
                expected: "bool",
                ..
            })
        ));
    }

    #[test]
    fn floats() {
        let m = metadata(vec![
            ("f32", 1.5f32.into()),
            ("f64", 0.25f64.into()),
            ("huge", 1e300f64.into()),
        ]);
        assert_eq!(m.get_f32("f32").unwrap(), 1.5);
        assert_eq!(m.get_f32("f64").unwrap(), 0.25);
        assert_eq!(m.get_f64("f32").unwrap(), 1.5);
        assert!(matches!(
            m.get_f32("huge"),
            Err(GgufError::OutOfRange { .. })
        ));
    }

    #[test]
    fn arrays() {
        let m = metadata(vec![
            ("tokens", vec!["a", "b"].into()),
            ("types", vec![1i32, 3].into()),
            ("u8s", vec![1u8, 255].into()),
            ("wide", vec![0u64, 1 << 40].into()),
            ("scores", vec![0.5f32].into()),
            ("scores64", vec![0.5f64].into()),
            ("flag", true.into()),
        ]);
        assert_eq!(m.get_str_array("tokens").unwrap(), ["a", "b"]);
        assert_eq!(m.get_i32_array("types").unwrap(), [1, 3]);
        assert_eq!(m.get_i32_array("u8s").unwrap(), [1, 255]);
        let err = m.get_i32_array("wide").unwrap_err();
        assert!(
            err.to_string().contains("1099511627776 (element 1)"),
            "{err}"
        );
        assert_eq!(m.get_f32_array("scores").unwrap(), [0.5]);
        assert_eq!(m.get_f32_array("scores64").unwrap(), [0.5]);
        assert_eq!(m.get_array("u8s").unwrap().len(), 2);
        assert!(m.get_bool("flag").unwrap());

        let err = m.get_str_array("types").unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata key \"types\" is array of i32, expected array of string"
        );
        assert!(matches!(
            m.get_i32_array("tokens"),
            Err(GgufError::WrongType { .. })
        ));
        assert!(matches!(
            m.get_f32_array("types"),
            Err(GgufError::WrongType { .. })
        ));
        assert_eq!(m.opt_str_array("absent").unwrap(), None);
        assert!(matches!(
            m.get_str_array("absent"),
            Err(GgufError::MissingKey { .. })
        ));
    }
}
