#!/usr/bin/env python3
"""Regenerate the tiny random-Mistral golden fixtures in testdata/tiny-mistral/.

What it makes (next to this script, or in --out DIR):
  config.json             MistralConfig: hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 24
                          (deliberately != hidden/heads = 16, Mistral-Nemo style: q_proj is 96x64,
                          k/v_proj 48x64, o_proj 64x96), intermediate 128, vocab 512, untied lm_head,
                          rope_theta 1e5 (default RoPE, rotate_half over all 24 dims), eps 1e-5,
                          max_position_embeddings 128, sliding_window 8; plus the legacy keys
                          rope_theta / rope_scaling / torch_dtype appended so that older parsers read it
  generation_config.json  bos 1, eos 2, do_sample false
  model.safetensors       random weights: torch.manual_seed(0) right after the model is built, then
                          parameter by parameter in sorted-name order (the safetensors order), every
                          matrix ~ N(0, 0.1) and every norm weight ~ U(0.5, 1.5)
  tokenizer.model         a 512-piece SentencePiece BPE model (byte_fallback; <unk>=0 <s>=1 </s>=2,
                          <0x00>..<0xFF> = 3..258, 253 merged pieces; identity normalizer,
                          add_dummy_prefix, whitespace not collapsed, as Llama 2's), trained
                          single-threaded on 3000 generated English sentences (random.Random(0)). Only
                          there so that llama.cpp's converter can write a GGUF: the weights are random
                          and know nothing of it
  tokenizer_config.json   LlamaTokenizer, add_bos_token true, add_eos_token false (read by the
                          converter; transformers' AutoTokenizer on this folder is not the reference:
                          5.23 and 5.24 disagree with sentencepiece, and each other, on the dummy
                          prefix)
  golden.json             input_ids (24 ids, BOS-like 1 first: longer than the window of 8, so the
                          window matters), top5_last ids/values of the last position, greedy_prompt
                          (= input_ids), greedy_ids (16 greedy steps with a KV cache, argmax, not
                          stopped at EOS), margins (top1 - top2 logit at each greedy step), min_margin,
                          nowindow_max_abs_diff, tokenizer_samples (text -> SentencePiece ids, no BOS)
  logits_all.f32          logits at every position of input_ids from one forward with no cache,
                          24x512 little-endian f32, row-major
  model.gguf              llama.cpp's convert_hf_to_gguf.py --outtype f32 of this folder, then
                          rewritten with gguf-py (gguf_new_metadata.copy_with_new_metadata, every other
                          key/tensor copied unchanged, in order) to add llama.attention.sliding_window
                          = 8 (uint32): the converter writes MistralForCausalLM as
                          general.architecture "llama" and drops sliding_window (llama.cpp's llama
                          graph has no window and ignores the key: it is for Kiln). As in any llama
                          GGUF, attn_q / attn_k rows are permuted (LlamaModel.permute: within each
                          head, GGUF row 2i+j = HF row j*12+i, i < 12, j < 2) relative to the
                          safetensors, so RoPE on the GGUF layout rotates adjacent pairs; everything
                          else is the same f32 data. This script checks both.

Sliding window semantics (transformers' sliding_window_overlay): query i attends keys j with
i - 8 < j <= i, i.e. itself and the 7 before it (llama.cpp's LLAMA_SWA_TYPE_STANDARD masks
i - j >= n_swa: the same). With the window disabled (sliding_window None), the 24-position logits
differ from logits_all.f32 by up to 3.76 (max abs); positions 0..7 are identical.
attn_implementation "sdpa" honours the window: it matched "eager" within 1.8e-6 (checked by hand).

Made with transformers 5.24.0, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0, sentencepiece 0.2.3,
the gguf-py and converter of llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (vendored in
llama-cpp-python 0.3.36); float32, CPU, 2 threads, attn_implementation="sdpa".

Run from the repository root (venv as in testdata/GOLDEN-README.md):
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-mistral/make_golden.py            # rewrites testdata/tiny-mistral/
    ~/.cache/kiln/golden-venv/bin/python testdata/tiny-mistral/make_golden.py --out "$(mktemp -d)"
--llama-cpp DIR names the llama.cpp checkout (default: the one vendored in llama-cpp-python 0.3.36
under ~/.cache/kiln/llama.cpp); its convert_hf_to_gguf.py is run with this Python and uses its own
gguf-py.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64);
transformers 5.23.0 (the requirements-golden.txt pin) gives the same bytes except the
"transformers_version" strings in config.json, generation_config.json and golden.json's config.
An independent float64 numpy forward from model.gguf alone (interleaved RoPE, window i - j < 8)
matched logits_all.f32 within 2.2e-6 and reproduced greedy_ids.
Needs llama.cpp: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 (sdist sha256
832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e) and unpack it in ~/.cache/kiln/llama.cpp/.
"""

import argparse
import hashlib
import io
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from transformers import GenerationConfig, MistralConfig, MistralForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_LLAMA_CPP = os.path.expanduser(
    "~/.cache/kiln/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp")

SEED = 0
THREADS = 2
ATTN = "sdpa"
SLIDING_WINDOW = 8
INPUT_IDS = [1, 17, 42, 100, 7, 255, 300, 511, 3, 64, 128, 9, 77, 401, 2, 5,
             333, 480, 12, 250, 99, 450, 31, 200]
GREEDY_PROMPT = INPUT_IDS
GREEDY_STEPS = 16
TOKENIZER_SAMPLES = ["Hello world, the sun is hot!", "Water 2026 — café.", " Two  spaces,\tand a tab"]


def make_config(sliding_window=SLIDING_WINDOW):
    return MistralConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        hidden_act="silu",
        max_position_embeddings=128,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        sliding_window=sliding_window,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        use_cache=True,
    )


# ---------------------------------------------------------------- tokenizer (same as tiny-phi3)
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
    "model_max_length": 128,
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


def add_sliding_window(llama_cpp, src, dst, window):
    """Copy src to dst with gguf-py, adding llama.attention.sliding_window (uint32)."""
    gguf = import_gguf(llama_cpp)
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(src, "r")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    assert arch == "llama", arch
    key = gguf.Keys.Attention.SLIDING_WINDOW.format(arch=arch)
    assert reader.get_field(key) is None, f"{key} already there"
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    copy_with_new_metadata(reader, writer, {key: MetadataDetails(gguf.GGUFValueType.UINT32, window)},
                           [])

    # Nothing else changed: same keys (types, values, order) and tensors (name, shape, type, bytes).
    new = gguf.GGUFReader(dst, "r")
    fields = lambda r: [(f.name, f.types, f.contents()) for f in r.fields.values()
                        if not f.name.startswith("GGUF.")]
    added = (key, [gguf.GGUFValueType.UINT32], window)
    assert fields(new) == fields(reader) + [added]
    tensors = lambda r: [(t.name, [int(d) for d in t.shape], t.tensor_type, t.data.tobytes())
                         for t in r.tensors]
    assert tensors(new) == tensors(reader)


def permute(w, n_head):
    # llama.cpp conversion/llama.py LlamaModel.permute (n_head = KV heads for k)
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def check_gguf(llama_cpp, path, st_path, config):
    """Every GGUF tensor equals its safetensors tensor (q/k permuted); returns a short summary."""
    gguf = import_gguf(llama_cpp)

    reader = gguf.GGUFReader(path, "r")
    st = {k: v.numpy() for k, v in load_file(st_path).items()}
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    hf_name = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
               "output_norm.weight": "model.norm.weight"}
    per_layer = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                 "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    seen = set()
    for t in reader.tensors:
        if t.name.startswith("blk."):
            _, bid, kind, _ = t.name.split(".")
            src = f"model.layers.{bid}.{per_layer[kind]}.weight"
        else:
            kind, src = t.name, hf_name[t.name]
        ref = st[src]
        if kind == "attn_q":
            ref = permute(ref, nh)
            assert not np.array_equal(t.data.reshape(ref.shape), st[src])
        elif kind == "attn_k":
            ref = permute(ref, nkv)
            assert not np.array_equal(t.data.reshape(ref.shape), st[src])
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        assert [int(d) for d in t.shape] == list(reversed(ref.shape)), (t.name, t.shape, ref.shape)
        assert np.array_equal(t.data.reshape(ref.shape), ref), t.name
        seen.add(src)
    assert seen == set(st), set(st) - seen
    sw = reader.get_field("llama.attention.sliding_window")
    assert sw is not None and sw.contents() == SLIDING_WINDOW and \
        sw.types == [gguf.GGUFValueType.UINT32]
    return f"{len(reader.tensors)} tensors == safetensors (attn_q/attn_k permuted)"


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
    model = MistralForCausalLM(config).to(torch.float32)
    init_weights(model)  # seed, then sorted-name order (= the safetensors order)
    model.eval()

    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=False)
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

    tok_model, tok_samples = train_tokenizer()
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(tok_model)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG, indent=2)

    with torch.no_grad():
        ids = torch.tensor([INPUT_IDS])
        logits = model(input_ids=ids, use_cache=False).logits[0]  # (24, 512)
        assert logits.shape == (len(INPUT_IDS), config.vocab_size), logits.shape
        logits_np = f32le(logits)
        logits_np.tofile(os.path.join(out_dir, "logits_all.f32"))
        top = torch.topk(logits[-1], 5)

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = MistralForCausalLM.from_pretrained(out_dir, attn_implementation=ATTN).eval()
        assert reloaded.config.sliding_window == SLIDING_WINDOW and reloaded.config.head_dim == 24
        assert torch.equal(reloaded(input_ids=ids, use_cache=False).logits[0], logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)
        # The cached decode against one uncached forward over prompt + generated ids.
        full = model(input_ids=torch.tensor([GREEDY_PROMPT + new_ids]), use_cache=False).logits[0]
        recomputed = [int(i) for i in full[len(GREEDY_PROMPT) - 1:-1].argmax(-1)]
        assert recomputed == new_ids, (recomputed, new_ids)

        # Sanity: the window matters for this prompt.
        nowin_cfg = make_config(sliding_window=None)
        nowin_cfg._attn_implementation = ATTN
        nowin = MistralForCausalLM(nowin_cfg).eval()
        nowin.load_state_dict(model.state_dict())
        nowin_logits = nowin(input_ids=ids, use_cache=False).logits[0]
        nowindow_diff = float((nowin_logits - logits).abs().max())
        head_diff = float((nowin_logits - logits)[:SLIDING_WINDOW].abs().max())
        assert nowindow_diff > 0.1 and head_diff == 0.0, (nowindow_diff, head_diff)

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
        "nowindow_max_abs_diff": nowindow_diff,
        "tokenizer_samples": tok_samples,
    }
    write_json(os.path.join(out_dir, "golden.json"), golden, indent=1)

    gguf_path = os.path.join(out_dir, "model.gguf")
    raw_path = os.path.join(out_dir, "model.converter.gguf")
    convert_to_gguf(args.llama_cpp, out_dir, raw_path, "tiny-mistral")
    add_sliding_window(args.llama_cpp, raw_path, gguf_path, SLIDING_WINDOW)
    os.remove(raw_path)
    summary = check_gguf(args.llama_cpp, gguf_path, os.path.join(out_dir, "model.safetensors"),
                         config)

    print(f"wrote {out_dir}: greedy {new_ids}; min margin {min(margins):.4f}; "
          f"no-window max |diff| {nowindow_diff:.4f}; gguf: {summary}")


if __name__ == "__main__":
    main()
