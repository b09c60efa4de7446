"""Shared code of the tiny random-model golden generators testdata/tiny-mistral/make_golden.py,
testdata/tiny-phi3/make_golden.py and testdata/tiny-gemma3/make_golden.py (tiny-llama's stands alone).

Not a script: each of them puts testdata/ on sys.path and imports this module, so they run from any
current directory. What lives here is what the three do alike, so their output bytes depend on it:
  run setup      --out DIR (default: next to the script) and --llama-cpp DIR (default: llama.cpp
                 0c1e57098bba43ac29e6e3b677cdceebdd22334f as vendored in llama-cpp-python 0.3.36,
                 unpacked under ~/.cache/kiln/llama.cpp); a warning unless transformers 5.24.0 /
                 torch 2.15; 2 torch threads; float32, attn_implementation "sdpa"
  weights        torch.manual_seed(0) right after the model is built, then parameter by parameter in
                 sorted-name order (the safetensors order): every matrix ~ N(0, 0.1), every norm
                 weight ~ U(0.5, 1.5) (the family may pick another range: Gemma's 1 + w norms)
  saving         save_pretrained (config.json, generation_config.json with do_sample false,
                 model.safetensors), then config.json rewritten with the family's legacy keys and
                 torch_dtype appended; golden.json keeps the config as saved
  tokenizer      3000 English sentences from random.Random(0) over a fixed word list, and a 512-piece
                 SentencePiece BPE trained on them single-threaded (byte fallback, split digits,
                 identity normalizer, whitespace not collapsed; the family gives the special ids and
                 the dummy prefix); tokenizer_samples: 3 texts -> ids and pieces, no BOS
  decoding       greedy with a KV cache (argmax, exactly `steps` tokens, not stopped at EOS) with the
                 top1 - top2 logit margin of each step, checked against one uncached forward over
                 prompt + generated ids
  dumps          logits as little-endian f32, row-major, and their sha256; top-5; the head of
                 golden.json (config .. min_margin); JSON as json.dump(ensure_ascii=False), no newline
  llama.cpp      its convert_hf_to_gguf.py --outtype f32, run with this Python; its own gguf-py; the
                 GGUF's tensors read back under their Hugging Face names and compared with
                 model.safetensors
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
from transformers import GenerationConfig

DEFAULT_LLAMA_CPP = os.path.expanduser(
    "~/.cache/kiln/llama.cpp/llama_cpp_python-0.3.36/vendor/llama.cpp")

SEED = 0
THREADS = 2
ATTN = "sdpa"
TOKENIZER_SAMPLES = ["Hello world, the sun is hot!", "Water 2026 — café.", " Two  spaces,\tand a tab"]


# ---------------------------------------------------------------- run setup
def setup(doc, here):
    """Parses --out / --llama-cpp (doc: the script's docstring, here: its folder), makes the output
    folder, warns about other library versions, sets the torch threads. Returns (args, out_dir)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=here, help="output folder (default: next to this script)")
    ap.add_argument("--llama-cpp", default=DEFAULT_LLAMA_CPP,
                    help="llama.cpp checkout with convert_hf_to_gguf.py and gguf-py")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    if transformers.__version__ != "5.24.0" or not torch.__version__.startswith("2.15."):
        print(f"warning: made with transformers 5.24.0 / torch 2.15; this is "
              f"{transformers.__version__} / {torch.__version__}", file=sys.stderr)

    torch.set_num_threads(THREADS)
    return args, out_dir


# ---------------------------------------------------------------- models
def init_weights(model, norm_low=0.5, norm_high=1.5):
    """Seed, then sorted-name order (= the safetensors order): matrices N(0, 0.1), the rest (norm
    weights) U(norm_low, norm_high)."""
    torch.manual_seed(SEED)
    with torch.no_grad():
        for _name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim >= 2:
                p.normal_(mean=0.0, std=0.1)
            else:
                p.uniform_(norm_low, norm_high)


def random_model(model_class, config, norm_range=(0.5, 1.5)):
    """model_class(config) in f32 with init_weights' weights, in eval mode."""
    config._attn_implementation = ATTN
    model = model_class(config).to(torch.float32)
    init_weights(model, *norm_range)  # seed, then sorted-name order (= the safetensors order)
    return model.eval()


def rebuild(model_class, config, state_dict, attn=ATTN):
    """model_class(config) in f32, eval mode, with the weights of state_dict."""
    config._attn_implementation = attn
    model = model_class(config).to(torch.float32).eval()
    model.load_state_dict(state_dict)
    return model


def reload(model_class, out_dir):
    """The model as written to out_dir, loaded back by transformers."""
    return model_class.from_pretrained(out_dir, attn_implementation=ATTN).eval()


def save_model(model, out_dir, generation, legacy):
    """save_pretrained with GenerationConfig(**generation, do_sample=False); then config.json gets
    legacy(cfg)'s keys (the family's older spellings) and torch_dtype appended. Returns the config as
    saved, before that rewrite (what golden.json records)."""
    model.generation_config = GenerationConfig(**generation, do_sample=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    cfg_path = os.path.join(out_dir, "config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    golden_cfg = dict(cfg)
    cfg.update(legacy(cfg))
    cfg["torch_dtype"] = cfg.get("dtype", "float32")
    write_json(cfg_path, cfg, indent=2)
    return golden_cfg


# ---------------------------------------------------------------- tokenizer
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


def train_sentencepiece(**specials):
    """A 512-piece SentencePiece BPE model trained on training_sentences() (deterministic). specials
    (add_dummy_prefix, the special ids and pieces) go to the trainer as given: pass only what the
    family sets, since a piece given explicitly is recorded in the .model file even when it is the
    default. Returns the bytes of the .model file and a processor on them."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_sentences()), model_writer=buf, vocab_size=512,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        num_threads=1, shuffle_input_sentence=False, minloglevel=2, **specials)
    model = buf.getvalue()
    return model, spm.SentencePieceProcessor(model_proto=model)


def tokenizer_samples(sp):
    return [{"text": t, "ids": sp.encode(t), "pieces": sp.encode(t, out_type=str)}
            for t in TOKENIZER_SAMPLES]


def train_llama_tokenizer():
    """The Llama-2-style model of tiny-mistral and tiny-phi3: <unk>=0 <s>=1 </s>=2, no pad, dummy
    prefix. Returns the .model bytes and the tokenizer_samples."""
    model, sp = train_sentencepiece(add_dummy_prefix=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    assert sp.vocab_size() == 512 and sp.id_to_piece(1) == "<s>" and sp.id_to_piece(2) == "</s>"
    return model, tokenizer_samples(sp)


def llama_tokenizer_config(model_max_length):
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "tokenizer_class": "LlamaTokenizer",
    }


def write_tokenizer(out_dir, model, tokenizer_config):
    """tokenizer.model (the bytes) and tokenizer_config.json."""
    with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
        f.write(model)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), tokenizer_config, indent=2)


# ---------------------------------------------------------------- forwards and decoding
def forward_logits(model, input_ids):
    """The (len(input_ids), vocab) logits of one forward over input_ids with no cache."""
    logits = model(input_ids=torch.tensor([input_ids]), use_cache=False).logits[0]
    assert logits.shape == (len(input_ids), model.config.vocab_size), logits.shape
    return logits


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


def check_greedy(model, prompt, new):
    """The cached decode against one uncached forward over prompt + generated ids."""
    full = model(input_ids=torch.tensor([prompt + new]), use_cache=False).logits[0]
    recomputed = [int(i) for i in full[len(prompt) - 1:-1].argmax(-1)]
    assert recomputed == new, (recomputed, new)


def max_abs_diff(a, b):
    return float((a - b).abs().max())


def check_window(nowin_logits, logits, window):
    """The sliding window matters for this prompt: without it the logits move (> 0.1), but not at
    the first `window` positions. Returns the max abs difference."""
    nowindow_diff = max_abs_diff(nowin_logits, logits)
    head_diff = max_abs_diff(nowin_logits[:window], logits[:window])
    assert nowindow_diff > 0.1 and head_diff == 0.0, (nowindow_diff, head_diff)
    return nowindow_diff


# ---------------------------------------------------------------- files
def write_json(path, obj, indent):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)


def f32le(t):
    return np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4"))


def dump_f32(t, path):
    """Writes t to path as little-endian f32, row-major; returns the array written."""
    a = f32le(t)
    a.tofile(path)
    return a


def sha256_f32le(a):
    return hashlib.sha256(a.tobytes()).hexdigest()


def top5(last):
    top = torch.topk(last, 5)
    return {"ids": [int(i) for i in top.indices], "values": [float(v) for v in top.values]}


def golden_head(config, input_ids, logits, logits_np, greedy_prompt, greedy_ids, margins):
    """The keys every tiny family's golden.json starts with, in order (logits: the forward over
    input_ids written to logits_all.f32 as logits_np)."""
    rows, vocab = logits_np.shape
    return {
        "config": config,
        "input_ids": input_ids,
        "logits_all_file": f"logits_all.f32: ({rows}, {vocab}) little-endian float32, row-major; "
                           "one forward over input_ids, no cache",
        "logits_sha256_f32le": sha256_f32le(logits_np),
        "top5_last": top5(logits[-1]),
        "greedy_prompt": greedy_prompt,
        "greedy_ids": greedy_ids,
        "margins": margins,
        "min_margin": min(margins),
    }


def write_golden(out_dir, golden):
    write_json(os.path.join(out_dir, "golden.json"), golden, indent=1)


# ---------------------------------------------------------------- llama.cpp
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


def gguf_fields(reader):
    """{key: value} of a GGUFReader, without the GGUF.* header pseudo-keys."""
    return {f.name: f.contents() for f in reader.fields.values() if not f.name.startswith("GGUF.")}


def read_gguf(llama_cpp, path, per_layer, global_names, extra=()):
    """The tensors of the GGUF at path (all f32) under their Hugging Face names, in the HF shape:
    blk.N.KIND.weight -> model.layers.N.{per_layer[KIND]}.weight, any other name -> global_names[name];
    the names in extra are kept apart, by GGUF name. Returns (reader, tensors, extras)."""
    gguf = import_gguf(llama_cpp)
    reader = gguf.GGUFReader(path, "r")
    tensors, extras = {}, {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        shape = list(reversed([int(d) for d in t.shape]))
        if t.name in extra:
            extras[t.name] = np.array(t.data).reshape(shape)
            continue
        if t.name.startswith("blk."):
            _, bid, kind, _ = t.name.split(".")
            src = f"model.layers.{bid}.{per_layer[kind]}.weight"
        else:
            src = global_names[t.name]
        assert src not in tensors, (t.name, src)
        tensors[src] = np.array(t.data).reshape(shape)
    return reader, tensors, extras


def check_tensors(tensors, st_path, expect=lambda name, ref: ref):
    """tensors (from read_gguf) are exactly the tensors of the safetensors file at st_path, one each,
    as expect(name, ref) makes them (where it changes a tensor, the stored one must differ from the
    safetensors one). Returns the names of the changed tensors."""
    st = {k: v.numpy() for k, v in load_file(st_path).items()}
    assert set(tensors) == set(st), set(st) ^ set(tensors)
    changed = []
    for name, ref in st.items():
        got, want = tensors[name], expect(name, ref)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        assert np.array_equal(got, want), name
        if want is not ref:
            assert not np.array_equal(got, ref), name
            changed.append(name)
    return changed
