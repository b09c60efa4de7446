#!/usr/bin/env python3
"""The PyTorch side of scripts/gpu-bench.sh, on the machine's own torch and transformers.

make:    a random Llama model of a given shape, f16 safetensors, initialised on the GPU.
measure: transformers' greedy `generate` with a static cache on that model (decode tokens/s at
         batch 1, 16 and 64 after a 64-token prompt; prefill tokens/s at 128 and 512) and the
         device-to-device copy bandwidth, as one JSON object on stdout.
"""

import argparse
import json
import time

import torch
import transformers

SHAPES = {
    # Llama-3.1-8B's shapes.
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
    ),
    # For --dry-run: seconds anywhere.
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=2048,
    ),
}


def device():
    return "cuda" if torch.cuda.is_available() else "cpu"


def make(shape, out):
    config = transformers.LlamaConfig(**SHAPES[shape], torch_dtype="float16")
    torch.manual_seed(0)
    with torch.device(device()):
        model = transformers.LlamaForCausalLM(config).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{shape}: {params / 1e9:.2f} B parameters in {out}")


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeat=3):
    fn()
    sync()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def measure(path, quick):
    dev = device()
    model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float16).to(dev)
    model.eval()
    vocab = model.config.vocab_size
    result = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "decode_tok_s": {}, "prefill_tok_s": {}}
    new = 8 if quick else 64
    batches = [1, 16] if quick else [1, 16, 64]
    with torch.inference_mode():
        for batch in batches:
            ids = torch.randint(0, vocab, (batch, 64), device=dev)

            def run(n):
                return lambda: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                              cache_implementation="static", pad_token_id=0)

            # Decode alone: the difference between n new tokens and one.
            t = timed(run(new)) - timed(run(1))
            result["decode_tok_s"][str(batch)] = batch * (new - 1) / max(t, 1e-9)
        for n in [128] if quick else [128, 512]:
            ids = torch.randint(0, vocab, (1, n), device=dev)
            result["prefill_tok_s"][str(n)] = n / timed(lambda: model(ids))
        # Copy bandwidth, bytes read plus written (1 GiB each way).
        a = torch.empty(256 << 20 if not quick else 1 << 20, dtype=torch.float32, device=dev)
        b = torch.empty_like(a)
        t = timed(lambda: b.copy_(a), repeat=10)
        result["copy_gb_s"] = 2 * a.numel() * 4 / t / 1e9
        result["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps(result, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--shape", choices=sorted(SHAPES), required=True)
    m.add_argument("--out", required=True)
    r = sub.add_parser("measure")
    r.add_argument("--model", required=True)
    r.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "make":
        make(args.shape, args.out)
    else:
        measure(args.model, args.quick)


if __name__ == "__main__":
    main()
