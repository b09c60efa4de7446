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
                          fallback; <unk>=0 <s>=1 </s>=2), only there for llama.cpp's converter
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
gguf-py.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64);
transformers 5.23.0 (the requirements-golden.txt pin) gives the same bytes except the
"transformers_version" strings in config.json, generation_config.json and golden.json's config.
An independent float64 numpy forward from model.gguf alone (NEOX-style RoPE on dims 0..7 with
inv_freq / rope_factors_long, cos/sin times attn_factor, window i - j < 12) matched logits_all.f32
within 3.0e-6 (logits_short.f32 with rope_factors_short: 1.9e-6) and reproduced greedy_ids.
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
from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LLAMA_CPP = os.path.expanduser(
    "~/.cache/kiln/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp")

SEED = 0
THREADS = 2
ATTN = "sdpa"
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
TOKENIZER_SAMPLES = ["Hello world, the sun is hot!", "Water 2026 — café.", " Two  spaces,\tand a tab"]


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


# ---------------------------------------------------------------- tokenizer (same as tiny-mistral)
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
    """A 512-piece SentencePiece BPE model, bytes of the .model file (deterministic)."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()), model_writer=buf, vocab_size=512,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        minloglevel=2)
    model = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=model)
    assert sp.vocab_size() == 512 and sp.id_to_piece(1) == "<s>" and sp.id_to_piece(2) == "</s>"
    samples = [{"text": t, "ids": sp.encode(t), "pieces": sp.encode(t, out_type=str)}
               for t in TOKENIZER_SAMPLES]
    return model, samples


TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 64,
    "tokenizer_class": "LlamaTokenizer",
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
                p.uniform_(0.5, 1.5)


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
    return new, margins


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


def check_gguf(llama_cpp, path, st_path):
    """Every GGUF tensor equals its safetensors tensor (nothing permuted); returns a summary."""
    gguf = import_gguf(llama_cpp)

    reader = gguf.GGUFReader(path, "r")
    st = {k: v.numpy() for k, v in load_file(st_path).items()}
    hf_name = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
               "output_norm.weight": "model.norm.weight"}
    per_layer = {"attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                 "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj",
                 "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    extra = {"rope_factors_long.weight": LONG_FACTOR, "rope_factors_short.weight": SHORT_FACTOR}
    seen = set()
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        if t.name in extra:
            assert np.array_equal(t.data, np.array(extra[t.name], dtype=np.float32)), t.name
            continue
        if t.name.startswith("blk."):
            _, bid, kind, _ = t.name.split(".")
            src = f"model.layers.{bid}.{per_layer[kind]}.weight"
        else:
            src = hf_name[t.name]
        ref = st[src]
        assert [int(d) for d in t.shape] == list(reversed(ref.shape)), (t.name, t.shape, ref.shape)
        assert np.array_equal(t.data.reshape(ref.shape), ref), t.name
        seen.add(src)
    assert seen == set(st), set(st) - seen
    get = lambda k: reader.get_field(k).contents()
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
    model = Phi3ForCausalLM(config).to(torch.float32)
    init_weights(model)  # seed, then sorted-name order (= the safetensors order)
    model.eval()
    rotary = model.model.rotary_emb
    assert rotary.rope_type == "longrope"
    attention_factor = math.sqrt(1 + math.log(MAX_POS / ORIGINAL_MAX_POS) / math.log(ORIGINAL_MAX_POS))
    assert rotary.attention_scaling == attention_factor, rotary.attention_scaling
    rope_log = RopeLog(rotary, config)

    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2,
                                               do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    golden_cfg = dict(cfg)
    # Legacy (transformers 4 / hub Phi-3) spellings for parsers that predate rope_parameters.
    rp = cfg["rope_parameters"]
    cfg["rope_theta"] = rp["rope_theta"]
    cfg["rope_scaling"] = {"type": rp["rope_type"], "short_factor": rp["short_factor"],
                           "long_factor": rp["long_factor"]}
    cfg["partial_rotary_factor"] = rp["partial_rotary_factor"]
    cfg["torch_dtype"] = cfg.get("dtype", "float32")
    write_json(cfg_path, cfg, indent=2)

    tok_model, tok_samples = train_tokenizer()
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(tok_model)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG, indent=2)

    with torch.no_grad():
        ids = torch.tensor([INPUT_IDS])
        logits = model(input_ids=ids, use_cache=False).logits[0]  # (24, 512)
        assert logits.shape == (len(INPUT_IDS), config.vocab_size), logits.shape
        assert rope_log.take() == [(24, "long")]
        logits_np = f32le(logits)
        logits_np.tofile(os.path.join(out_dir, "logits_all.f32"))
        top = torch.topk(logits[-1], 5)

        short_ids = torch.tensor([SHORT_IDS])
        short_logits = model(input_ids=short_ids, use_cache=False).logits[0]  # (14, 512)
        assert rope_log.take() == [(len(SHORT_IDS), "short")]
        short_np = f32le(short_logits)
        short_np.tofile(os.path.join(out_dir, "logits_short.f32"))
        short_top = torch.topk(short_logits[-1], 5)

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = Phi3ForCausalLM.from_pretrained(out_dir, attn_implementation=ATTN).eval()
        rc = reloaded.config
        assert rc.sliding_window == SLIDING_WINDOW and rc.original_max_position_embeddings == 16
        # (transformers 5 takes the legacy rope_scaling over rope_parameters; it keeps its "type")
        rp_back = {k: v for k, v in rc.rope_parameters.items() if k != "type"}
        assert rp_back == golden_cfg["rope_parameters"], rc.rope_parameters
        assert torch.equal(reloaded(input_ids=ids, use_cache=False).logits[0], logits)
        assert torch.equal(reloaded(input_ids=short_ids, use_cache=False).logits[0], short_logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)
        greedy_calls = rope_log.take()
        assert greedy_calls == [(len(GREEDY_PROMPT) + i, "long") for i in range(GREEDY_STEPS + 1)]
        # The cached decode against one uncached forward over prompt + generated ids.
        full = model(input_ids=torch.tensor([GREEDY_PROMPT + new_ids]), use_cache=False).logits[0]
        recomputed = [int(i) for i in full[len(GREEDY_PROMPT) - 1:-1].argmax(-1)]
        assert recomputed == new_ids, (recomputed, new_ids)
        rope_log.take()

        # Sanity: the window matters for this prompt ...
        nowin_cfg = make_config(sliding_window=None)
        nowin_cfg._attn_implementation = ATTN
        nowin = Phi3ForCausalLM(nowin_cfg).eval()
        nowin.load_state_dict(model.state_dict())
        nowin_logits = nowin(input_ids=ids, use_cache=False).logits[0]
        nowindow_diff = float((nowin_logits - logits).abs().max())
        head_diff = float((nowin_logits - logits)[:SLIDING_WINDOW].abs().max())
        assert nowindow_diff > 0.1 and head_diff == 0.0, (nowindow_diff, head_diff)
        # ... and so do the long factors: the same 24-token forward with the short set forced.
        rotary.long_inv_freq = rotary.original_inv_freq.clone()  # what longrope switches to
        forced = model(input_ids=ids, use_cache=False).logits[0]
        assert rope_log.take() == [(24, "short")]
        shortfactors_diff = float((forced - logits).abs().max())
        assert shortfactors_diff > 0.1, shortfactors_diff
        del rotary.long_inv_freq

    golden = {
        "config": golden_cfg,
        "input_ids": INPUT_IDS,
        "logits_all_file": "logits_all.f32: (24, 512) little-endian float32, row-major; "
                           "one forward over input_ids, no cache",
        "logits_sha256_f32le": hashlib.sha256(logits_np.tobytes()).hexdigest(),
        "top5_last": {"ids": [int(i) for i in top.indices],
                      "values": [float(v) for v in top.values]},
        "greedy_prompt": GREEDY_PROMPT,
        "greedy_ids": new_ids,
        "margins": margins,
        "min_margin": min(margins),
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
            "logits_sha256_f32le": hashlib.sha256(short_np.tobytes()).hexdigest(),
            "top5_last": {"ids": [int(i) for i in short_top.indices],
                          "values": [float(v) for v in short_top.values]},
        },
        "tokenizer_samples": tok_samples,
    }
    write_json(os.path.join(out_dir, "golden.json"), golden, indent=1)

    gguf_path = os.path.join(out_dir, "model.gguf")
    convert_to_gguf(args.llama_cpp, out_dir, gguf_path, "tiny-phi3")
    summary = check_gguf(args.llama_cpp, gguf_path, os.path.join(out_dir, "model.safetensors"))

    print(f"wrote {out_dir}: greedy {new_ids}; min margin {min(margins):.4f}; "
          f"no-window max |diff| {nowindow_diff:.4f}; short-factors max |diff| "
          f"{shortfactors_diff:.4f}; gguf: {summary}")


if __name__ == "__main__":
    main()
