//! Helpers shared by the integration tests: finding the real model, locating its header regions,
//! a seeded RNG, and a parse wrapper that turns panics and oversized allocations into failures.
//! Its allocator is the test binary's global allocator, so every module's parses are measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use kiln_gguf::{GgufError, GgufFile};

/// The default model; a missing file fails the test (it must not silently skip).
pub(crate) fn model_path() -> PathBuf {
    let path = kiln_hub::default_model_path().expect("cannot locate the model cache");
    assert!(
        path.is_file(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    path
}

pub(crate) fn open_model() -> GgufFile {
    let path = model_path();
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Byte ranges of the real file's header, found independently of the parser's own bookkeeping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Regions {
    /// Where the tensor infos start (the metadata ends).
    pub(crate) infos_start: usize,
    /// Where the tensor infos end (padding to `data_offset` follows).
    pub(crate) infos_end: usize,
    pub(crate) data_offset: usize,
}

/// The tensor infos of `file` encoded as the GGUF spec says, from the parsed index.
pub(crate) fn encode_tensor_infos(file: &GgufFile) -> Vec<u8> {
    let mut out = Vec::new();
    for t in file.tensors() {
        out.extend_from_slice(&(t.name.len() as u64).to_le_bytes());
        out.extend_from_slice(t.name.as_bytes());
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        out.extend_from_slice(&(t.offset - file.data_offset()).to_le_bytes());
    }
    out
}

/// Finds the encoded tensor infos just before the data section; panics if the parsed index does
/// not re-encode to exactly the file's bytes.
pub(crate) fn regions(file: &GgufFile) -> Regions {
    let infos = encode_tensor_infos(file);
    let data_offset = file.data_offset() as usize;
    let bytes = file.as_bytes();
    let align = file.alignment() as usize;
    let infos_end = (data_offset.saturating_sub(align - 1)..=data_offset)
        .find(|&end| {
            end >= infos.len() && bytes.get(end - infos.len()..end) == Some(infos.as_slice())
        })
        .expect("the re-encoded tensor infos are not found before the data section");
    Regions {
        infos_start: infos_end - infos.len(),
        infos_end,
        data_offset,
    }
}

/// splitmix64: deterministic, seeded, no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Roughly uniform in `0..n` (the modulo bias does not matter here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Records the largest single allocation per thread, so a test can see what parsing asked for.
pub(crate) struct TrackLargest;

#[global_allocator]
static ALLOCATOR: TrackLargest = TrackLargest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: never panic inside the allocator, even during thread teardown.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so all of
// `GlobalAlloc`'s contracts are exactly System's; the only addition is recording a size in a
// const-initialized thread-local, which never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for TrackLargest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see above).
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Parses `bytes`, failing the test (with `context`) on a panic or on any single allocation
/// larger than a small multiple of the input: a length field must never drive an allocation
/// the input cannot back.
pub(crate) fn parse_checked(
    bytes: Vec<u8>,
    context: &dyn Fn() -> String,
) -> Result<GgufFile, GgufError> {
    let limit = 8 * bytes.len() + 4096;
    LARGEST.with(|l| l.set(0));
    let result = catch_unwind(AssertUnwindSafe(|| GgufFile::from_bytes(bytes)));
    let largest = LARGEST.with(Cell::get);
    let result = result.unwrap_or_else(|_| panic!("parser panicked on {}", context()));
    assert!(
        largest <= limit,
        "parsing {} allocated {largest} bytes at once (limit {limit})",
        context()
    );
    if let Err(e) = &result {
        assert!(!e.to_string().is_empty());
    }
    result
}
