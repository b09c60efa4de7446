//! The CPU kernels alone: `y = x Wᵀ` over an 8192 x 4096 weight (larger than the last-level
//! cache, as a model's weights are) in every format Kiln reads packed, and f32, on every
//! instruction-set path this CPU has (`avx512`, `avx2`; the scalar reference is too slow to be a
//! path anyone runs). `kernel_gbps/{format}/{isa}` is one row of `x` (decode of one sequence):
//! throughput in GB/s of weights read. `kernel_rows/{format}/{isa}/{m}` is `m` rows (a batched
//! decode step, a prefill chunk): throughput in rows (tokens) per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kiln_benches::quick;
use kiln_runtime::kernels::{
    Dense, GgmlType, Isa, IsaKind, PackedMatrix, Weight, synthetic_blocks,
};

const ROWS: usize = 8192;
const COLS: usize = 4096;

enum Matrix {
    Packed(PackedMatrix),
    F32(Vec<f32>),
}

impl Matrix {
    fn new(ty: GgmlType) -> Self {
        if ty == GgmlType::F32 {
            return Self::F32(
                (0..ROWS * COLS)
                    .map(|i| (i % 251) as f32 / 251.0 - 0.5)
                    .collect(),
            );
        }
        let values = ty.block_size().map_or(32, |v| v as usize);
        let data = synthetic_blocks(ty, ROWS * COLS / values, 1)
            .unwrap_or_else(|| panic!("{ty} is not kept packed"));
        match PackedMatrix::from_gguf(ty, &data, ROWS, COLS) {
            Ok(m) => Self::Packed(m),
            Err(e) => panic!("{ty}: {e}"),
        }
    }

    fn weight(&self) -> Weight<'_> {
        match self {
            Self::Packed(m) => Weight::Packed(m),
            Self::F32(data) => Weight::F32(Dense {
                data,
                rows: ROWS,
                cols: COLS,
            }),
        }
    }

    fn bytes(&self) -> u64 {
        match self {
            Self::Packed(m) => m.bytes() as u64,
            Self::F32(data) => (data.len() * 4) as u64,
        }
    }
}

fn bench(c: &mut Criterion) {
    use GgmlType as T;
    let (formats, batches): (&[GgmlType], &[usize]) = if quick() {
        (&[T::Q4_1, T::Q4_K], &[8])
    } else {
        (
            &[
                T::Q4_0,
                T::Q4_1,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::Q2_K,
                T::Q3_K,
                T::Q4_K,
                T::Q5_K,
                T::Q6_K,
                T::F32,
            ],
            &[8, 64],
        )
    };
    let isas: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|isa| isa.kind() != IsaKind::Scalar)
        .collect();
    let isas = if isas.is_empty() {
        Isa::available()
    } else {
        isas
    };
    let x: Vec<f32> = (0..64 * COLS)
        .map(|i| (i % 97) as f32 / 97.0 - 0.5)
        .collect();
    for &ty in formats {
        let matrix = Matrix::new(ty);
        let mut group = c.benchmark_group(format!("kernel_gbps/{ty}"));
        group.sample_size(10);
        group.throughput(Throughput::Bytes(matrix.bytes()));
        for &isa in &isas {
            group.bench_function(isa.kind().name(), |b| {
                b.iter(|| isa.matmul_t(matrix.weight(), &x[..COLS], 1))
            });
        }
        group.finish();
        let mut group = c.benchmark_group(format!("kernel_rows/{ty}"));
        group.sample_size(10);
        for &isa in &isas {
            for &m in batches {
                group.throughput(Throughput::Elements(m as u64));
                group.bench_with_input(BenchmarkId::new(isa.kind().name(), m), &m, |b, &m| {
                    b.iter(|| isa.matmul_t(matrix.weight(), &x[..m * COLS], m))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
