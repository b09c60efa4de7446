#!/usr/bin/env python3
"""Regenerate the tiny random-Llama golden fixtures in testdata/tiny-llama/.

What it makes (next to this script, or in --out DIR):
  config.json             LlamaConfig: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16,
                          intermediate 128, vocab 512, tied embeddings, rope_theta 1e5, eps 1e-5;
                          plus the legacy keys rope_theta / rope_scaling / torch_dtype appended so
                          that older parsers read it too
  generation_config.json  bos 1, eos 2, pad 2, do_sample false
  model.safetensors       random weights: torch.manual_seed(0) right after the model is built, then
                          parameter by parameter in sorted-name order (the safetensors order), every
                          matrix ~ N(0, 0.1) and every norm weight ~ U(0.5, 1.5) (so a skipped norm
                          or a RoPE bug shows in the logits)
  tiny_golden.json        input_ids, top-5 last logits, sha256/abs-mean of all logits, 16 greedy ids
                          (KV cache, argmax, not stopped at EOS), a left-padded batch case
  logits_all.f32          logits at every position of input_ids, 16x512 little-endian f32, row-major
  hidden_states.f32       3x16x64 LE f32: [0] embedding output, [1] after layer 0,
                          [2] after layer 1 + final RMSNorm (transformers' output_hidden_states)
  (--npy also writes logits_all.npy and hidden_states.npy; they are not committed)

Made with (testdata/requirements-golden.txt): transformers 5.23.0, torch 2.15.0 (the PyPI wheel),
float32, CPU, 2 threads, attn_implementation="sdpa".

Run from the repository root:
    python3 -m venv ~/.cache/kiln/golden-venv
    ~/.cache/kiln/golden-venv/bin/pip install -r testdata/requirements-golden.txt
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-llama/make_golden.py            # rewrites testdata/tiny-llama/
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-llama/make_golden.py --out "$(mktemp -d)"   # or elsewhere

Deterministic. Checked 2026-12-01 (2-core AMD EPYC, AVX-512) against the committed files, made
2026-11-22: config.json, generation_config.json, model.safetensors, logits_all.f32 and
hidden_states.f32 came out byte-identical, and so did every id and every other value in
tiny_golden.json except the batch_left_padded logits (last_logits_row0/row1_first8 and
max_abs_diff_row0_vs_unpadded), which differ by <= 7.4e-7 (a few ulp; no thread count, attention
kernel, mask dtype or position-id variant reproduced them bit for bit, so the original machine's
f32 kernels for that 2x6 batch presumably differed).
"""

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))

SEED = 0
THREADS = 2
ATTN = "sdpa"
INPUT_IDS = [1, 17, 42, 100, 7, 255, 300, 511, 3, 64, 128, 9, 77, 401, 2, 5]
GREEDY_PROMPT = [1, 17, 42, 100]
GREEDY_STEPS = 16
BATCH_IDS = [[2, 2, 1, 17, 42, 100], [1, 5, 6, 7, 8, 9]]
BATCH_MASK = [[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]]


def make_config():
    return LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_act="silu",
        max_position_embeddings=256,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        use_cache=True,
    )


def write_json(path, obj, indent):
    # json.dump without a trailing newline, non-ASCII kept as is (as the committed files are).
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def f32le(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))


def greedy(model, prompt, steps):
    """Argmax decoding with a KV cache, exactly `steps` tokens, not stopped at EOS."""
    ids = torch.tensor([prompt])
    out = model(input_ids=ids, use_cache=True)
    past = out.past_key_values
    new = []
    for _ in range(steps):
        nxt = int(out.logits[0, -1].argmax())
        new.append(nxt)
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    return new


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: next to this script)")
    ap.add_argument("--npy", action="store_true", help="also write logits_all.npy / hidden_states.npy")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    if transformers.__version__ != "5.23.0" or not torch.__version__.startswith("2.15."):
        print(f"warning: made with transformers 5.23.0 / torch 2.15; this is "
              f"{transformers.__version__} / {torch.__version__}", file=sys.stderr)

    torch.set_num_threads(THREADS)

    config = make_config()
    config._attn_implementation = ATTN
    model = LlamaForCausalLM(config).to(torch.float32)
    # Whatever the constructor drew is overwritten: seed here, then draw parameter by parameter in
    # sorted-name order (= the safetensors order; the tied lm_head is the embedding and is not
    # listed). named_parameters() order gives different weights.
    torch.manual_seed(SEED)
    with torch.no_grad():
        for _name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim >= 2:
                p.normal_(mean=0.0, std=0.1)
            else:
                p.uniform_(0.5, 1.5)
    model.eval()

    # config.json / generation_config.json / model.safetensors as save_pretrained writes them.
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2,
                                               do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    golden_cfg = dict(cfg)
    # Legacy spellings for parsers that predate transformers 5's rope_parameters / dtype.
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    cfg["rope_scaling"] = None
    cfg["torch_dtype"] = cfg.get("dtype", "float32")
    write_json(cfg_path, cfg, indent=2)

    with torch.no_grad():
        ids = torch.tensor([INPUT_IDS])
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        logits = out.logits[0]  # (16, 512)
        hidden = torch.stack([h[0] for h in out.hidden_states])  # (3, 16, 64)
        assert logits.shape == (len(INPUT_IDS), config.vocab_size), logits.shape
        assert hidden.shape == (config.num_hidden_layers + 1, len(INPUT_IDS), config.hidden_size)

        logits_np = f32le(logits)
        hidden_np = f32le(hidden)
        logits_np.tofile(os.path.join(out_dir, "logits_all.f32"))
        hidden_np.tofile(os.path.join(out_dir, "hidden_states.f32"))
        if args.npy:
            np.save(os.path.join(out_dir, "logits_all.npy"), logits_np)
            np.save(os.path.join(out_dir, "hidden_states.npy"), hidden_np)

        top = torch.topk(logits[-1], 5)
        new_ids = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)

        # Left-padded batch: position ids count from 0 at each row's first real token (as
        # generate() does; the pad positions get 1 and are masked out anyway).
        b_ids = torch.tensor(BATCH_IDS)
        b_mask = torch.tensor(BATCH_MASK)
        pos = b_mask.long().cumsum(-1) - 1
        pos.masked_fill_(b_mask == 0, 1)
        b_logits = model(input_ids=b_ids, attention_mask=b_mask, position_ids=pos,
                         use_cache=False).logits
        row0 = b_logits[0, -1]
        row1 = b_logits[1, -1]
        real0 = [t for t, m in zip(BATCH_IDS[0], BATCH_MASK[0]) if m]
        unpadded = model(input_ids=torch.tensor([real0]), use_cache=False).logits[0, -1]
        max_diff = float((row0 - unpadded).abs().max())

    golden = {
        "config": golden_cfg,
        "input_ids": INPUT_IDS,
        "logits_all_file": "logits_all.npy (16, 512) float32; also logits_all.f32 raw LE",
        "hidden_states_file": "hidden_states.npy (3, 16, 64): [0]=embedding out, [1]=after layer 0, "
                              "[2]=after layer 1 + final RMSNorm",
        "last_logits_top5_ids": [int(i) for i in top.indices],
        "last_logits_top5_values": [float(v) for v in top.values],
        "logits_sha256_f32le": hashlib.sha256(logits_np.tobytes()).hexdigest(),
        "logits_abs_mean": float(np.abs(logits_np).mean()),  # numpy's f32 pairwise mean
        "greedy_prompt_ids": GREEDY_PROMPT,
        "greedy_new_ids_16": new_ids,
        "batch_left_padded": {
            "input_ids": BATCH_IDS,
            "attention_mask": BATCH_MASK,
            "last_logits_row0_first8": [float(v) for v in row0[:8]],
            "last_logits_row1_first8": [float(v) for v in row1[:8]],
            "note": "row0 last logits must equal unpadded [1,17,42,100] last logits "
                    "(position ids start at 0 at first real token)",
            "max_abs_diff_row0_vs_unpadded": max_diff,
        },
    }
    write_json(os.path.join(out_dir, "tiny_golden.json"), golden, indent=1)
    print(f"wrote {out_dir}: config.json generation_config.json model.safetensors tiny_golden.json "
          f"logits_all.f32 hidden_states.f32; greedy {new_ids}")


if __name__ == "__main__":
    main()
