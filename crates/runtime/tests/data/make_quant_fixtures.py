#!/usr/bin/env python3
"""Makes the reference data for kiln-runtime's dequantization tests (crates/runtime/tests/quant.rs).

Run from anywhere, with the `gguf` Python package (gguf-py, from llama.cpp; made with 0.19.0) and
numpy installed, after `cargo xtask fetch-model`:

    python3 crates/runtime/tests/data/make_quant_fixtures.py [PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf]

The model path defaults to $KILN_HOME/models/... (else ~/.cache/kiln/models/...). The output is
deterministic (fixed seed), so re-running it must leave the files unchanged.

It writes, next to itself:

- `quant_<TYPE>.blocks` and `quant_<TYPE>.f32`, for TYPE in F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0
  Q2_K Q3_K Q4_K Q5_K Q6_K: raw ggml blocks and their dequantization by
  `gguf.quants.dequantize` (little-endian f32, one per element). The blocks are random bytes
  whose f16 scale fields (d, m, dmin) are overwritten with finite values (random in +-0.1, plus
  a zero, a negative zero and a subnormal), so every reference value is finite; for the types
  gguf-py can quantize, two more blocks come from quantizing normally distributed data. F16
  holds random finite halves plus +-0, +-inf and subnormals (never NaN: numpy keeps a signalling
  NaN's payload where ggml, and Kiln, quiet it); BF16 leads with NaNs and infinities, which
  pass through bit for bit.
- `real_model_reference.txt`: slices of three tensors of the real default model, dequantized by
  `gguf.quants.dequantize`. One slice per line: `tensor row col count` and `count` values as
  f32 bit patterns in hex. Rows are in ggml's sense (`dims[0]` values each).
"""

import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

HERE = Path(__file__).resolve().parent
MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# Byte offsets of each type's f16 scale fields within one block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],
    T.Q3_K: [108],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
QUANTIZABLE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0}
N_RANDOM_BLOCKS = 4

# (tensor, rows): the first, a middle and the last row; the first and last 64 values of each.
REAL_SLICES = [
    ("token_embd.weight", [0, 24576, 49151]),
    ("blk.0.attn_q.weight", [0, 288, 575]),
    ("blk.0.attn_norm.weight", [0]),
]
SLICE_LEN = 64


def half_bytes(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8)


def random_blocks(rng, qtype):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        # Any bit pattern: F32 is a plain copy, NaNs included.
        return rng.integers(0, 256, size=64 * 4, dtype=np.uint8)
    if qtype == T.BF16:
        # Any bit pattern: ggml's bf16 -> f32 is a plain shift, NaNs included (a signalling NaN
        # stays signalling), so the specials lead: sNaN, qNaN, +-inf, -0, a subnormal.
        specials = np.array([0x7F81, 0xFFC1, 0x7F80, 0xFF80, 0x8000, 0x0001], np.uint16)
        bits = rng.integers(0, 256, size=64 * 2, dtype=np.uint8)
        return np.concatenate([specials.view(np.uint8), bits])
    if qtype == T.F16:
        bits = rng.integers(0, 0x10000, size=64, dtype=np.uint16)
        exponent_all_ones = (bits & 0x7C00) == 0x7C00
        bits = np.where(exponent_all_ones, bits & 0x83FF, bits)  # NaN/inf -> subnormal
        specials = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x7BFF, 0x0400], np.uint16)
        return np.concatenate([specials, bits]).view(np.uint8)

    blocks = rng.integers(0, 256, size=(N_RANDOM_BLOCKS, type_size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        scales = rng.uniform(-0.1, 0.1, size=N_RANDOM_BLOCKS)
        # Edge cases in the first blocks: zero, negative zero, the smallest subnormal.
        scales[0] = 0.0
        blocks[:, offset:offset + 2] = half_bytes(scales).reshape(N_RANDOM_BLOCKS, 2)
        blocks[1, offset:offset + 2] = np.array([0x00, 0x80], np.uint8)  # -0.0
        blocks[2, offset:offset + 2] = np.array([0x01, 0x00], np.uint8)  # 2^-24
    if qtype in QUANTIZABLE:
        data = rng.normal(0.0, 0.05, size=(2, block_size)).astype(np.float32)
        quantized = quantize(data, qtype).reshape(2, type_size)
        blocks = np.concatenate([blocks, quantized])
    return blocks.reshape(-1)


def write_synthetic(rng):
    for qtype in [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
                  T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
        raw = random_blocks(rng, qtype)
        if qtype == T.F32:
            ref = raw.view(np.float32)
        elif qtype == T.F16:
            ref = raw.view(np.float16).astype(np.float32)
        else:
            ref = dequantize(raw, qtype).astype(np.float32).reshape(-1)
        if qtype not in (T.F32, T.BF16):
            assert np.isfinite(ref[np.abs(ref) != np.inf]).all(), qtype.name
        (HERE / f"quant_{qtype.name}.blocks").write_bytes(raw.tobytes())
        (HERE / f"quant_{qtype.name}.f32").write_bytes(ref.astype("<f4").tobytes())


def default_model_path():
    home = os.environ.get("KILN_HOME") or str(Path.home() / ".cache" / "kiln")
    return Path(home) / "models" / MODEL_NAME


def write_real(model_path):
    reader = GGUFReader(model_path)
    tensors = {t.name: t for t in reader.tensors}
    lines = [f"# {MODEL_NAME}: tensor row col count, then count f32 bit patterns (hex)"]
    for name, rows in REAL_SLICES:
        t = tensors[name]
        row_len = int(t.shape[0])  # ggml order: shape[0] is the row length
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1, row_len)
        for row in rows:
            for col in (0, row_len - SLICE_LEN):
                chunk = values[row, col:col + SLICE_LEN]
                hexes = " ".join(f"{b:08x}" for b in chunk.view(np.uint32))
                lines.append(f"{name} {row} {col} {SLICE_LEN} {hexes}")
    (HERE / "real_model_reference.txt").write_text("\n".join(lines) + "\n")


def main():
    model_path = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model_path()
    write_synthetic(np.random.default_rng(20261122))
    write_real(model_path)


if __name__ == "__main__":
    main()
