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
                          single-threaded on 3000 generated English sentences (random.Random(0);
                          testdata/tiny_common.py). Only there so that llama.cpp's converter can write
                          a GGUF: the weights are random and know nothing of it
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
gguf-py. What tiny-mistral, tiny-phi3 and tiny-gemma3 share (arguments, weight initialisation, the
tokenizer, greedy decoding, the dumps, the converter run) is in testdata/tiny_common.py, which this
script imports from its parent folder (any current directory works).

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 16-core x86-64);
transformers 5.23.0 (the requirements-golden.txt pin) gives the same bytes except the
"transformers_version" strings in config.json, generation_config.json and golden.json's config.
An independent float64 numpy forward from model.gguf alone (interleaved RoPE, window i - j < 8)
matched logits_all.f32 within 2.2e-6 and reproduced greedy_ids.
Needs llama.cpp: pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 (sdist sha256
832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e) and unpack it in ~/.cache/kiln/llama.cpp/.
"""

import os
import sys

import torch
from transformers import MistralConfig, MistralForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no testdata/__pycache__
sys.path.insert(0, os.path.dirname(HERE))  # testdata/, for tiny_common
from tiny_common import (check_greedy, check_tensors, check_window, convert_to_gguf, dump_f32,  # noqa: E402
                         forward_logits, golden_head, greedy, import_gguf, llama_tokenizer_config,
                         random_model, read_gguf, rebuild, reload, save_model, setup,
                         train_llama_tokenizer, write_golden, write_tokenizer)

SLIDING_WINDOW = 8
INPUT_IDS = [1, 17, 42, 100, 7, 255, 300, 511, 3, 64, 128, 9, 77, 401, 2, 5,
             333, 480, 12, 250, 99, 450, 31, 200]
GREEDY_PROMPT = INPUT_IDS
GREEDY_STEPS = 16
TOKENIZER_CONFIG = llama_tokenizer_config(model_max_length=128)


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


def legacy_keys(cfg):
    # Legacy spellings for parsers that predate transformers 5's rope_parameters (+ torch_dtype).
    return {"rope_theta": cfg["rope_parameters"]["rope_theta"], "rope_scaling": None}


# ---------------------------------------------------------------- GGUF
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


GGUF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
               "output_norm.weight": "model.norm.weight"}
GGUF_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                  "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                  "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                  "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def check_gguf(llama_cpp, path, st_path, config):
    """Every GGUF tensor equals its safetensors tensor (q/k permuted); returns a short summary."""
    gguf = import_gguf(llama_cpp)
    reader, tensors, _ = read_gguf(llama_cpp, path, GGUF_PER_LAYER, GGUF_GLOBAL)
    nh, nkv = config.num_attention_heads, config.num_key_value_heads

    def expect(name, ref):
        if name.endswith(".q_proj.weight"):
            return permute(ref, nh)
        if name.endswith(".k_proj.weight"):
            return permute(ref, nkv)
        return ref

    changed = check_tensors(tensors, st_path, expect)
    assert len(changed) == 2 * config.num_hidden_layers, changed
    sw = reader.get_field("llama.attention.sliding_window")
    assert sw is not None and sw.contents() == SLIDING_WINDOW and \
        sw.types == [gguf.GGUFValueType.UINT32]
    return f"{len(reader.tensors)} tensors == safetensors (attn_q/attn_k permuted)"


def main():
    args, out_dir = setup(__doc__, HERE)

    config = make_config()
    model = random_model(MistralForCausalLM, config)
    golden_cfg = save_model(model, out_dir, dict(bos_token_id=1, eos_token_id=2), legacy_keys)

    tok_model, tok_samples = train_llama_tokenizer()
    write_tokenizer(out_dir, tok_model, TOKENIZER_CONFIG)

    with torch.no_grad():
        logits = forward_logits(model, INPUT_IDS)  # (24, 512)
        logits_np = dump_f32(logits, os.path.join(out_dir, "logits_all.f32"))

        # The files as written load back to the same model (config.json with its legacy keys too).
        reloaded = reload(MistralForCausalLM, out_dir)
        assert reloaded.config.sliding_window == SLIDING_WINDOW and reloaded.config.head_dim == 24
        assert torch.equal(forward_logits(reloaded, INPUT_IDS), logits)

        new_ids, margins = greedy(model, GREEDY_PROMPT, GREEDY_STEPS)
        check_greedy(model, GREEDY_PROMPT, new_ids)

        # Sanity: the window matters for this prompt.
        nowin = rebuild(MistralForCausalLM, make_config(sliding_window=None), model.state_dict())
        nowindow_diff = check_window(forward_logits(nowin, INPUT_IDS), logits, SLIDING_WINDOW)

    golden = {
        **golden_head(golden_cfg, INPUT_IDS, logits, logits_np, GREEDY_PROMPT, new_ids, margins),
        "nowindow_max_abs_diff": nowindow_diff,
        "tokenizer_samples": tok_samples,
    }
    write_golden(out_dir, golden)

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
