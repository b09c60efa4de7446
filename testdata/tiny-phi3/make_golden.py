#!/usr/bin/env python3
"""Regenerate the tiny random-Phi-3 golden fixtures in testdata/tiny-phi3/.

What it makes (next to this script, or in --out DIR):
  config.json             Phi3Config: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16
                          (= hidden/heads; Phi3Config has no head_dim field), intermediate 128,
                          vocab 512, untied lm_head, eps 1e-5, max_position_embeddings 64,
                          original_max_position_embeddings 16, sliding_window 12, and
                          rope_parameters {rope_type "longrope", rope_theta 1e4, partial_rotary_factor
                          0.5 (rotary_dim 8 of the 16 head dims: the first 8, rotate_half over them),
                          short_factor [1.0, 1.1, 1.3, 1.6], long_factor [1.0, 2.0, 4.0, 8.0],
                          original_max_position_embeddings 16}; plus the legacy (transformers 4 / hub)
                          keys rope_theta, rope_scaling {type "longrope", short_factor, long_factor},
                          partial_rotary_factor and torch_dtype appended so that older parsers read it
                          (transformers 5 reads the file back to the same model: checked)
  generation_config.json  bos 1, eos 2, pad 2, do_sample false
  model.safetensors       random weights: torch.manual_seed(0) right after the model is built, then
                          parameter by parameter in sorted-name order (the safetensors order), every
                          matrix ~ N(0, 0.1) and every norm weight ~ U(0.5, 1.5). Fused as in Phi-3:
                          self_attn.qkv_proj (128x64: rows q 0..63, k 64..95, v 96..127) and
                          mlp.gate_up_proj (256x64: rows gate 0..127, up 128..255; act = silu(gate)*up)
  tokenizer.model         the same 512-piece SentencePiece BPE model as testdata/tiny-mistral/ (byte
                          fallback; <unk>=0 <s>=1 </s>=2; tiny_common.train_llama_tokenizer), only
                          there for llama.cpp's converter
  tokenizer_config.json   LlamaTokenizer, add_bos_token true, add_eos_token false (read by the
                          converter; transformers' AutoTokenizer on this folder is not the reference:
                          5.23 and 5.24 disagree with sentencepiece, and each other, on the dummy
                          prefix)
  golden.json             input_ids (24 ids, BOS-like 1 first: longer than the window of 12 and than
                          original_max_position_embeddings 16), top5_last, greedy_prompt (= input_ids),
                          greedy_ids (16 greedy steps with a KV cache, argmax, not stopped at EOS),
                          margins (top1 - top2 at each step), min_margin, rope_factors_used (what
                          transformers applied), nowindow_max_abs_diff, shortfactors_max_abs_diff,
                          short_prompt (the first 14 ids: a forward that uses the short factors),
                          tokenizer_samples (text -> SentencePiece ids, no BOS)
  logits_all.f32          logits at every position of input_ids from one forward with no cache,
                          24x512 little-endian f32, row-major (long factors)
  logits_short.f32        logits at every position of short_prompt.input_ids (14x512, short factors)
  model.gguf              llama.cpp's convert_hf_to_gguf.py --outtype f32 of this folder, unchanged
                          (architecture "phi3": fused attn_qkv and ffn_up = gate+up, exactly the
                          safetensors data, nothing permuted; rope_factors_long/short.weight tensors;
                          phi3.rope.dimension_count 8, phi3.attention.sliding_window 12,
                          phi3.rope.scaling.attn_factor sqrt(1.5)). This script checks the tensors.

LongRoPE in transformers 5.24 (modeling_rope_utils.dynamic_rope_update/longrope_frequency_update and
_compute_longrope_parameters): on every forward call, seq_len = max(position_ids) + 1 of that call;
inv_freq = 1 / (ext * rope_theta^(2i/8)), i = 0..3, with ext = long_factor if seq_len >
original_max_position_embeddings (16) else short_factor; one choice for every position of the call.
cos and sin are both multiplied by attention_factor = sqrt(1 + ln(s) / ln(16)) with s =
max_position_embeddings / original_max_position_embeddings = 64/16 = 4, i.e. sqrt(1.5) =
1.2247448713915890 (fixed at init, whichever factors; 1.0 if s <= 1). So the 24-token forward
(seq_len 24) and every cached greedy step (positions 24..39) use the long factors; the 14-token
short_prompt forward uses the short ones. (A prompt of <= 16 tokens that is then decoded past 16
would mix: its cached keys stay short-rotated while later steps use long. llama.cpp instead picks
long iff its per-sequence context size n_ctx_seq > 16 (llama_model::get_rope_factors), for the whole
run; and its phi3 loader ignores phi3.attention.sliding_window ("Phi SWA is currently disabled"),
so llama.cpp itself would not reproduce these logits.)

Sanity (not saved): with the sliding window disabled the 24-position logits differ from
logits_all.f32 by up to 3.34 (positions 0..11 identical); forcing the short factors on the 24-token
forward moves them by up to 1.14. attn_implementation "sdpa" honours the window: it matched "eager"
within 2.1e-6 (checked by hand).

Made with transformers 5.24.0, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0, sentencepiece 0.2.3,
the gguf-py and converter of llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (vendored in
llama-cpp-python 0.3.36); float32, CPU, 2 threads, attn_implementation="sdpa".

Run from the repository root (venv as in testdata/GOLDEN-README.md):
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-phi3/make_golden.py            # rewrites testdata/tiny-phi3/
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-phi3/make_golden.py --out "$(mktemp -d)"
--llama-cpp DIR names the llama.cpp checkout (default: the one vendored in llama-cpp-python 0.3.36
under ~/.cache/kiln/llama.cpp); its convert_hf_to_gguf.py is run with this Python and uses its own
gguf-py. The code tiny-phi3 shares with tiny-mistral and tiny-gemma3 (arguments, weights, tokenizer,
greedy decoding, dumps, converter run) is in testdata/tiny_common.py, imported from the parent folder.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64);
transformers 5.23.0 (the requirements-golden.txt pin) gives the same bytes except the
"transformers_version" strings in config.json, generation_config.json and golden.json's config.
An independent float64 numpy forward from model.gguf alone (NEOX-style RoPE on dims 0..7 with
inv_freq / rope_factors_long, cos/sin times attn_factor, window i - j < 12) matched logits_all.f32
within 3.0e-6 (logits_short.f32 with rope_factors_short: 1.9e-6) and reproduced greedy_ids.
Needs llama.cpp: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 (sdist sha256
832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e) and unpack it in ~/.cache/kiln/llama.cpp/.
"""

import math
import os
import sys

import numpy as np
import torch
from transformers import Phi3Config, Phi3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no testdata/__pycache__
sys.path.insert(0, os.path.dirname(HERE))  # testdata/, for tiny_common
from tiny_common import (check_greedy, check_tensors, check_window, convert_to_gguf, dump_f32,  # noqa: E402
                         forward_logits, golden_head, greedy, gguf_fields, llama_tokenizer_config,
                         max_abs_diff, random_model, read_gguf, rebuild, reload, save_model, setup,
                         sha256_f32le, top5, train_llama_tokenizer, write_golden, write_tokenizer)

SLIDING_WINDOW = 12
ORIGINAL_MAX_POS = 16
MAX_POS = 64
SHORT_FACTOR = [1.0, 1.1, 1.3, 1.6]
LONG_FACTOR = [1.0, 2.0, 4.0, 8.0]
INPUT_IDS = [1, 17, 42, 100, 7, 255, 300, 511, 3, 64, 128, 9, 77, 401, 2, 5,
             333, 480, 12, 250, 99, 450, 31, 200]
SHORT_IDS = INPUT_IDS[:14]  # > window 12, <= original_max_position_embeddings 16
GREEDY_PROMPT = INPUT_IDS
GREEDY_STEPS = 16
TOKENIZER_CONFIG = llama_tokenizer_config(model_max_length=64)


def make_config(sliding_window=SLIDING_WINDOW):
    return Phi3Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=MAX_POS,
        original_max_position_embeddings=ORIGINAL_MAX_POS,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "partial_rotary_factor": 0.5,
                         "short_factor": SHORT_FACTOR, "long_factor": LONG_FACTOR},
        sliding_window=sliding_window,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        use_cache=True,
    )


def legacy_keys(cfg):
    # Legacy (transformers 4 / hub Phi-3) spellings for parsers that predate rope_parameters
    # (+ torch_dtype).
    rp = cfg["rope_parameters"]
    return {"rope_theta": rp["rope_theta"],
            "rope_scaling": {"type": rp["rope_type"], "short_factor": rp["short_factor"],
                             "long_factor": rp["long_factor"]},
            "partial_rotary_factor": rp["partial_rotary_factor"]}


GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
               "output_norm.weight": "model.norm.weight"}
GGUF_PER_LAYER = {"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                  "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj",
                  "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
GGUF_ROPE_FACTORS = {"rope_factors_long.weight": LONG_FACTOR,
                     "rope_factors_short.weight": SHORT_FACTOR}


def check_gguf(llama_cpp, path, st_path):
    """Every GGUF tensor equals its safetensors tensor (nothing permuted); returns a summary."""
    reader, tensors, extras = read_gguf(llama_cpp, path, GGUF_PER_LAYER, GGUF_GLOBAL,
                                        extra=GGUF_ROPE_FACTORS)
    assert set(extras) == set(GGUF_ROPE_FACTORS), set(extras)
    for name, factors in GGUF_ROPE_FACTORS.items():
        assert np.array_equal(extras[name], np.array(factors, dtype=np.float32)), name
    assert check_tensors(tensors, st_path) == []
    get = gguf_fields(reader).__getitem__
    assert get("general.architecture") == "phi3"
    assert get("phi3.rope.dimension_count") == 8
    assert get("phi3.attention.sliding_window") == SLIDING_WINDOW
    assert get("phi3.rope.scaling.original_context_length") == ORIGINAL_MAX_POS
    assert abs(get("phi3.rope.scaling.attn_factor") - math.sqrt(1.5)) < 1e-6
    return f"{len(reader.tensors)} tensors == safetensors (nothing permuted) + rope factors"


class RopeLog:
    """Records, for each forward of the model, seq_len = max(position_ids) + 1 and which factor set
    transformers' longrope update left in inv_freq (it runs inside rotary_emb.forward)."""

    def __init__(self, rotary_emb, config):
        self.calls = []
        theta = config.rope_parameters["rope_theta"]
        shape = torch.arange(0, 8, 2, dtype=torch.int64).float() / 8
        self.sets = {name: 1.0 / (torch.tensor(f, dtype=torch.float32) * theta**shape)
                     for name, f in (("short", SHORT_FACTOR), ("long", LONG_FACTOR))}
        rotary_emb.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        position_ids = kwargs["position_ids"] if "position_ids" in kwargs else args[1]
        seq_len = int(position_ids.max()) + 1
        used = [n for n, f in self.sets.items() if torch.equal(module.inv_freq, f)]
        assert len(used) == 1, module.inv_freq
        self.calls.append((seq_len, used[0]))

    def take(self):
        calls, self.calls = self.calls, []
        return calls


def main():
    args, out_dir = setup(__doc__, HERE)

    config = make_config()
    model = random_model(Phi3ForCausalLM, config)
    rotary = model.model.rotary_emb
    assert rotary.rope_type == "longrope"
    attention_factor = math.sqrt(1 + math.log(MAX_POS / ORIGINAL_MAX_POS) / math.log(ORIGINAL_MAX_POS))
    assert rotary.attention_scaling == attention_factor, rotary.attention_scaling
    rope_log = RopeLog(rotary, config)

    golden_cfg = save_model(model, out_dir, dict(bos_token_id=1, eos_token_id=2, pad_token_id=2),
                            legacy_keys)

    tok_model, tok_samples = train_llama_tokenizer()
    write_tokenizer(out_dir, tok_model, TOKENIZER_CONFIG)

    with torch.no_grad():
        logits = forward_logits(model, INPUT_IDS)  # (24, 512)
        assert rope_log.take() == [(24, "long")]
        logits_np = dump_f32(logits, os.path.join(out_dir, "logits_all.f32"))

        short_logits = forward_logits(model, SHORT_IDS)  # (14, 512)
        assert rope_log.take() == [(len(SHORT_IDS), "short")]
        short_np = dump_f32(short_logits, os.path.join(out_dir, "logits_short.f32"))

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = reload(Phi3ForCausalLM, out_dir)
        rc = reloaded.config
        assert rc.sliding_window == SLIDING_WINDOW and rc.original_max_position_embeddings == 16
        # (transformers 5 takes the legacy rope_scaling over rope_parameters; it keeps its "type")
        rp_back = {k: v for k, v in rc.rope_parameters.items() if k != "type"}
        assert rp_back == golden_cfg["rope_parameters"], rc.rope_parameters
        assert torch.equal(forward_logits(reloaded, INPUT_IDS), logits)
        assert torch.equal(forward_logits(reloaded, SHORT_IDS), short_logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)
        greedy_calls = rope_log.take()
        assert greedy_calls == [(len(GREEDY_PROMPT) + i, "long") for i in range(GREEDY_STEPS + 1)]
        check_greedy(model, GREEDY_PROMPT, new_ids)
        rope_log.take()

        # Sanity: the window matters for this prompt ...
        nowin = rebuild(Phi3ForCausalLM, make_config(sliding_window=None), model.state_dict())
        nowindow_diff = check_window(forward_logits(nowin, INPUT_IDS), logits, SLIDING_WINDOW)
        # ... and so do the long factors: the same 24-token forward with the short set forced.
        rotary.long_inv_freq = rotary.original_inv_freq.clone()  # what longrope switches to
        forced = forward_logits(model, INPUT_IDS)
        assert rope_log.take() == [(24, "short")]
        shortfactors_diff = max_abs_diff(forced, logits)
        assert shortfactors_diff > 0.1, shortfactors_diff
        del rotary.long_inv_freq

    golden = {
        **golden_head(golden_cfg, INPUT_IDS, logits, logits_np, GREEDY_PROMPT, new_ids, margins),
        "rope_factors_used": {
            "rule": "per forward call: long_factor if max(position_ids) + 1 > "
                    "original_max_position_embeddings (16) else short_factor; cos and sin both "
                    "times attention_factor = sqrt(1 + ln(64/16) / ln(16))",
            "attention_factor": attention_factor,
            "logits_all": "long (seq_len 24)",
            "greedy": "long for the 24-token prompt and every cached step (seq_len 25..40)",
            "short_prompt": "short (seq_len 14)",
        },
        "nowindow_max_abs_diff": nowindow_diff,
        "shortfactors_max_abs_diff": shortfactors_diff,
        "short_prompt": {
            "input_ids": SHORT_IDS,
            "logits_file": "logits_short.f32: (14, 512) little-endian float32, row-major; "
                           "one forward over these ids, no cache (short factors)",
            "logits_sha256_f32le": sha256_f32le(short_np),
            "top5_last": top5(short_logits[-1]),
        },
        "tokenizer_samples": tok_samples,
    }
    write_golden(out_dir, golden)

    gguf_path = os.path.join(out_dir, "model.gguf")
    convert_to_gguf(args.llama_cpp, out_dir, gguf_path, "tiny-phi3")
    summary = check_gguf(args.llama_cpp, gguf_path, os.path.join(out_dir, "model.safetensors"))

    print(f"wrote {out_dir}: greedy {new_ids}; min margin {min(margins):.4f}; "
          f"no-window max |diff| {nowindow_diff:.4f}; short-factors max |diff| "
          f"{shortfactors_diff:.4f}; gguf: {summary}")


if __name__ == "__main__":
    main()
