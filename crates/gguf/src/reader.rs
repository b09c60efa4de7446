//! A bounds-checked little-endian cursor over a byte slice; every read names what it was reading.

use std::fmt;

use crate::GgufError;

/// What a read was for, so an error can say it without formatting a string on every read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Field<'a> {
    Magic,
    Version,
    TensorCount,
    KvCount,
    Key { index: u64 },
    ValueType { key: &'a str },
    Value { key: &'a str },
    ArrayHeader { key: &'a str },
    Element { key: &'a str, index: usize },
    Elements { key: &'a str, count: u64 },
    Entries { count: u64 },
    TensorInfos { count: u64 },
    TensorName { index: u64 },
    Tensor { name: &'a str, part: &'static str },
}

impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic => f.write_str("the magic"),
            Self::Version => f.write_str("the version"),
            Self::TensorCount => f.write_str("the tensor count"),
            Self::KvCount => f.write_str("the metadata count"),
            Self::Key { index } => write!(f, "the key of metadata entry {index}"),
            Self::ValueType { key } => write!(f, "the value type of key {key:?}"),
            Self::Value { key } => write!(f, "the value of key {key:?}"),
            Self::ArrayHeader { key } => write!(f, "the array header of key {key:?}"),
            Self::Element { key, index } => write!(f, "element {index} of key {key:?}"),
            Self::Elements { key, count } => write!(f, "the {count} elements of key {key:?}"),
            Self::Entries { count } => write!(f, "the {count} metadata entries"),
            Self::TensorInfos { count } => write!(f, "the {count} tensor infos"),
            Self::TensorName { index } => write!(f, "the name of tensor {index}"),
            Self::Tensor { name, part } => write!(f, "the {part} of tensor {name:?}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.pos as u64
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.buf.len().saturating_sub(self.pos) as u64
    }

    fn truncated(&self, what: Field<'_>, needed: u64) -> GgufError {
        GgufError::Truncated {
            what: what.to_string(),
            offset: self.offset(),
            needed,
            available: self.remaining(),
        }
    }

    pub(crate) fn bytes(&mut self, n: u64, what: Field<'_>) -> Result<&'a [u8], GgufError> {
        let slice = usize::try_from(n)
            .ok()
            .and_then(|n| self.buf.get(self.pos..self.pos.checked_add(n)?));
        match slice {
            Some(slice) => {
                self.pos += slice.len();
                Ok(slice)
            }
            None => Err(self.truncated(what, n)),
        }
    }

    pub(crate) fn array<const N: usize>(&mut self, what: Field<'_>) -> Result<[u8; N], GgufError> {
        let bytes = self.bytes(N as u64, what)?;
        // `bytes` returned exactly N bytes, so the conversion cannot fail; map it anyway rather than unwrap.
        bytes.try_into().map_err(|_| self.truncated(what, N as u64))
    }

    pub(crate) fn u8(&mut self, what: Field<'_>) -> Result<u8, GgufError> {
        self.array::<1>(what).map(|[b]| b)
    }
    pub(crate) fn i8(&mut self, what: Field<'_>) -> Result<i8, GgufError> {
        self.array(what).map(i8::from_le_bytes)
    }
    pub(crate) fn u16(&mut self, what: Field<'_>) -> Result<u16, GgufError> {
        self.array(what).map(u16::from_le_bytes)
    }
    pub(crate) fn i16(&mut self, what: Field<'_>) -> Result<i16, GgufError> {
        self.array(what).map(i16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self, what: Field<'_>) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }
    pub(crate) fn i32(&mut self, what: Field<'_>) -> Result<i32, GgufError> {
        self.array(what).map(i32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self, what: Field<'_>) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }
    pub(crate) fn i64(&mut self, what: Field<'_>) -> Result<i64, GgufError> {
        self.array(what).map(i64::from_le_bytes)
    }
    pub(crate) fn f32(&mut self, what: Field<'_>) -> Result<f32, GgufError> {
        self.array(what).map(f32::from_le_bytes)
    }
    pub(crate) fn f64(&mut self, what: Field<'_>) -> Result<f64, GgufError> {
        self.array(what).map(f64::from_le_bytes)
    }

    pub(crate) fn bool(&mut self, what: Field<'_>) -> Result<bool, GgufError> {
        let offset = self.offset();
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(GgufError::InvalidBool {
                what: what.to_string(),
                byte,
                offset,
            }),
        }
    }

    /// A u64 length followed by that many bytes, and the offset of those bytes.
    pub(crate) fn len_prefixed(&mut self, what: Field<'_>) -> Result<(u64, &'a [u8]), GgufError> {
        let len = self.u64(what)?;
        let offset = self.offset();
        Ok((offset, self.bytes(len, what)?))
    }

    /// A u64 length followed by that many bytes of UTF-8, borrowed from the buffer.
    pub(crate) fn str(&mut self, what: Field<'_>) -> Result<&'a str, GgufError> {
        let (offset, bytes) = self.len_prefixed(what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset,
        })
    }

    pub(crate) fn string(&mut self, what: Field<'_>) -> Result<String, GgufError> {
        self.str(what).map(str::to_owned)
    }

    /// Checks that `count` items of at least `min_size` bytes each can still be in the buffer,
    /// so a corrupt count can never make us allocate more than the input size justifies.
    pub(crate) fn check_count(
        &self,
        count: u64,
        min_size: u64,
        what: Field<'_>,
    ) -> Result<usize, GgufError> {
        let needed = count.saturating_mul(min_size);
        match usize::try_from(count) {
            Ok(count) if needed <= self.remaining() => Ok(count),
            _ => Err(self.truncated(what, needed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_and_advances() {
        let buf = [1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0xff];
        let mut r = Reader::new(&buf);
        assert_eq!(r.u32(Field::Magic).unwrap(), 1);
        assert_eq!(r.u64(Field::Magic).unwrap(), 2);
        assert_eq!(r.i8(Field::Magic).unwrap(), -1);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn truncation_names_the_field_and_offset() {
        let buf = [0u8; 6];
        let mut r = Reader::new(&buf);
        r.u32(Field::Version).unwrap();
        let err = r.u32(Field::TensorCount).unwrap_err();
        assert!(matches!(
            err,
            GgufError::Truncated {
                offset: 4,
                needed: 4,
                available: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("the tensor count"), "{err}");
        // A failed read does not move the cursor.
        assert_eq!(r.offset(), 4);
    }

    #[test]
    fn huge_string_length_is_truncation_not_allocation() {
        let mut buf = u64::MAX.to_le_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        let err = Reader::new(&buf)
            .string(Field::Value { key: "k" })
            .unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::Truncated {
                    needed: u64::MAX,
                    offset: 8,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn check_count_bounds_by_remaining_bytes() {
        let buf = [0u8; 16];
        let r = Reader::new(&buf);
        assert_eq!(r.check_count(4, 4, Field::KvCount).unwrap(), 4);
        assert!(r.check_count(5, 4, Field::KvCount).is_err());
        assert!(r.check_count(u64::MAX, 8, Field::KvCount).is_err());
    }
}
