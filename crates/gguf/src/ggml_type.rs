//! ggml tensor element types: their ids in GGUF files and their block layouts.

use std::fmt;

/// A ggml tensor type. Ids this crate does not know become `Other`, so a file with a newer
/// quantization still opens for its metadata; only reading that tensor's data fails.
#[allow(non_camel_case_types)] // the ggml names, as every GGUF tool prints them
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
    Other(u32),
}

/// Every known type: (type, ggml id, name, elements per block, bytes per block).
const KNOWN: [(GgmlType, u32, &str, u64, u64); 20] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::BF16, 30, "BF16", 1, 2),
];

impl GgmlType {
    /// Every type this crate knows, in id order.
    pub fn known() -> impl Iterator<Item = GgmlType> {
        KNOWN.iter().map(|k| k.0)
    }

    pub fn from_id(id: u32) -> Self {
        KNOWN
            .iter()
            .find(|k| k.1 == id)
            .map_or(Self::Other(id), |k| k.0)
    }

    pub fn id(self) -> u32 {
        match self {
            Self::Other(id) => id,
            // Every other variant is in KNOWN (a test checks), so the fallback is never taken.
            known => entry(known).map_or(u32::MAX, |k| k.1),
        }
    }

    /// The ggml name ("Q4_K"), or "unknown" for `Other`.
    pub fn name(self) -> &'static str {
        entry(self).map_or("unknown", |k| k.2)
    }

    /// Elements per block; `None` for `Other`.
    pub fn block_size(self) -> Option<u64> {
        entry(self).map(|k| k.3)
    }

    /// Bytes per block; `None` for `Other`.
    pub fn block_bytes(self) -> Option<u64> {
        entry(self).map(|k| k.4)
    }

    /// Bytes taken by `n_elements` elements, `None` for `Other`, for a count that is not a whole
    /// number of blocks, or on overflow.
    pub fn n_bytes(self, n_elements: u64) -> Option<u64> {
        let block = self.block_size()?;
        if !n_elements.is_multiple_of(block) {
            return None;
        }
        (n_elements / block).checked_mul(self.block_bytes()?)
    }
}

fn entry(ty: GgmlType) -> Option<&'static (GgmlType, u32, &'static str, u64, u64)> {
    match ty {
        // An `Other` built by hand with a known id is still unknown: `from_id` never makes one.
        GgmlType::Other(_) => None,
        known => KNOWN.iter().find(|k| k.0 == known),
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(id) => write!(f, "unknown ggml type {id}"),
            known => f.write_str(known.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_are_other() {
        for ty in GgmlType::known() {
            assert_eq!(GgmlType::from_id(ty.id()), ty);
            assert_ne!(ty.name(), "unknown");
        }
        assert_eq!(GgmlType::known().count(), 20);
        for id in [4, 5, 16, 29, 31, 39, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), GgmlType::Other(id));
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }

    #[test]
    fn layouts_match_ggml() {
        let expect = [
            ("F32", 0, 1, 4),
            ("F16", 1, 1, 2),
            ("Q4_0", 2, 32, 18),
            ("Q4_1", 3, 32, 20),
            ("Q5_0", 6, 32, 22),
            ("Q5_1", 7, 32, 24),
            ("Q8_0", 8, 32, 34),
            ("Q8_1", 9, 32, 36),
            ("Q2_K", 10, 256, 84),
            ("Q3_K", 11, 256, 110),
            ("Q4_K", 12, 256, 144),
            ("Q5_K", 13, 256, 176),
            ("Q6_K", 14, 256, 210),
            ("Q8_K", 15, 256, 292),
            ("I8", 24, 1, 1),
            ("I16", 25, 1, 2),
            ("I32", 26, 1, 4),
            ("I64", 27, 1, 8),
            ("F64", 28, 1, 8),
            ("BF16", 30, 1, 2),
        ];
        for (name, id, block, bytes) in expect {
            let ty = GgmlType::from_id(id);
            assert_eq!(ty.name(), name);
            assert_eq!(ty.to_string(), name);
            assert_eq!(ty.block_size(), Some(block), "{name}");
            assert_eq!(ty.block_bytes(), Some(bytes), "{name}");
        }
    }

    #[test]
    fn n_bytes() {
        assert_eq!(GgmlType::Q8_0.n_bytes(576 * 49152), Some(30_081_024));
        assert_eq!(GgmlType::Q4_1.n_bytes(576 * 576), Some(207_360));
        assert_eq!(GgmlType::Q4_K.n_bytes(255), None);
        assert_eq!(GgmlType::F64.n_bytes(u64::MAX), None);
        assert_eq!(GgmlType::Other(0).n_bytes(1), None);
        assert_eq!(GgmlType::Other(0).block_size(), None);
        assert_eq!(GgmlType::Other(99).to_string(), "unknown ggml type 99");
    }
}
