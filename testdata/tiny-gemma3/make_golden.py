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
                          sentences of testdata/tiny-mistral/ (random.Random(0)). Only there so that
                          llama.cpp's converter can write a GGUF: the weights know nothing of it
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
gguf-py.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64).
The converter logs "Unknown RoPE type: default" (harmless: no scaling key is written) and
"Duplicated key name" for seven keys Gemma3Model.set_gguf_parameters writes again (same values).
Needs llama.cpp: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 (sdist sha256
832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e) and unpack it in ~/.cache/kiln/llama.cpp/.
"""

import argparse
import hashlib
import io
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LLAMA_CPP = os.path.expanduser(
    "~/.cache/kiln/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp")

SEED = 0
THREADS = 2
ATTN = "sdpa"
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
TOKENIZER_SAMPLES = ["Hello world, the sun is hot!", "Water 2026 — café.", " Two  spaces,\tand a tab"]


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


# ---------------------------------------------------------------- tokenizer (tiny-mistral's corpus)
WORDS = (
    "the a an of to and in is it that was for on are with as his they be at one have this from or "
    "had by hot word but what some we can out other were all there when up use your how said each "
    "she which do their time if will way about many then them write would like so these her long "
    "make thing see him two has look more day could go come did number sound no most people my over "
    "know water than call first who may down side been now find any new work part take get place "
    "made live where after back little only round man year came show every good me give our under "
    "name very through just form sentence great think say help low line differ turn cause much mean "
    "before move right boy old too same tell does set three want air well also play small end put "
    "home read hand port large spell add even land here must big high such follow act why ask men "
    "change went light kind off need house picture try us again animal point mother world near "
    "build self earth father head stand own page should country found answer school grow study "
    "still learn plant cover food sun four between state keep eye never last let thought city tree "
    "cross farm hard start might story saw far sea draw left late run while press close night real "
    "life few north"
).split()


def training_sentences():
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14)))
        s = s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!", ","])
        if rng.random() < 0.2:
            s += " " + str(rng.randint(0, 2026))
        lines.append(s)
    return lines


def train_tokenizer():
    """A 512-piece SentencePiece BPE model with Gemma's special ids, bytes of the .model file
    (deterministic)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()), model_writer=buf, vocab_size=512,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>", minloglevel=2)
    model = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model)
    assert sp.vocab_size() == 512
    assert [sp.id_to_piece(i) for i in range(5)] == ["<pad>", "<eos>", "<bos>", "<unk>", "<0x00>"]
    assert sp.id_to_piece(259) == "<0xFF>" and not sp.is_byte(260)
    samples = [{"text": t, "ids": sp.encode(t), "pieces": sp.encode(t, out_type=str)}
               for t in TOKENIZER_SAMPLES]
    return model, samples


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


# ---------------------------------------------------------------- helpers
def write_json(path, obj, indent):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def f32le(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))


def init_weights(model):
    torch.manual_seed(SEED)
    with torch.no_grad():
        for _name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim >= 2:
                p.normal_(mean=0.0, std=0.1)
            else:
                p.uniform_(-0.5, 0.5)  # Gemma RMSNorm gain is 1 + w: in [0.5, 1.5]


def build(config, state_dict, attn=ATTN):
    config._attn_implementation = attn
    model = Gemma3ForCausalLM(config).to(torch.float32).eval()
    model.load_state_dict(state_dict)
    return model


def greedy(model, prompt, steps):
    """Argmax decoding with a KV cache, exactly `steps` tokens, not stopped at EOS; returns the ids
    and the top1 - top2 logit gap of each step."""
    out = model(input_ids=torch.tensor([prompt]), use_cache=True)
    past = out.past_key_values
    new, margins = [], []
    for _ in range(steps):
        last = out.logits[0, -1]
        top2 = torch.topk(last, 2).values
        nxt = int(last.argmax())
        new.append(nxt)
        margins.append(float(top2[0] - top2[1]))
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
    # The cached decode against one uncached forward over prompt + generated ids.
    full = model(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0]
    recomputed = [int(i) for i in full[len(prompt) - 1:-1].argmax(-1)]
    assert recomputed == new, (recomputed, new)
    return new, margins


def top5(last):
    top = torch.topk(last, 5)
    return {"ids": [int(i) for i in top.indices], "values": [float(v) for v in top.values]}


def convert_to_gguf(llama_cpp, model_dir, out_file, name):
    converter = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    if not os.path.isfile(converter):
        sys.exit(f"error: {converter} not found (pass --llama-cpp DIR)")
    subprocess.run([sys.executable, converter, model_dir, "--outtype", "f32", "--outfile", out_file,
                    "--model-name", name], check=True)


def import_gguf(llama_cpp):
    """llama.cpp's own gguf-py (the one its converter uses), not a pip-installed gguf."""
    sys.path.insert(0, os.path.join(llama_cpp, "gguf-py"))
    import gguf

    assert os.path.abspath(gguf.__file__).startswith(os.path.abspath(llama_cpp)), gguf.__file__
    return gguf


GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight",
               "output_norm.weight": "model.norm.weight"}
GGUF_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                  "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
                  "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                  "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
                  "ffn_norm": "pre_feedforward_layernorm",
                  "post_ffw_norm": "post_feedforward_layernorm"}


def read_gguf(llama_cpp, path):
    """{hf name: array as stored in the GGUF, in the HF shape}, {key: value} of model.gguf."""
    gguf = import_gguf(llama_cpp)
    reader = gguf.GGUFReader(path, "r")
    tensors = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        if t.name.startswith("blk."):
            _, bid, kind, _ = t.name.split(".")
            src = f"model.layers.{bid}.{GGUF_PER_LAYER[kind]}.weight"
        else:
            src = GGUF_GLOBAL[t.name]
        shape = list(reversed([int(d) for d in t.shape]))
        tensors[src] = np.array(t.data).reshape(shape)
    fields = {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}
    return tensors, fields


def check_gguf(tensors, fields, st_path):
    """Every GGUF tensor equals its safetensors tensor, norms as 1 + w (bit for bit); the keys."""
    st = {k: v.numpy() for k, v in load_file(st_path).items()}
    assert set(tensors) == set(st), set(st) ^ set(tensors)
    n_norm = 0
    for name, ref in st.items():
        got = tensors[name]
        assert got.shape == ref.shape, (name, got.shape, ref.shape)
        if name.endswith("norm.weight"):
            assert np.array_equal(got, ref + np.float32(1.0)), name
            assert not np.array_equal(got, ref), name
            n_norm += 1
        else:
            assert np.array_equal(got, ref), name
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: next to this script)")
    ap.add_argument("--llama-cpp", default=DEFAULT_LLAMA_CPP,
                    help="llama.cpp checkout with convert_hf_to_gguf.py and gguf-py")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    if transformers.__version__ != "5.24.0" or not torch.__version__.startswith("2.15."):
        print(f"warning: made with transformers 5.24.0 / torch 2.15; this is "
              f"{transformers.__version__} / {torch.__version__}", file=sys.stderr)

    torch.set_num_threads(THREADS)

    config = make_config()
    config._attn_implementation = ATTN
    model = Gemma3ForCausalLM(config).to(torch.float32)
    init_weights(model)  # seed, then sorted-name order (= the safetensors order)
    model.eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    state = model.state_dict()

    model.generation_config = GenerationConfig(bos_token_id=2, eos_token_id=1, pad_token_id=0,
                                               do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    golden_cfg = dict(cfg)
    # Legacy (hub) spellings for parsers that predate transformers 5's rope_parameters / dtype.
    cfg["rope_theta"] = cfg["rope_parameters"]["full_attention"]["rope_theta"]
    cfg["rope_local_base_freq"] = cfg["rope_parameters"]["sliding_attention"]["rope_theta"]
    cfg["rope_scaling"] = None
    cfg["torch_dtype"] = cfg.get("dtype", "float32")
    write_json(cfg_path, cfg, indent=2)

    tok_model, tok_samples = train_tokenizer()
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(tok_model)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG, indent=2)

    llamacpp_cfg = make_config(query_pre_attn_scalar=HEAD_DIM, layer_types=LLAMACPP_LAYER_TYPES,
                               pattern=LLAMACPP_PATTERN)
    with torch.no_grad():
        ids = torch.tensor([INPUT_IDS])
        logits = model(input_ids=ids, use_cache=False).logits[0]  # (24, 512)
        assert logits.shape == (len(INPUT_IDS), config.vocab_size), logits.shape
        logits_np = f32le(logits)
        logits_np.tofile(os.path.join(out_dir, "logits_all.f32"))

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = Gemma3ForCausalLM.from_pretrained(out_dir, attn_implementation=ATTN).eval()
        rc = reloaded.config
        assert (rc.sliding_window, rc.head_dim, rc.query_pre_attn_scalar, rc.layer_types) == \
            (SLIDING_WINDOW, HEAD_DIM, QUERY_PRE_ATTN_SCALAR, LAYER_TYPES)
        assert rc.rope_parameters["sliding_attention"]["rope_theta"] == ROPE_LOCAL
        assert rc.rope_parameters["full_attention"]["rope_theta"] == ROPE_GLOBAL
        assert torch.equal(reloaded(input_ids=ids, use_cache=False).logits[0], logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)

        # llama.cpp's reading of model.gguf, same weights.
        lcpp = build(llamacpp_cfg, state)
        lcpp_logits = lcpp(input_ids=ids, use_cache=False).logits[0]
        lcpp_np = f32le(lcpp_logits)
        lcpp_np.tofile(os.path.join(out_dir, "logits_all_llamacpp_semantics.f32"))
        lcpp_ids, lcpp_margins = greedy(lcpp, GREEDY_PROMPT, GREEDY_STEPS)
        lcpp_diff = float((lcpp_logits - logits).abs().max())

        # Sanity: the window and the scale matter for this prompt; sdpa agrees with eager.
        nowin = build(make_config(sliding_window=MAX_POS), state)
        nowin_logits = nowin(input_ids=ids, use_cache=False).logits[0]
        nowindow_diff = float((nowin_logits - logits).abs().max())
        head_diff = float((nowin_logits - logits)[:SLIDING_WINDOW].abs().max())
        assert nowindow_diff > 0.1 and head_diff == 0.0, (nowindow_diff, head_diff)
        hdscale = build(make_config(query_pre_attn_scalar=HEAD_DIM), state)
        scale_diff = float((hdscale(input_ids=ids, use_cache=False).logits[0] - logits).abs().max())
        assert scale_diff > 0.1, scale_diff
        assert lcpp_diff > 0.1, lcpp_diff
        eager = build(make_config(), state, attn="eager")
        eager_diff = float((eager(input_ids=ids, use_cache=False).logits[0] - logits).abs().max())
        lcpp_eager = build(make_config(query_pre_attn_scalar=HEAD_DIM,
                                       layer_types=LLAMACPP_LAYER_TYPES, pattern=LLAMACPP_PATTERN),
                           state, attn="eager")
        lcpp_eager_diff = float(
            (lcpp_eager(input_ids=ids, use_cache=False).logits[0] - lcpp_logits).abs().max())
        assert eager_diff < 1e-5 and lcpp_eager_diff < 1e-5, (eager_diff, lcpp_eager_diff)

    gguf_path = os.path.join(out_dir, "model.gguf")
    convert_to_gguf(args.llama_cpp, out_dir, gguf_path, "tiny-gemma3")
    tensors, fields = read_gguf(args.llama_cpp, gguf_path)
    summary = check_gguf(tensors, fields, os.path.join(out_dir, "model.safetensors"))
    # An independent float64 forward from the GGUF alone, read both ways.
    hd = fields["gemma3.attention.key_length"]
    np_lcpp = numpy_forward(tensors, fields, INPUT_IDS, 1 / math.sqrt(hd), LLAMACPP_LAYER_TYPES)
    np_real = numpy_forward(tensors, fields, INPUT_IDS, QUERY_PRE_ATTN_SCALAR ** -0.5, LAYER_TYPES)
    np_lcpp_diff = float(np.abs(np_lcpp - lcpp_np).max())
    np_real_diff = float(np.abs(np_real - logits_np).max())
    assert np_lcpp_diff < 1e-4 and np_real_diff < 1e-4, (np_lcpp_diff, np_real_diff)

    golden = {
        "config": golden_cfg,
        "input_ids": INPUT_IDS,
        "logits_all_file": "logits_all.f32: (24, 512) little-endian float32, row-major; "
                           "one forward over input_ids, no cache",
        "logits_sha256_f32le": hashlib.sha256(logits_np.tobytes()).hexdigest(),
        "top5_last": top5(logits[-1]),
        "greedy_prompt": GREEDY_PROMPT,
        "greedy_ids": new_ids,
        "margins": margins,
        "min_margin": min(margins),
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
            "logits_sha256_f32le": hashlib.sha256(lcpp_np.tobytes()).hexdigest(),
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
    write_json(os.path.join(out_dir, "golden.json"), golden, indent=1)

    print(f"wrote {out_dir}: greedy {new_ids}; min margin {min(margins):.4f}; "
          f"no-window max |diff| {nowindow_diff:.4f}; head_dim-scale max |diff| {scale_diff:.4f}; "
          f"llama.cpp semantics max |diff| {lcpp_diff:.4f} (greedy {lcpp_ids}, min margin "
          f"{min(lcpp_margins):.4f}); eager vs sdpa {eager_diff:.2e} / {lcpp_eager_diff:.2e}; "
          f"numpy f64 from gguf {np_real_diff:.2e} (real) / {np_lcpp_diff:.2e} (llama.cpp); "
          f"gguf: {summary}")


if __name__ == "__main__":
    main()
