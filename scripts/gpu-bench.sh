#!/usr/bin/env bash
# Issue 18's GPU run in one go, for a lent GPU machine (the `device` tool) or, with --dry-run,
# here on Mesa's software Vulkan with small shapes: which adapter wgpu starts, the golden and
# GPU-kernel tests on it, Kiln's decode (batch 1/8/32/64) and prefill (128/512) on a random
# Llama-3.1-8B-shaped model in f16, and the same GPU's PyTorch on that model with the
# device-to-device copy bandwidth (the floor's denominator).
#
# It runs from the repository root and reads what `cargo xtask gpu-bundle` made in
# gpu-bundle/ (xz-compressed, stripped binaries: kiln, the runtime's integration and unit
# tests, the runtime bench; all with `--features wgpu`). On the lent machine, carry
# `gpu-bundle` and `.gl` (the Vulkan loader, docs of the device tool) and give it a timeout of
# about 9 minutes; results go to $OUT (default: a fresh temp dir): devices.json, tests.log,
# kiln-bench.log, torch.json, summary.txt.
#
# Usage: scripts/gpu-bench.sh [--dry-run]

set -uo pipefail

dry=0
if [ "${1:-}" = "--dry-run" ]; then
    dry=1
fi
work=$(mktemp -d)
out=${OUT:-$work/out}
mkdir -p "$out"
: >"$out/summary.txt"
bundle=${KILN_GPU_BUNDLE:-gpu-bundle}
bin=$work/bin
mkdir -p "$bin"
log() { echo "== $*" | tee -a "$out/summary.txt"; }

# The Vulkan loader, when the machine lacks one (the device tool's README: carry `.gl`).
if [ -d .gl ] && ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
# Software Vulkan wants a runtime dir; a headless machine has none.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

for name in kiln runtime-it runtime-lib runtime-bench; do
    if [ "$name" = runtime-lib ] && [ ! -f "$bundle/$name.xz" ]; then
        continue # a lean bundle: no unit tests
    fi
    if [ ! -f "$bundle/$name.xz" ]; then
        log "missing $bundle/$name.xz: run \`cargo xtask gpu-bundle\` first"
        exit 2
    fi
    xz -dc "$bundle/$name.xz" >"$bin/$name"
    chmod +x "$bin/$name"
done
log "bundle: $(cat "$bundle/MANIFEST" 2>/dev/null)"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true

log "kiln devices"
"$bin/kiln" devices --json | tee "$out/devices.json"
"$bin/kiln" devices | tee -a "$out/summary.txt"

# 1. Correctness on this GPU: the tiny models' golden tests (testdata/ travels with the tree),
# the ragged-batch invariance test, and every GPU kernel against the reference dequantizer.
log "golden and kernel tests on wgpu"
status=0
# The tests find testdata/ from their crate's directory, which cargo would have set.
export CARGO_MANIFEST_DIR=$PWD/crates/runtime
KILN_TEST_DEVICE=wgpu "$bin/runtime-it" tiny_llama:: families:: 2>&1 | tee "$out/tests.log" || status=1
if [ -f "$bin/runtime-lib" ]; then
    "$bin/runtime-lib" kernels::gpu:: 2>&1 | tee -a "$out/tests.log" || status=1
fi
grep -E "^test result" "$out/tests.log" | tee -a "$out/summary.txt"

# 2. A random Llama-3.1-8B-shaped model in f16 (transformers on the GPU: seconds, not the
# minutes a CPU init takes), or with --dry-run a small one; without PyTorch (here), the
# bench's own random SmolLM2 shapes.
model=$work/model
have_torch=0
if python3 -c "import torch, transformers" 2>/dev/null; then
    have_torch=1
    shape=llama-8b
    [ "$dry" = 1 ] && shape=tiny
    log "making a random $shape model in $model"
    python3 scripts/gpu_reference.py make --shape "$shape" --out "$model" 2>&1 | tee -a "$out/summary.txt"
    export KILN_BENCH_MODEL=$model
else
    log "no PyTorch here: Kiln's bench makes random SmolLM2-135M shapes itself"
fi

# 3. Kiln on it: decode steps at batch 1/8/32/64 (64 positions of context each) and prefill.
log "kiln: runtime bench on wgpu (f16 compute)"
bench_args=(--bench --warm-up-time 1 --measurement-time 3)
if [ "$dry" = 1 ]; then
    export KILN_BENCH_QUICK=1
    # Decode steps only: lavapipe takes seconds a step.
    bench_args=(--bench --warm-up-time 0.1 --measurement-time 0.5 decode_step)
fi
# Criterion's baselines of this run only (not a CPU run's, here).
export CRITERION_HOME=$out/criterion
KILN_BENCH_DEVICE=wgpu KILN_BENCH_DTYPE=f16 "$bin/runtime-bench" "${bench_args[@]}" 2>&1 |
    tee "$out/kiln-bench.log" || status=1
grep -E "^(decode_step|prefill)/|thrpt:" "$out/kiln-bench.log" | tee -a "$out/summary.txt"

# 4. PyTorch on the same GPU and model, and the copy bandwidth.
if [ "$have_torch" = 1 ]; then
    log "pytorch: generate with a static cache, and device-to-device copy bandwidth"
    python3 scripts/gpu_reference.py measure --model "$model" $([ "$dry" = 1 ] && echo --quick) \
        >"$out/torch.json" 2>>"$out/summary.txt" || status=1
    cat "$out/torch.json" | tee -a "$out/summary.txt"
fi
log "done (status $status); results in $out"
exit $status
