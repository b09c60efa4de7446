#!/usr/bin/env python3
"""Regenerate the tiny random-Gemma-3 (text) golden fixtures in testdata/tiny-gemma3/.

What it makes (next to this script, or in --out DIR):
  config.json             Gemma3TextConfig (model_type "gemma3_text", Gemma3ForCausalLM): hidden 64,
                          3 layers, 4 heads, 2 KV heads, head_dim 32 (deliberately != hidden/heads =
                          16: q_proj is 128x64, k/v_proj 64x64, o_proj 64x128), intermediate 128,
                          vocab 512, tied lm_head (= embed_tokens), gelu_pytorch_tanh, eps 1e-6,
                          max_position_embeddings 128, query_pre_attn_scalar 24 (deliberately !=
                          head_dim: attention scale 24^-0.5), sliding_window 6, layer_types [sliding,
                          sliding, full] (sliding_window_pattern 3, which transformers also saves as
                          _sliding_window_pattern), rope_parameters {full_attention: default, theta
                          1e6; sliding_attention: default, theta 1e4}, no softcapping, bos 2, eos 1,
                          pad 0; plus the legacy (hub) keys rope_theta (1e6), rope_local_base_freq
                          (1e4), rope_scaling (null) and torch_dtype appended so that older parsers
                          read it (transformers 5 reads the file back to the same logits: checked)
  generation_config.json  bos 2, eos 1, pad 0, do_sample false
  model.safetensors       random weights: torch.manual_seed(0) right after the model is built, then
                          parameter by parameter in sorted-name order (the safetensors order), every
                          matrix ~ N(0, 0.1) and every norm weight (input_layernorm,
                          post_attention_layernorm, pre_feedforward_layernorm,
                          post_feedforward_layernorm, self_attn.q_norm / k_norm, model.norm) ~
                          U(-0.5, 0.5): Gemma's RMSNorm multiplies by (1 + w), so the effective gain
                          1 + w is in [0.5, 1.5] as in the other tiny models. No lm_head.weight (tied)
  tokenizer.model         a 512-piece SentencePiece BPE model with Gemma's special ids (<pad>=0
                          <eos>=1 <bos>=2 <unk>=3, <0x00>..<0xFF> = 4..259, 252 merged pieces; byte
                          fallback, split digits, identity normalizer, whitespace not collapsed and, as
                          Gemma's, no dummy prefix), trained single-threaded on the 3000 generated
                          sentences of testdata/tiny-mistral/ (random.Random(0); corpus and trainer
                          in testdata/tiny_common.py). Only there so that llama.cpp's converter can
                          write a GGUF: the weights know nothing of it
  tokenizer_config.json   GemmaTokenizer, add_bos_token true, add_eos_token false (read by the
                          converter; not a reference tokenizer)
  golden.json             input_ids (24 ids, BOS 2 first, no 0 or 1 after it: longer than the window
                          of 6), top5_last, greedy_prompt (= input_ids), greedy_ids (16 greedy steps
                          with a KV cache, argmax, not stopped at EOS), margins (top1 - top2 at each
                          step), min_margin, the sanity numbers below, semantics (which logits file
                          is which), llamacpp_semantics (its config changes, top5_last, greedy_ids,
                          margins), tokenizer_samples (text -> SentencePiece ids, no BOS)
  logits_all.f32          transformers' logits at every position of input_ids from one forward with
                          no cache, 24x512 little-endian f32, row-major: the real config
  logits_all_llamacpp_semantics.f32
                          the same weights and input, 24x512, but with the config changed to what
                          llama.cpp makes of model.gguf: query_pre_attn_scalar = head_dim = 32 (its
                          gemma3 loader hard-codes f_attention_scale = 1/sqrt(n_embd_head_k) unless the
                          model is 27B) and layer_types from its every-6th rule (il % 6 < 5 is
                          sliding: all three layers sliding, the first global would be layer 5); rope
                          bases and window unchanged (it reads gemma3.rope.freq_base_swa = 1e4 and
                          gemma3.attention.sliding_window = 6 from the file)
  model.gguf              llama.cpp's convert_hf_to_gguf.py --outtype f32 of this folder, unchanged
                          (architecture "gemma3"). Every tensor is the safetensors tensor, nothing
                          permuted (NEOX-style RoPE), except that every "*norm.weight" (attn_norm,
                          post_attention_norm, ffn_norm (= pre_feedforward_layernorm), post_ffw_norm,
                          attn_q_norm, attn_k_norm, output_norm) is stored as 1 + w (Gemma3Model.norm_shift; f32 add, checked
                          bit for bit). No output.weight (tied). The file has
                          gemma3.attention.sliding_window (6), gemma3.rope.freq_base (1e6, global) and
                          gemma3.rope.freq_base_swa (1e4, local), but no layer pattern (llama.cpp would
                          read gemma3.attention.sliding_window_pattern, a u32 or a bool array, but this
                          converter writes it only for Gemma 3n / 4) and no attention scale
                          (gemma3.attention.scale exists in gguf-py but is not written for Gemma 3,
                          and llama.cpp's gemma3 loader does not read it: it sets the scale itself). So the GGUF alone
                          implies logits_all_llamacpp_semantics.f32, not logits_all.f32.

Semantics (transformers 5.24 modeling_gemma3): x = embed * sqrt(64) (the f32 scalar 8); per layer
h = norm(x, input_layernorm); q/k/v; q = norm(q, q_norm), k = norm(k, k_norm) per head over the 32
dims; RoPE rotate_half over all 32 dims with the layer type's base; softmax(q k^T * 24^-0.5 + mask);
x += norm(o_proj(attn), post_attention_layernorm); h = norm(x, pre_feedforward_layernorm);
x += norm(down(gelu_tanh(gate(h)) * up(h)), post_feedforward_layernorm); logits = norm(x, norm)
embed^T; norm(x, w) = x / sqrt(mean(x^2) + 1e-6) * (1 + w), in f32. Sliding layers: query i attends
keys j with i - 6 < j <= i (sliding_window_overlay; llama.cpp's LLAMA_SWA_TYPE_STANDARD masks
i - j >= n_swa: the same).

Sanity (also in golden.json): with the sliding window disabled (sliding_window = 128 >= every
sequence here; layer types and rope bases unchanged) the 24-position logits differ from
logits_all.f32 by up to 3.16 (positions 0..5 identical); with query_pre_attn_scalar = head_dim = 32
by up to 0.397; logits_all_llamacpp_semantics.f32 differs from logits_all.f32 by up to 1.39 (its
greedy path is 276 x 16, min margin 0.446; the real one's min margin is 0.0052, at step 11).
attn_implementation "eager" matches "sdpa" within 2.4e-6 (real config) and 2.3e-6 (llama.cpp
semantics). A float64 numpy forward from model.gguf alone (NEOX RoPE, norm gains used as stored)
matched logits_all_llamacpp_semantics.f32 within 2.5e-6 with llama.cpp's reading of the file, and
logits_all.f32 within 2.8e-6 when given the real scale 24^-0.5 and layer 2 global (base 1e6).

Made with transformers 5.24.0, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0, sentencepiece 0.2.3,
the gguf-py and converter of llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (vendored in
llama-cpp-python 0.3.36); float32, CPU, 2 threads, attn_implementation="sdpa".

Run from the repository root (venv as in testdata/GOLDEN-README.md):
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-gemma3/make_golden.py            # rewrites testdata/tiny-gemma3/
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-gemma3/make_golden.py --out "$(mktemp -d)"
--llama-cpp DIR names the llama.cpp checkout (default: the one vendored in llama-cpp-python 0.3.36
under ~/.cache/kiln/llama.cpp); its convert_hf_to_gguf.py is run with this Python and uses its own
gguf-py. The code tiny-gemma3 shares with tiny-mistral and tiny-phi3 (arguments, weights, tokenizer
training, greedy decoding, dumps, converter run) is in testdata/tiny_common.py, imported from the
parent folder.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64).
The converter logs "Unknown RoPE type: default" (harmless: no scaling key is written) and
"Duplicated key name" for seven keys Gemma3Model.set_gguf_parameters writes again (same values).
Needs llama.cpp: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 (sdist sha256
832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e) and unpack it in ~/.cache/kiln/llama.cpp/.
"""

import math
import os
import sys

import numpy as np
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no testdata/__pycache__
sys.path.insert(0, os.path.dirname(HERE))  # testdata/, for tiny_common
from tiny_common import (ATTN, check_greedy, check_tensors, check_window, convert_to_gguf,  # noqa: E402
                         dump_f32, forward_logits, golden_head, greedy, gguf_fields, max_abs_diff,
                         random_model, read_gguf, rebuild, reload, save_model, setup, sha256_f32le,
                         tokenizer_samples, top5, train_sentencepiece, write_golden,
                         write_tokenizer)

HEAD_DIM = 32
QUERY_PRE_ATTN_SCALAR = 24
SLIDING_WINDOW = 6
MAX_POS = 128
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"]
ROPE_GLOBAL = 1_000_000.0
ROPE_LOCAL = 10_000.0
# What llama.cpp's gemma3 loader makes of model.gguf: scale 1/sqrt(head_dim), and with no
# sliding_window_pattern key the default pattern 6 (layer il sliding iff il % 6 < 5).
LLAMACPP_PATTERN = 6
LLAMACPP_LAYER_TYPES = ["sliding_attention" if il % LLAMACPP_PATTERN < LLAMACPP_PATTERN - 1
                        else "full_attention" for il in range(len(LAYER_TYPES))]
INPUT_IDS = [2, 17, 42, 100, 7, 255, 300, 511, 3, 64, 128, 9, 77, 401, 4, 5,
             333, 480, 12, 250, 99, 450, 31, 200]
GREEDY_PROMPT = INPUT_IDS
GREEDY_STEPS = 16
NORM_RANGE = (-0.5, 0.5)  # Gemma RMSNorm gain is 1 + w: in [0.5, 1.5]


def make_config(sliding_window=SLIDING_WINDOW, query_pre_attn_scalar=QUERY_PRE_ATTN_SCALAR,
                layer_types=LAYER_TYPES, pattern=3):
    return Gemma3TextConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=len(layer_types),
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=MAX_POS,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": ROPE_GLOBAL},
                         "sliding_attention": {"rope_type": "default", "rope_theta": ROPE_LOCAL}},
        query_pre_attn_scalar=query_pre_attn_scalar,
        sliding_window=sliding_window,
        layer_types=list(layer_types),
        sliding_window_pattern=pattern,
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=1,
        pad_token_id=0,
        use_cache=True,
    )


def legacy_keys(cfg):
    # Legacy (hub) spellings for parsers that predate transformers 5's rope_parameters (+ torch_dtype).
    return {"rope_theta": cfg["rope_parameters"]["full_attention"]["rope_theta"],
            "rope_local_base_freq": cfg["rope_parameters"]["sliding_attention"]["rope_theta"],
            "rope_scaling": None}


def build(config, state_dict, attn=ATTN):
    return rebuild(Gemma3ForCausalLM, config, state_dict, attn=attn)


# ---------------------------------------------------------------- tokenizer (tiny-mistral's corpus)
def train_tokenizer():
    """tiny_common's 512-piece SentencePiece BPE with Gemma's special ids and no dummy prefix: the
    bytes of the .model file (deterministic) and the tokenizer_samples."""
    model, sp = train_sentencepiece(
        add_dummy_prefix=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")
    assert sp.vocab_size() == 512
    assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<eos>", "<bos>", "<unk>", "<0x00>"]
    assert sp.id_to_piece(259) == "<0xFF>" and not sp.is_byte(260)
    return model, tokenizer_samples(sp)


TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": MAX_POS,
    "tokenizer_class": "GemmaTokenizer",
}


# ---------------------------------------------------------------- GGUF
GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
               "output_norm.weight": "model.norm.weight"}
GGUF_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                  "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
                  "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                  "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
                  "ffn_norm": "pre_feedforward_layernorm",
                  "post_ffw_norm": "post_feedforward_layernorm"}


def check_gguf(tensors, fields, st_path):
    """Every GGUF tensor equals its safetensors tensor, norms as 1 + w (bit for bit); the keys."""
    norm_shift = lambda name, ref: ref + np.float32(1.0) if name.endswith("norm.weight") else ref
    n_norm = len(check_tensors(tensors, st_path, norm_shift))
    assert fields["general.architecture"] == "gemma3"
    want = {"gemma3.block_count": 3, "gemma3.embedding_length": 64, "gemma3.context_length": MAX_POS,
            "gemma3.attention.head_count": 4, "gemma3.attention.head_count_kv": 2,
            "gemma3.attention.key_length": HEAD_DIM, "gemma3.attention.value_length": HEAD_DIM,
            "gemma3.attention.sliding_window": SLIDING_WINDOW, "gemma3.rope.freq_base": ROPE_GLOBAL,
            "gemma3.rope.freq_base_swa": ROPE_LOCAL, "tokenizer.ggml.bos_token_id": 2,
            "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.padding_token_id": 0}
    for k, v in want.items():
        assert fields.get(k) == v, (k, fields.get(k), v)
    for k in ("gemma3.attention.sliding_window_pattern", "gemma3.attention.scale"):
        assert k not in fields, k
    return f"{len(tensors)} tensors == safetensors (nothing permuted; {n_norm} norms stored as 1 + w)"


def numpy_forward(tensors, fields, ids, scale, layer_types):
    """float64 Gemma 3 forward from the GGUF tensors (norm gains used as stored: 1 + w)."""
    g = {k: v.astype(np.float64) for k, v in tensors.items()}
    hd = fields["gemma3.attention.key_length"]
    nh, nkv = fields["gemma3.attention.head_count"], fields["gemma3.attention.head_count_kv"]
    eps, window = fields["gemma3.attention.layer_norm_rms_epsilon"], fields["gemma3.attention.sliding_window"]
    base = {"full_attention": fields["gemma3.rope.freq_base"],
            "sliding_attention": fields["gemma3.rope.freq_base_swa"]}
    emb = g["model.embed_tokens.weight"]
    n = len(ids)
    x = emb[ids] * math.sqrt(emb.shape[1])
    norm = lambda v, w: v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w
    pos = np.arange(n)[:, None]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]

    def rope(v, theta):  # NEOX / rotate_half over all hd dims
        inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
        ang = np.concatenate([pos * inv, pos * inv], -1)[:, None, :]
        rot = np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], -1)
        return v * np.cos(ang) + rot * np.sin(ang)

    for il, lt in enumerate(layer_types):
        p = lambda s: g[f"model.layers.{il}.{s}.weight"]
        h = norm(x, p("input_layernorm"))
        q = norm((h @ p("self_attn.q_proj").T).reshape(n, nh, hd), p("self_attn.q_norm"))
        k = norm((h @ p("self_attn.k_proj").T).reshape(n, nkv, hd), p("self_attn.k_norm"))
        v = (h @ p("self_attn.v_proj").T).reshape(n, nkv, hd)
        q, k = rope(q, base[lt]), rope(k, base[lt])
        allowed = (j <= i) & ((i - j < window) if lt == "sliding_attention" else True)
        out = np.empty((n, nh, hd))
        for hh in range(nh):
            s = q[:, hh] @ k[:, hh // (nh // nkv)].T * scale
            s = np.where(allowed, s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            out[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // (nh // nkv)]
        x = x + norm(out.reshape(n, nh * hd) @ p("self_attn.o_proj").T, p("post_attention_layernorm"))
        h = norm(x, p("pre_feedforward_layernorm"))
        gate = h @ p("mlp.gate_proj").T
        act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        m = (act * (h @ p("mlp.up_proj").T)) @ p("mlp.down_proj").T
        x = x + norm(m, p("post_feedforward_layernorm"))
    return norm(x, g["model.norm.weight"]) @ emb.T


def main():
    args, out_dir = setup(__doc__, HERE)

    config = make_config()
    model = random_model(Gemma3ForCausalLM, config, NORM_RANGE)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    state = model.state_dict()

    golden_cfg = save_model(model, out_dir, dict(bos_token_id=2, eos_token_id=1, pad_token_id=0),
                            legacy_keys)

    tok_model, tok_samples = train_tokenizer()
    write_tokenizer(out_dir, tok_model, TOKENIZER_CONFIG)

    llamacpp_cfg = make_config(query_pre_attn_scalar=HEAD_DIM, layer_types=LLAMACPP_LAYER_TYPES,
                               pattern=LLAMACPP_PATTERN)
    with torch.no_grad():
        logits = forward_logits(model, INPUT_IDS)  # (24, 512)
        logits_np = dump_f32(logits, os.path.join(out_dir, "logits_all.f32"))

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = reload(Gemma3ForCausalLM, out_dir)
        rc = reloaded.config
        assert (rc.sliding_window, rc.head_dim, rc.query_pre_attn_scalar, rc.layer_types) == \
            (SLIDING_WINDOW, HEAD_DIM, QUERY_PRE_ATTN_SCALAR, LAYER_TYPES)
        assert rc.rope_parameters["sliding_attention"]["rope_theta"] == ROPE_LOCAL
        assert rc.rope_parameters["full_attention"]["rope_theta"] == ROPE_GLOBAL
        assert torch.equal(forward_logits(reloaded, INPUT_IDS), logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)
        check_greedy(model, GREEDY_PROMPT, new_ids)

        # llama.cpp's reading of model.gguf, same weights.
        lcpp = build(llamacpp_cfg, state)
        lcpp_logits = forward_logits(lcpp, INPUT_IDS)
        lcpp_np = dump_f32(lcpp_logits, os.path.join(out_dir, "logits_all_llamacpp_semantics.f32"))
        lcpp_ids, lcpp_margins = greedy(lcpp, GREEDY_PROMPT, GREEDY_STEPS)
        check_greedy(lcpp, GREEDY_PROMPT, lcpp_ids)
        lcpp_diff = max_abs_diff(lcpp_logits, logits)

        # Sanity: the window and the scale matter for this prompt; sdpa agrees with eager.
        nowin = build(make_config(sliding_window=MAX_POS), state)
        nowindow_diff = check_window(forward_logits(nowin, INPUT_IDS), logits, SLIDING_WINDOW)
        hdscale = build(make_config(query_pre_attn_scalar=HEAD_DIM), state)
        scale_diff = max_abs_diff(forward_logits(hdscale, INPUT_IDS), logits)
        assert scale_diff > 0.1, scale_diff
        assert lcpp_diff > 0.1, lcpp_diff
        eager = build(make_config(), state, attn="eager")
        eager_diff = max_abs_diff(forward_logits(eager, INPUT_IDS), logits)
        lcpp_eager = build(make_config(query_pre_attn_scalar=HEAD_DIM,
                                       layer_types=LLAMACPP_LAYER_TYPES, pattern=LLAMACPP_PATTERN),
                           state, attn="eager")
        lcpp_eager_diff = max_abs_diff(forward_logits(lcpp_eager, INPUT_IDS), lcpp_logits)
        assert eager_diff < 1e-5 and lcpp_eager_diff < 1e-5, (eager_diff, lcpp_eager_diff)

    gguf_path = os.path.join(out_dir, "model.gguf")
    convert_to_gguf(args.llama_cpp, out_dir, gguf_path, "tiny-gemma3")
    reader, tensors, _ = read_gguf(args.llama_cpp, gguf_path, GGUF_PER_LAYER, GGUF_GLOBAL)
    fields = gguf_fields(reader)
    summary = check_gguf(tensors, fields, os.path.join(out_dir, "model.safetensors"))
    # An independent float64 forward from the GGUF alone, read both ways.
    hd = fields["gemma3.attention.key_length"]
    np_lcpp = numpy_forward(tensors, fields, INPUT_IDS, 1 / math.sqrt(hd), LLAMACPP_LAYER_TYPES)
    np_real = numpy_forward(tensors, fields, INPUT_IDS, QUERY_PRE_ATTN_SCALAR ** -0.5, LAYER_TYPES)
    np_lcpp_diff = float(np.abs(np_lcpp - lcpp_np).max())
    np_real_diff = float(np.abs(np_real - logits_np).max())
    assert np_lcpp_diff < 1e-4 and np_real_diff < 1e-4, (np_lcpp_diff, np_real_diff)

    golden = {
        **golden_head(golden_cfg, INPUT_IDS, logits, logits_np, GREEDY_PROMPT, new_ids, margins),
        "semantics": {
            "logits_all.f32": "transformers, config.json as saved (query_pre_attn_scalar 24, "
                              "layer_types [sliding, sliding, full], sliding rope 1e4, full 1e6); "
                              "top5_last / greedy_ids / margins are for this",
            "logits_all_llamacpp_semantics.f32": "transformers, same weights, config as llama.cpp "
                              "reads model.gguf: query_pre_attn_scalar 32 (= head_dim), layer_types "
                              "from the every-6th rule (all sliding), rope bases and window "
                              "unchanged; llamacpp_semantics.* are for this",
            "model.gguf": "norm weights stored as 1 + w; no key for query_pre_attn_scalar or the "
                          "layer pattern; gemma3.rope.freq_base_swa = 1e4 and "
                          "gemma3.attention.sliding_window = 6 present",
        },
        "llamacpp_semantics": {
            "config_changes": {"query_pre_attn_scalar": HEAD_DIM,
                               "layer_types": LLAMACPP_LAYER_TYPES},
            "logits_all_file": "logits_all_llamacpp_semantics.f32: (24, 512) little-endian float32, "
                               "row-major; one forward over input_ids, no cache",
            "logits_sha256_f32le": sha256_f32le(lcpp_np),
            "top5_last": top5(lcpp_logits[-1]),
            "greedy_ids": lcpp_ids,
            "margins": lcpp_margins,
            "min_margin": min(lcpp_margins),
            "max_abs_diff_vs_logits_all": lcpp_diff,
        },
        "nowindow_max_abs_diff": nowindow_diff,
        "head_dim_scale_max_abs_diff": scale_diff,
        "sdpa_vs_eager_max_abs_diff": eager_diff,
        "numpy_f64_from_gguf_max_abs_diff": {"logits_all.f32": np_real_diff,
                                             "logits_all_llamacpp_semantics.f32": np_lcpp_diff},
        "tokenizer_samples": tok_samples,
    }
    write_golden(out_dir, golden)

    print(f"wrote {out_dir}: greedy {new_ids}; min margin {min(margins):.4f}; "
          f"no-window max |diff| {nowindow_diff:.4f}; head_dim-scale max |diff| {scale_diff:.4f}; "
          f"llama.cpp semantics max |diff| {lcpp_diff:.4f} (greedy {lcpp_ids}, min margin "
          f"{min(lcpp_margins):.4f}); eager vs sdpa {eager_diff:.2e} / {lcpp_eager_diff:.2e}; "
          f"numpy f64 from gguf {np_real_diff:.2e} (real) / {np_lcpp_diff:.2e} (llama.cpp); "
          f"gguf: {summary}")


if __name__ == "__main__":
    main()
