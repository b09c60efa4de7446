#!/usr/bin/env python3
r"""Regenerate the tiny random SmolVLM / Idefics3 golden fixtures in testdata/tiny-smolvlm/.

Idefics3ForConditionalGeneration (SigLIP-style vision tower, pixel-shuffle connector + linear, Llama
decoder) with random weights, its processor files, test images, and transformers' float32 outputs
for 7 chat cases; plus llama.cpp's GGUF conversion of the text model and of the vision part (mmproj).
The exact algorithms (processor, vision tower, connector, merge, GGUF names) are written out for the
Rust side in SPEC.md (beside this script); every one of them is also re-implemented here
(ref_* / np_* functions) and asserted against transformers.

What it makes (next to this script, or in --out DIR):
  config.json             Idefics3Config. vision_config (idefics3_vision): hidden 32, 2 layers, 2 heads
                          (head_dim 16), intermediate 64, image_size 32, patch_size 8 (a 4x4 grid = 16
                          patches per tile), gelu_pytorch_tanh, layer_norm_eps 1e-6 (the defaults,
                          written out by save_pretrained). scale_factor 2 (16 patches -> 4 image tokens
                          per tile, each 4*32 = 128 wide before the 128 -> 64 projection, no bias).
                          text_config (llama, architectures ["VLlama3ForCausalLM"] as in the hub
                          SmolVLM checkpoints, which is what llama.cpp's converter keys on): hidden 64,
                          2 layers, 4 heads, 2 KV heads, head_dim 16, intermediate 128, vocab 512,
                          rms_norm_eps 1e-5, rope default with rope_theta 1e5, max_position_embeddings
                          2048, bos 1, eos 511, pad 2, tie_word_embeddings true (as SmolVLM-256M; also
                          at the top level: no lm_head tensor is stored). image_token_id 510 (<image>).
                          Legacy keys appended for older parsers: text_config.rope_theta, top-level
                          pad_token_id (transformers 5.24 itself writes "_pad_token_id") and torch_dtype.
  generation_config.json  bos 1, eos 511 (<end_of_utterance>), pad 2, do_sample false
  model.safetensors       random weights (tiny_common.random_model): torch.manual_seed(0) right after the
                          model is built, then parameter by parameter in sorted-name order, every tensor
                          with >= 2 dims ~ N(0, 0.1) (incl. the 4-D patch-embedding conv and the
                          position embedding), every 1-D tensor ~ U(0.5, 1.5) (norm weights, and here
                          also every bias: LayerNorm biases, q/k/v/out/fc1/fc2 biases, the conv bias).
                          58 tensors, names model.vision_model.*, model.connector.modality_projection.
                          proj.weight, model.text_model.*
  tokenizer.json          a byte-level BPE trained with `tokenizers` (BpeTrainer, vocab 472, min_frequency
                          2, the 256-byte ByteLevel alphabet, single deterministic run) on
                          tiny_common.training_sentences(); SmolLM2's structure: normalizer null,
                          pre_tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space
                          false, trim_offsets, use_regex)], ByteLevel decoder, a TemplateProcessing
                          post-processor that adds nothing (no BOS). ids 0 <|endoftext|>, 1 <|im_start|>,
                          2 <|im_end|>, 3..471 the trained vocabulary (213 merges); then SmolVLM's added
                          specials in SmolVLM's order: 472 <global-img>, 473..508 <row_r_col_c> (r, c in
                          1..6, row-major: id = 473 + 6(r-1) + (c-1)), 509 <fake_token_around_image>,
                          510 <image>, 511 <end_of_utterance>. All 42 added tokens special, not
                          normalized. No "\n\n" merge (the corpus has no newlines): "\n\n" is 2 tokens.
  tokenizer_config.json   as Idefics3Processor.save_pretrained writes it (transformers 5.24:
                          tokenizer_class TokenizersBackend): bos <|im_start|>, eos <end_of_utterance>,
                          pad <|im_end|>, unk <|endoftext|>, model_max_length 8192, add_prefix_space
                          false, extra_special_tokens [<fake_token_around_image>, <image>,
                          <end_of_utterance>] (what the processor adds)
  chat_template.jinja     the chat template (saved by the processor; 5.24 writes it to this file, not into
                          tokenizer_config.json). It is SmolVLM-256M-Instruct's published template as
                          WRITTEN FROM MEMORY (no hub access here; the real file may differ in details):
                            <|im_start|>{% for message in messages %}{{message['role'] | capitalize}}
                            {% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}
                            {% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}
                            {{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}
                            {% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}
                            {{ 'Assistant:' }}{% endif %}
                          (one line in the file, no newline at the end.) So: <|im_start|> once at the
                          start; each message "Role:" (capitalized) followed by "" if its first part is
                          an image else " "; text parts verbatim, image parts as <image>;
                          "<end_of_utterance>\n" after every message; "Assistant:" as the generation
                          prompt (no space after it). Content must be a list of parts: a plain string
                          content renders as nothing (see golden.json template_samples).
  processor_config.json   as Idefics3Processor.save_pretrained writes it in 5.24: ONE file, with the image
                          processor nested under "image_processor" (no preprocessor_config.json; hub
                          SmolVLM repos, as far as I remember, have a flat preprocessor_config.json plus a
                          processor_config.json with image_seq_len only; llama.cpp reads either).
                          image_seq_len 4, processor_class Idefics3Processor; image_processor:
                          image_processor_type Idefics3ImageProcessor, do_convert_rgb, do_resize with
                          size {longest_edge 96}, resample 1 (= PIL LANCZOS, the default),
                          do_image_splitting with max_image_size {longest_edge 32}, do_rescale with
                          rescale_factor 1/255, do_normalize with image_mean = image_std = [0.5]*3, do_pad
  *.png                   the test images (numpy default_rng(0): RGB gradients + a sine band, a flat
                          rectangle and a flat disc, uniform noise +-24 (per 5x5 block on the large
                          one); PIL-written PNG, 8 bits per channel, non-interlaced):
                            small_20x14.png      20 wide x 14 high RGB (smaller than one 32x32 tile)
                            nonsquare_70x40.png  70 x 40 RGB (landscape)
                            large_300x200.png    300 x 200 RGB (longest edge 300 > 96: downscaled)
                            rgba_50x50.png       50 x 50 RGBA, alpha = round(255 x / 49) by column, rows
                                                 0..11 opaque, the bottom-left 16 x 10 corner alpha 0
                            portrait_26x60.png   26 x 60 RGB (height > width: the other resize branch)
                          golden.json images: size, mode, sha256 of the decoded pixels (H, W, C) uint8
  <image>.pixel_values.f32  per image (stem of the PNG; ".unsplit" for the do_image_splitting=False
                          case): the processor's pixel_values of that image, (tiles, 3, 32, 32), tiles
                          row-major then the global image
  <image>.vision.f32      the vision tower output of those tiles (after post_layernorm), (tiles, 16, 32)
  <image>.features.f32    the connector output (the rows that replace the <image> embeddings),
                          (tiles * 4, 64): 4 consecutive rows per tile, tiles in pixel_values order.
                          Computed for the image alone; in every case that uses the image, the case's
                          own features are identical (max_abs_diff_in_this_case_vs_file, 0.0 here)
  <case>.logits.f32       logits at every position of the case's input_ids from one forward with the
                          pixels and no cache, (n_tokens, 512)
  golden.json             config (as saved, before the legacy keys), special_ids, image_seq_len, images,
                          pixel_lut (the 256 possible normalized values; see below), tokenizer_samples,
                          template_samples, cases, batch_padding, image_sensitivity_max_abs_diff,
                          rgba_by_path (see below), numpy_f64_from_gguf_max_abs_diff, gguf. Each case:
                          name, messages (image parts as {"type": "image", "image": "<file>"};
                          rendering ignores the key), processor
                          kwargs, prompt (the chat template's text, add_generation_prompt true),
                          expanded_prompt (after the processor's image expansion), input_ids, n_tokens,
                          n_image_tokens, image_token_positions [first, last], pixel_values_shape,
                          pixel_attention_mask_shape (all ones), sha256 of the whole pixel_values, per
                          image (file, rows, cols, tiles, sizes_hw: input -> longest-edge resize ->
                          vision-encoder resize, image_tokens, expansion, the three files + sha256),
                          logits_file + sha256, top5_last, greedy_ids (8 steps with a KV cache, argmax,
                          not stopped at EOS; the first call carries the pixels, later calls only the
                          new token), greedy_text, margins (top1 - top2 per step), min_margin,
                          inputs_embeds_max_abs_diff (the same forward from hand-merged inputs_embeds).
                          All f32 files: little-endian float32, row-major; sha256 of those bytes.
  model.gguf              convert_hf_to_gguf.py --outtype f32 of this folder (text model: architecture
                          "llama", 20 tensors, no output.weight (tied), Q and K rows permuted by
                          LlamaModel.permute (rotate-half -> interleaved RoPE pairs), everything else
                          exactly the safetensors data; tokenizer.ggml.model gpt2, pre "smollm", the
                          512 tokens, 213 merges, bos 1, eos 511, pad 2, unk 0, chat_template)
  mmproj.gguf             the same with --mmproj (architecture "clip", general.type mmproj, projector
                          idefics3): 38 tensors, every one exactly the safetensors data in the HF shape
                          (v.patch_embd.weight stays 4-D (32, 3, 8, 8), v.position_embd.weight (16, 32),
                          mm.model.fc.weight (64, 128)); metadata listed in golden.json gguf.

Cases (all with the slow PIL image processor Idefics3ImageProcessorPil, loaded back from this folder
with AutoProcessor.from_pretrained(dir, backend="pil"), the 5.24 spelling of the deprecated
use_fast=False): tokens / image tokens / tiles / min margin
  small       user: <image small> "What is in this picture?"                      89 / 40 / 10 / 0.3258
  nonsquare   user: <image 70x40> "Tell me about it."                             68 / 28 /  7 / 0.1525
  large       user: "Look at this: " <image 300x200> " What do you see?"          78 / 28 /  7 / 0.2446
  rgba        user: <image rgba> "What color is the sun?"                         90 / 40 / 10 / 0.2040
  two_images  user: <image small> <image 70x40> "Which one is large?"            134 / 68 / 17 / 0.5107
  two_turns   user: <image 70x40> "What is this?" / assistant: "A house near the sea." /
              user: <image portrait> "And this one?"                             145 / 56 / 14 / 0.0185
  unsplit     user: <image 300x200> "What is in this picture?", processor kwarg
              do_image_splitting=False (one 32x32 tile, no grid)                  31 /  4 /  1 / 0.0770
Every image is first resized so that its longest edge is 96 (also upscaling the small ones), so with
splitting on every test image becomes a 3x3, 2x3 or 3x2 grid plus the global image; an image that
"fits in one tile" does not exist with this config, which is why the extra `unsplit` case is there.

Checks made on every run (assertions): the processor's pixel_values equal, bit for bit, an independent
numpy re-implementation (ref_preprocess: Pillow's alpha compositing and its fixed-point LANCZOS
resampler re-implemented from libImaging, the size rules, the tiling, rescale/normalize); the alpha
formula against Pillow for all 65536 (value, alpha) pairs; input_ids equal the tokenization of the
hand-built expansion (ref_expansion); the processor's rows/cols; the vision position ids are arange(16)
for every tile; the connector equals ref_pixel_shuffle + the projection; the logits equal a forward
from inputs_embeds with the features written into the <image> rows (<= 1e-5); the cached greedy ids
equal the argmax of one uncached forward over prompt + generated ids, and model.generate's; the logits
of `small` move by > 0.1 when rgba's pixels are swapped in (image_sensitivity_max_abs_diff); a padded
batch of `small` + `nonsquare` (batch_padding: pixel_values (2, 10, 3, 32, 32), sample 1's tiles 7..9
all zero with an all-zero pixel_attention_mask) gives the same features; the files load back to the
same logits; every GGUF tensor equals its safetensors tensor (after the Q/K permutation); and a float64
numpy forward from model.gguf + mmproj.gguf alone (np_vision_features, np_text_logits) matches the
vision output, features and all logits of all cases (numpy_f64_from_gguf_max_abs_diff: 1.8e-6, 3.3e-6,
3.3e-6).

llama.cpp's converter does not know this tokenizer's pre-tokenizer hash (it hashes the encoding of a
fixed check text): this script runs convert_hf_to_gguf.py through a small wrapper (CONVERT_WRAPPER,
`python -c`) that wraps conversion.base.TextModel.get_vocab_base_pre at run time and, only when the
converter raises "BPE pre-tokenizer was not recognized" and the hash is the tiny tokenizer's (computed
here with AutoTokenizer on this folder, as the converter does; golden.json gguf.pre_tokenizer_hash
340e78c656244309dc60c8bcc51965f902fcdde48f5e4f7ecffd155a63e96cef), returns "smollm", the
pre-tokenizer of SmolLM/SmolLM2/SmolVLM (whose structure this tokenizer copies). The converter itself
is not edited; the wrapper's message is kept in golden.json gguf.converter_log.

Alpha: a PIL image with an alpha band, passed to the processor as a PIL object (as in the rgba case),
goes through transformers.image_transforms.convert_to_rgb: Image.alpha_composite onto opaque white,
then convert("RGB"); per channel out = (c*a + 255*(255 - a) + 127) // 255 (exact integer form of
Pillow's fixed-point code; alpha 0 gives 255; checked here for all 65536 pairs). The same file passed
as a path, URL or base64 string is opened by transformers.image_utils.load_image, which applies
ImageOps.exif_transpose and convert("RGB") first: the alpha is simply dropped (raw RGB).
golden.json rgba_by_path records that variant (sha256 of its pixel_values, and how far it is from
the composited one); input_ids are the same.

pixel_lut: the normalized value of a uint8 u is f32((f32(f64(u) * (1/255)) - 0.5f) / 0.5f) (rescale in
float64 then cast to float32; normalize in float32). Computing (u/255 - 0.5)/0.5 in float64 and
rounding once gives a different float32 for u = 64..191: use the two-step rule (or the table).

Slow vs fast: torchvision is not in the venv and PyPI has no torchvision for torch 2.15 (the newest,
0.29.2, is the torch 2.14 build). For one comparison only, 0.29.2 was installed with
`pip install --no-deps --target DIR` into a throw-away folder (the venv untouched) and used via PYTHONPATH: it loads,
and then AutoProcessor.from_pretrained(dir) without backend= picks the FAST Idefics3ImageProcessor
(5.24 forces PIL for Lanczos processors only with torchvision < 0.27), so pass backend="pil". Fast vs
slow on these cases: input_ids identical; pixel_values differ by up to 0.01569 (2 uint8 steps, from
the resampling) in ~1.5 % of the values, and by <= 6e-8 (float rounding) in ~45 % of the others. This
script never uses torchvision. Without torchvision AutoProcessor falls back to PIL by itself.

Made with transformers 5.24.0, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0, tokenizers 0.23.3,
Pillow 13.0.0 (pip install pillow into the venv), the gguf-py and converter of llama.cpp
0c1e57098bba43ac29e6e3b677cdceebdd22334f (vendored in llama-cpp-python 0.3.36); float32, CPU,
2 threads, attn_implementation="sdpa".

Run from the repository root (~15 s on 2 cores):
    ~/.cache/kiln/torch-venv/bin/python testdata/tiny-smolvlm/make_golden.py            # rewrites testdata/tiny-smolvlm/
    ~/.cache/kiln/torch-venv/bin/python testdata/tiny-smolvlm/make_golden.py --out "$(mktemp -d)"
--llama-cpp DIR names the llama.cpp checkout (default: the one vendored in llama-cpp-python 0.3.36
under ~/.cache/kiln/llama.cpp). Shared code (arguments, version warning, threads, weights, saving,
dumps) comes from testdata/tiny_common.py, unchanged.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 2-core x86-64).
"""

import ast
import copy
import hashlib
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no testdata/__pycache__
sys.path.insert(0, os.path.dirname(HERE))  # testdata/, for tiny_common
from tiny_common import (SEED, dump_f32, f32le, gguf_fields, import_gguf, max_abs_diff,  # noqa: E402
                         random_model, save_model, setup, sha256_f32le, top5, training_sentences,
                         write_golden)

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (AutoProcessor, AutoTokenizer, Idefics3Config,  # noqa: E402
                          Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig,
                          PreTrainedTokenizerFast)
from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig  # noqa: E402
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil  # noqa: E402

# ---------------------------------------------------------------- tokenizer
BPE_VOCAB = 472                     # trainer vocabulary incl. the 3 ChatML specials at 0, 1, 2
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
IMAGE_SPECIALS = (["<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
                  + ["<fake_token_around_image>", "<image>", "<end_of_utterance>"])
VOCAB = BPE_VOCAB + len(IMAGE_SPECIALS)  # 512
BOS, PAD, UNK = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
EOS = "<end_of_utterance>"
MODEL_MAX_LENGTH = 8192

# SmolVLM-256M-Instruct's chat template, written from memory (see the docstring).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# ---------------------------------------------------------------- model
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              image_size=32, patch_size=8)  # hidden_act gelu_pytorch_tanh, layer_norm_eps 1e-6: defaults
SCALE_FACTOR = 2
TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, max_position_embeddings=2048, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
TILE = VISION["image_size"]                                   # 32
PATCHES_PER_SIDE = VISION["image_size"] // VISION["patch_size"]  # 4
IMAGE_SEQ_LEN = PATCHES_PER_SIDE**2 // SCALE_FACTOR**2        # 4 image tokens per tile

# ---------------------------------------------------------------- image processor
LONGEST_EDGE = 96        # size: resize so that the longest edge is this
MAX_IMAGE_SIZE = TILE    # max_image_size: the tile size
RESCALE = 1 / 255
MEAN = STD = [0.5, 0.5, 0.5]
MAX_IMAGE_SIZE_ABS = 4096  # image_processing_pil_idefics3.MAX_IMAGE_SIZE

GREEDY_STEPS = 8
VISION_EPS = 1e-6  # Idefics3VisionConfig.layer_norm_eps default

# ---------------------------------------------------------------- test images (width, height)
IMAGES = {
    "small_20x14.png": (20, 14, "RGB"),
    "nonsquare_70x40.png": (70, 40, "RGB"),
    "large_300x200.png": (300, 200, "RGB"),
    "rgba_50x50.png": (50, 50, "RGBA"),
    "portrait_26x60.png": (26, 60, "RGB"),
}


def img(name):
    return {"type": "image", "image": name}


def txt(text):
    return {"type": "text", "text": text}


# name, messages, extra processor kwargs
CASES = [
    ("small", [{"role": "user", "content": [img("small_20x14.png"), txt("What is in this picture?")]}], {}),
    ("nonsquare", [{"role": "user", "content": [img("nonsquare_70x40.png"), txt("Tell me about it.")]}], {}),
    ("large", [{"role": "user", "content": [txt("Look at this: "), img("large_300x200.png"),
                                            txt(" What do you see?")]}], {}),
    ("rgba", [{"role": "user", "content": [img("rgba_50x50.png"), txt("What color is the sun?")]}], {}),
    ("two_images", [{"role": "user", "content": [img("small_20x14.png"), img("nonsquare_70x40.png"),
                                                 txt("Which one is large?")]}], {}),
    ("two_turns", [{"role": "user", "content": [img("nonsquare_70x40.png"), txt("What is this?")]},
                   {"role": "assistant", "content": [txt("A house near the sea.")]},
                   {"role": "user", "content": [img("portrait_26x60.png"), txt("And this one?")]}], {}),
    ("unsplit", [{"role": "user", "content": [img("large_300x200.png"), txt("What is in this picture?")]}],
     {"do_image_splitting": False}),
]


# ---------------------------------------------------------------- tokenizer
def train_tokenizer():
    """Byte-level BPE (tokenizers' BpeTrainer, deterministic) with SmolLM2's structure: no normalizer,
    pre-tokenizer Sequence[Digits(individual_digits), ByteLevel(add_prefix_space false, trim_offsets,
    use_regex)], ByteLevel decoder, TemplateProcessing that adds nothing; the 3 ChatML specials at ids
    0..2, then the trained vocabulary, then SmolVLM's image specials appended in SmolVLM's order."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A:0 $B:1", special_tokens=[])
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in CHATML_SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_sentences(), trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in IMAGE_SPECIALS])
    assert tok.get_vocab_size() == VOCAB
    for i, s in enumerate(CHATML_SPECIALS):
        assert tok.token_to_id(s) == i
    for i, s in enumerate(IMAGE_SPECIALS):
        assert tok.token_to_id(s) == BPE_VOCAB + i
    return tok


def hf_tokenizer(tok):
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=UNK, model_max_length=MODEL_MAX_LENGTH,
                                   clean_up_tokenization_spaces=False, add_prefix_space=False)


# ---------------------------------------------------------------- config / model
def make_config(ids):
    vision = Idefics3VisionConfig(**VISION)
    text = LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=True, bos_token_id=ids[BOS],
                       eos_token_id=ids[EOS], pad_token_id=ids[PAD],
                       architectures=["VLlama3ForCausalLM"], **TEXT)
    return Idefics3Config(vision_config=vision, text_config=text, scale_factor=SCALE_FACTOR,
                          image_token_id=ids["<image>"], tie_word_embeddings=True,
                          pad_token_id=ids[PAD])


def legacy_keys(cfg):
    # transformers 4 / hub spellings: text_config.rope_theta, top-level pad_token_id (+ torch_dtype)
    text = dict(cfg["text_config"])
    text["rope_theta"] = text["rope_parameters"]["rope_theta"]
    return {"text_config": text, "pad_token_id": cfg["_pad_token_id"]}


# ---------------------------------------------------------------- test images
def make_images(out_dir):
    """Deterministic PNGs: smooth gradients + a few flat shapes + uniform noise (numpy RNG, seed 0)."""
    rng = np.random.default_rng(SEED)
    info = {}
    for name, (w, h, mode) in IMAGES.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 255 * x / max(w - 1, 1)
        g = 255 * y / max(h - 1, 1)
        b = 127.5 + 127.5 * np.sin(2 * np.pi * (x + 2 * y) / max(w, h))
        a = np.stack([r, g, b], -1)
        # a filled rectangle and a disc in flat colours
        a[h // 5: h // 2, w // 6: w // 2] = rng.integers(0, 256, 3)
        cy, cx, rad = 0.65 * h, 0.7 * w, 0.22 * min(w, h)
        a[(y - cy) ** 2 + (x - cx) ** 2 <= rad ** 2] = rng.integers(0, 256, 3)
        # uniform noise, per pixel, or per block of 5x5 pixels on the large image (smaller PNG)
        blk = 5 if min(w, h) >= 200 else 1
        noise = rng.uniform(-24, 24, (-(-h // blk), -(-w // blk), 3))
        a = a + noise.repeat(blk, 0).repeat(blk, 1)[:h, :w]
        arr = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        if mode == "RGBA":
            alpha = np.rint(255 * x / (w - 1)).astype(np.int64)  # 0 at the left edge .. 255 at the right
            alpha[: h // 4] = 255                                # an opaque band at the top
            alpha[-(h // 5):, : w // 3] = 0                      # a fully transparent corner
            arr = np.concatenate([arr, alpha.astype(np.uint8)[..., None]], -1)
        Image.fromarray(arr).save(os.path.join(out_dir, name), format="PNG")
        back = np.array(Image.open(os.path.join(out_dir, name)))
        assert np.array_equal(back, arr) and Image.open(os.path.join(out_dir, name)).mode == mode
        info[name] = {"width": w, "height": h, "mode": mode,
                      "pixels_sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
                      "pixels_layout": f"({h}, {w}, {len(mode)}) uint8, row-major, as decoded"}
    return info


def load_image(out_dir, name):
    im = Image.open(os.path.join(out_dir, name))
    im.load()
    return im


# ---------------------------------------------------------------- independent reference preprocessing
# Everything below re-implements, in plain Python/numpy, what transformers + Pillow do; main() asserts
# that it gives exactly (bit for bit) the processor's pixel_values. It is the spec the Rust side follows.
def ref_alpha_on_white(rgba):
    """PIL.Image.alpha_composite(white, im).convert("RGB") for a straight-alpha RGBA uint8 image:
    out = (c*a + 255*(255 - a) + 127) // 255 per channel (a = 0 gives 255)."""
    c = rgba[..., :3].astype(np.int64)
    a = rgba[..., 3:4].astype(np.int64)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


PIL_PRECISION_BITS = 32 - 8 - 2


def _lanczos3(x):
    def sinc(v):
        if v == 0.0:
            return 1.0
        v = v * math.pi
        return math.sin(v) / v
    return sinc(x) * sinc(x / 3) if -3.0 <= x < 3.0 else 0.0


def _pil_coeffs(in_size, out_size):
    """Pillow libImaging/Resample.c precompute_coeffs + normalize_coeffs_8bpc for LANCZOS (support 3)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [_lanczos3((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for v in w:
            ww += v
        if ww != 0.0:
            w = [v / ww for v in w]
        k = [int(-0.5 + v * (1 << PIL_PRECISION_BITS)) if v < 0 else int(0.5 + v * (1 << PIL_PRECISION_BITS))
             for v in w]
        rows.append((xmin, np.array(k, dtype=np.int64)))
    return rows


def _pil_pass(im, out_size, axis):
    src = im.astype(np.int64)
    out = []
    for xmin, k in _pil_coeffs(im.shape[axis], out_size):
        sl = np.take(src, np.arange(xmin, xmin + len(k)), axis=axis)
        shape = [1, 1, 1]
        shape[axis] = len(k)
        acc = (sl * k.reshape(shape)).sum(axis=axis) + (1 << (PIL_PRECISION_BITS - 1))
        out.append(np.clip(acc >> PIL_PRECISION_BITS, 0, 255))
    return np.stack(out, axis=axis).astype(np.uint8)


def ref_resize(im, height, width):
    """PIL Image.resize((width, height), LANCZOS) of an (H, W, 3) uint8 array: a copy when the size is
    unchanged; else a horizontal pass (if the width changes) into a uint8 image, then a vertical pass
    (if the height changes); fixed-point 22-bit coefficients, rounding, clip to 0..255 after each pass."""
    if im.shape[:2] == (height, width):
        return im.copy()
    if im.shape[1] != width:
        im = _pil_pass(im, width, 1)
    if im.shape[0] != height:
        im = _pil_pass(im, height, 0)
    return im


def ref_longest_edge_size(height, width, longest):
    """_resize_output_size_rescale_to_max_len then _resize_output_size_scale_below_upper_bound."""
    aspect = width / height
    if width >= height:
        width = longest
        height = int(width / aspect)
        if height % 2 != 0:
            height += 1
    else:
        height = longest
        width = int(height * aspect)
        if width % 2 != 0:
            width += 1
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height and width > MAX_IMAGE_SIZE_ABS:
        width = MAX_IMAGE_SIZE_ABS
        height = int(width / aspect)
    elif height > width and height > MAX_IMAGE_SIZE_ABS:
        height = MAX_IMAGE_SIZE_ABS
        width = int(height * aspect)
    return max(height, 1), max(width, 1)


def ref_vision_encoder_size(height, width, tile):
    """resize_for_vision_encoder: both sides up to multiples of the tile."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = int(width / aspect)
        height = math.ceil(height / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = int(height * aspect)
        width = math.ceil(width / tile) * tile
    return height, width


def ref_normalize(u8):
    """rescale (float64 multiply by 1/255, cast to float32) then normalize in float32."""
    v = (u8.astype(np.float64) * RESCALE).astype(np.float32)
    return (v - np.float32(0.5)) / np.float32(0.5)


def ref_preprocess(pil_image, split=True):
    """(tiles (N, 3, T, T) float32, rows, cols, sizes) for one image."""
    if "A" in pil_image.getbands():
        rgb = ref_alpha_on_white(np.array(pil_image.convert("RGBA")))
    else:
        rgb = np.array(pil_image.convert("RGB"))
    sizes = {"input_hw": list(rgb.shape[:2])}
    h, w = ref_longest_edge_size(*rgb.shape[:2], LONGEST_EDGE)
    rgb = ref_resize(rgb, h, w)
    sizes["longest_edge_hw"] = [h, w]
    if split:
        h, w = ref_vision_encoder_size(h, w, MAX_IMAGE_SIZE)
        rgb = ref_resize(rgb, h, w)
        sizes["vision_encoder_hw"] = [h, w]
        if h > MAX_IMAGE_SIZE or w > MAX_IMAGE_SIZE:
            t = MAX_IMAGE_SIZE
            rows, cols = (h - t) // t + 1, (w - t) // t + 1
            tiles = [rgb[r * t:(r + 1) * t, c * t:(c + 1) * t] for r in range(rows) for c in range(cols)]
            tiles.append(ref_resize(rgb, MAX_IMAGE_SIZE, MAX_IMAGE_SIZE))  # the global image, last
        else:
            rows = cols = 0
            tiles = [rgb]
    else:
        rows = cols = 0
        tiles = [ref_resize(rgb, MAX_IMAGE_SIZE, MAX_IMAGE_SIZE)]
    arr = np.stack([ref_normalize(t).transpose(2, 0, 1) for t in tiles])
    return arr, rows, cols, sizes


def ref_expansion(rows, cols):
    """Idefics3Processor.replace_image_token."""
    glob = "<fake_token_around_image><global-img>" + "<image>" * IMAGE_SEQ_LEN + "<fake_token_around_image>"
    if rows == 0 and cols == 0:
        return glob
    s = ""
    for r in range(rows):
        for c in range(cols):
            s += f"<fake_token_around_image><row_{r + 1}_col_{c + 1}>" + "<image>" * IMAGE_SEQ_LEN
        s += "\n"
    return s + "\n" + glob


def ref_pixel_shuffle(x, s=SCALE_FACTOR):
    """x: (tiles, n*n, D) -> (tiles, (n/s)^2, s*s*D) with
    out[t, i2*(n/s) + j2, (a*s + b)*D + d] = x[t, (i2*s + a)*n + (j2*s + b), d]."""
    t, seq, d = x.shape
    n = int(round(seq ** 0.5))
    out = np.empty((t, seq // (s * s), s * s * d), dtype=x.dtype)
    for i2 in range(n // s):
        for j2 in range(n // s):
            for a in range(s):
                for b in range(s):
                    out[:, i2 * (n // s) + j2, (a * s + b) * d:(a * s + b + 1) * d] = x[:, (i2 * s + a) * n + j2 * s + b]
    return out


# ---------------------------------------------------------------- forwards
def features(model, pixel_values, pixel_attention_mask):
    """(vision tower output (tiles, 16, 32), connector output per sample [(tiles*4, 64)])."""
    out = model.model.get_image_features(pixel_values, pixel_attention_mask, return_dict=True)
    return out.last_hidden_state, out.pooler_output


def forward(model, input_ids, pv, pam, cache=None, use_cache=False):
    kw = {} if pv is None else {"pixel_values": pv, "pixel_attention_mask": pam}
    return model(input_ids=torch.tensor([input_ids]), cache=cache, use_cache=use_cache, **kw)


def greedy_mm(model, prompt, pv, pam, steps):
    """Argmax with a KV cache: the prompt forward with the pixels, then one token per call without;
    exactly `steps` tokens, not stopped at EOS; returns ids and top1 - top2 margins."""
    out = forward(model, prompt, pv, pam, use_cache=True)
    new, margins = [], []
    for _ in range(steps):
        last = out.logits[0, -1]
        top2 = torch.topk(last, 2).values
        nxt = int(last.argmax())
        new.append(nxt)
        margins.append(float(top2[0] - top2[1]))
        out = forward(model, [nxt], None, None, cache=out.cache, use_cache=True)
    return new, margins


# ---------------------------------------------------------------- llama.cpp
CONVERT_WRAPPER = r"""
import ast, hashlib, inspect, os, re, runpy, sys
converter, pre_hash, pre_name = sys.argv[1:4]
sys.argv = [converter] + sys.argv[4:]
root = os.path.dirname(converter)
sys.path.insert(0, root)
sys.path.insert(1, os.path.join(root, "gguf-py"))
from conversion import base
orig = base.TextModel.get_vocab_base_pre
chktxt = ast.literal_eval(re.search(r"\n\s*chktxt = (.+)\n", inspect.getsource(orig)).group(1))
def get_vocab_base_pre(self, tokenizer):
    chkhsh = hashlib.sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
    try:
        res = orig(self, tokenizer)
        print(f"kiln: pre-tokenizer hash {chkhsh} recognised by the converter as {res!r}", file=sys.stderr)
        return res
    except NotImplementedError:
        if chkhsh != pre_hash:
            raise
        print(f"kiln: pre-tokenizer hash {chkhsh} not recognised; registered as {pre_name!r}", file=sys.stderr)
        return pre_name
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(converter, run_name="__main__")
"""


def converter_chktxt(llama_cpp):
    """The converter's pre-tokenizer check text, read from its source (not imported)."""
    src = open(os.path.join(llama_cpp, "conversion", "base.py"), encoding="utf-8").read()
    fn = src[src.index("    def get_vocab_base_pre(self, tokenizer) -> str:"):]
    return ast.literal_eval(re.search(r"\n\s*chktxt = (.+)\n", fn).group(1))


def convert(llama_cpp, model_dir, out_file, pre_hash, mmproj):
    converter = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    if not os.path.isfile(converter):
        sys.exit(f"error: {converter} not found (pass --llama-cpp DIR)")
    cmd = [sys.executable, "-c", CONVERT_WRAPPER, converter, pre_hash, "smollm", model_dir,
           "--outtype", "f32", "--outfile", out_file, "--model-name", "tiny-smolvlm"]
    if mmproj:
        cmd.append("--mmproj")
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [line for line in res.stderr.splitlines() if line.startswith("kiln: ")]


def llama_permute(w, n_head):
    """convert_hf_to_gguf LlamaModel.permute: rows of each head from rotate-half to interleaved order."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TEXT_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                  "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                  "ffn_norm": "post_attention_layernorm"}
TEXT_GLOBAL = {"token_embd.weight": "model.text_model.embed_tokens.weight",
               "output_norm.weight": "model.text_model.norm.weight"}
VISION_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                    "attn_out": "self_attn.out_proj", "ln1": "layer_norm1", "ln2": "layer_norm2",
                    "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"}
VISION_GLOBAL = {"v.patch_embd": "model.vision_model.embeddings.patch_embedding",
                 "v.position_embd": "model.vision_model.embeddings.position_embedding",
                 "v.post_ln": "model.vision_model.post_layernorm",
                 "mm.model.fc": "model.connector.modality_projection.proj"}


def gguf_tensors(gguf, path):
    reader = gguf.GGUFReader(path, "r")
    out = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        out[t.name] = np.array(t.data).reshape(list(reversed([int(d) for d in t.shape])))
    return reader, out


def hf_name(gname, per_layer, glob, layer_prefix):
    stem, kind = gname.rsplit(".", 1)
    if stem in glob:
        return f"{glob[stem]}.{kind}"
    if gname in glob:
        return glob[gname]
    parts = stem.split(".")
    i = parts.index("blk")
    return f"{layer_prefix}.{parts[i + 1]}.{per_layer[parts[i + 2]]}.{kind}"


def summarize_field(v):
    if isinstance(v, list) and len(v) > 8:
        return {"len": len(v), "first": v[:3], "sha256_of_json": hashlib.sha256(
            json.dumps(v, ensure_ascii=False).encode()).hexdigest()}
    if isinstance(v, float):
        return float(np.float32(v))
    return v


def check_text_gguf(gguf, path, st, tok_json):
    reader, tensors = gguf_tensors(gguf, path)
    n_head, n_kv = TEXT["num_attention_heads"], TEXT["num_key_value_heads"]
    want = {k: v for k, v in st.items() if k.startswith("model.text_model.")}
    seen, permuted = set(), []
    for gname, arr in tensors.items():
        name = hf_name(gname, TEXT_PER_LAYER, TEXT_GLOBAL, "model.text_model.layers")
        ref = want[name]
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            ref = llama_permute(ref, n_head if "q_proj" in name else n_kv)
            assert not np.array_equal(arr, want[name])
            permuted.append(gname)
        assert arr.shape == ref.shape and np.array_equal(arr, ref), gname
        seen.add(name)
    assert seen == set(want), set(want) ^ seen
    fields = gguf_fields(reader)
    get = fields.__getitem__
    assert get("general.architecture") == "llama" and get("tokenizer.ggml.model") == "gpt2"
    assert get("tokenizer.ggml.pre") == "smollm"
    vocab = sorted(tok_json["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab] + [a["content"] for a in tok_json["added_tokens"] if a["id"] >= BPE_VOCAB]
    assert get("tokenizer.ggml.tokens") == tokens
    assert get("tokenizer.ggml.merges") == [" ".join(m) for m in tok_json["model"]["merges"]]
    types = get("tokenizer.ggml.token_type")
    special_ids = [a["id"] for a in tok_json["added_tokens"]]
    assert [i for i, t in enumerate(types) if t == 3] == special_ids, "CONTROL tokens"  # 3 = CONTROL
    assert get("llama.rope.freq_base") == TEXT["rope_parameters"]["rope_theta"]
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    return {"tensors": len(tensors), "permuted": sorted(permuted),
            "metadata": {k: summarize_field(v) for k, v in fields.items()}}


def check_mmproj_gguf(gguf, path, st):
    reader, tensors = gguf_tensors(gguf, path)
    want = {k: v for k, v in st.items() if not k.startswith("model.text_model.")}
    seen, names = set(), {}
    for gname, arr in tensors.items():
        name = hf_name(gname, VISION_PER_LAYER, VISION_GLOBAL, "model.vision_model.encoder.layers")
        ref = want[name]
        assert arr.shape == ref.shape and np.array_equal(arr, ref), (gname, arr.shape, ref.shape)
        seen.add(name)
        names[gname] = {"hf": name, "shape": list(arr.shape)}
    assert seen == set(want), set(want) ^ seen
    fields = gguf_fields(reader)
    return {"tensors": dict(sorted(names.items())),
            "metadata": {k: summarize_field(v) for k, v in fields.items()}}


# ---------------------------------------------------------------- float64 numpy forwards from the GGUFs
def np_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def np_vision_features(t, pv, eps):
    """mmproj.gguf tensors t, pixel values (tiles, 3, 32, 32) -> (vision out, connector features)."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    n, p, d = pv.shape[0], VISION["patch_size"], VISION["hidden_size"]
    g = TILE // p
    # conv k=stride=p == matmul over patches (row-major over the patch grid), each flattened as (c, ky, kx)
    patches = (pv.astype(np.float64).reshape(n, 3, g, p, g, p).transpose(0, 2, 4, 1, 3, 5)
               .reshape(n, g * g, 3 * p * p))
    x = patches @ t["v.patch_embd.weight"].reshape(d, -1).T + t["v.patch_embd.bias"]
    x = x + t["v.position_embd.weight"][np.arange(g * g)]
    heads = VISION["num_attention_heads"]
    hd = d // heads
    for i in range(VISION["num_hidden_layers"]):
        b = f"v.blk.{i}."
        h = np_layer_norm(x, t[b + "ln1.weight"], t[b + "ln1.bias"], eps)
        q, k, v = ((h @ t[b + f"attn_{w}.weight"].T + t[b + f"attn_{w}.bias"]).reshape(n, g * g, heads, hd)
                   .transpose(0, 2, 1, 3) for w in "qkv")
        a = np_softmax(q @ k.transpose(0, 1, 3, 2) * hd ** -0.5) @ v
        a = a.transpose(0, 2, 1, 3).reshape(n, g * g, d)
        x = x + a @ t[b + "attn_out.weight"].T + t[b + "attn_out.bias"]
        h = np_layer_norm(x, t[b + "ln2.weight"], t[b + "ln2.bias"], eps)
        h = np_gelu_tanh(h @ t[b + "ffn_up.weight"].T + t[b + "ffn_up.bias"])
        x = x + h @ t[b + "ffn_down.weight"].T + t[b + "ffn_down.bias"]
    x = np_layer_norm(x, t["v.post_ln.weight"], t["v.post_ln.bias"], eps)
    feats = ref_pixel_shuffle(x) @ t["mm.model.fc.weight"].T
    return x, feats.reshape(-1, feats.shape[-1])


def np_text_logits(t, input_ids, image_pos, feats):
    """model.gguf tensors t (Q/K rows permuted by the converter: llama.cpp's interleaved RoPE, pairs
    (2i, 2i+1)); the rows of the <image> positions replaced by feats, in order."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    eps, theta = TEXT["rms_norm_eps"], TEXT["rope_parameters"]["rope_theta"]
    nh, nkv = TEXT["num_attention_heads"], TEXT["num_key_value_heads"]
    hd = TEXT["hidden_size"] // nh
    x = t["token_embd.weight"][input_ids]
    x[image_pos] = feats
    L = len(input_ids)
    pos = np.arange(L, dtype=np.float64)
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(z):  # (heads, L, hd), interleaved pairs
        z0, z1 = z[..., 0::2], z[..., 1::2]
        out = np.empty_like(z)
        out[..., 0::2] = z0 * cos - z1 * sin
        out[..., 1::2] = z0 * sin + z1 * cos
        return out

    def rms(z, w):
        return z / np.sqrt((z * z).mean(-1, keepdims=True) + eps) * w

    mask = np.triu(np.full((L, L), -np.inf), 1)
    for i in range(TEXT["num_hidden_layers"]):
        b = f"blk.{i}."
        h = rms(x, t[b + "attn_norm.weight"])
        q = rope((h @ t[b + "attn_q.weight"].T).reshape(L, nh, hd).transpose(1, 0, 2))
        k = rope((h @ t[b + "attn_k.weight"].T).reshape(L, nkv, hd).transpose(1, 0, 2))
        v = (h @ t[b + "attn_v.weight"].T).reshape(L, nkv, hd).transpose(1, 0, 2)
        k, v = np.repeat(k, nh // nkv, 0), np.repeat(v, nh // nkv, 0)  # query head j uses kv head j // 2
        a = np_softmax(q @ k.transpose(0, 2, 1) / math.sqrt(hd) + mask) @ v
        x = x + a.transpose(1, 0, 2).reshape(L, nh * hd) @ t[b + "attn_output.weight"].T
        h = rms(x, t[b + "ffn_norm.weight"])
        gate = h @ t[b + "ffn_gate.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ t[b + "ffn_up.weight"].T)) @ t[b + "ffn_down.weight"].T
    return rms(x, t["output_norm.weight"]) @ t["token_embd.weight"].T


TEMPLATE_SAMPLES = [
    ([{"role": "user", "content": [txt("Hi")]}], False),
    ([{"role": "system", "content": [txt("Be brief.")]}, {"role": "user", "content": [txt("Hi")]}], True),
    ([{"role": "user", "content": [txt("Hi"), img("small_20x14.png")]}], True),
    ([{"role": "user", "content": [txt("Hi")]}, {"role": "assistant", "content": "A plain string."}], True),
]


def template_samples(processor):
    return [{"messages": m, "add_generation_prompt": g,
             "rendered": processor.apply_chat_template(m, add_generation_prompt=g, tokenize=False)}
            for m, g in TEMPLATE_SAMPLES]


def tokenizer_samples(hf_tok):
    texts = ["Hello world, the sun is hot!", "Water 2026 \u2014 caf\u00e9.", " Two  spaces,\tand a tab\n\nend",
             "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:"]
    return [{"text": s, "ids": hf_tok(s)["input_ids"],
             "tokens": hf_tok.convert_ids_to_tokens(hf_tok(s)["input_ids"]),
             "decoded": hf_tok.decode(hf_tok(s)["input_ids"])} for s in texts]


# ---------------------------------------------------------------- main
def main():
    args, out_dir = setup(__doc__, HERE)

    # tokenizer
    tok = train_tokenizer()
    ids = {s: tok.token_to_id(s) for s in CHATML_SPECIALS + IMAGE_SPECIALS}

    # model
    config = make_config(ids)
    model = random_model(Idefics3ForConditionalGeneration, config)
    assert model.lm_head.weight is model.model.text_model.embed_tokens.weight
    assert model.model.image_seq_len == IMAGE_SEQ_LEN
    golden_cfg = save_model(model, out_dir, dict(bos_token_id=ids[BOS], eos_token_id=ids[EOS],
                                                 pad_token_id=ids[PAD]), legacy_keys)

    # processor (+ tokenizer files, chat template), saved and loaded back: the files are the reference
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": LONGEST_EDGE},
                                                max_image_size={"longest_edge": MAX_IMAGE_SIZE},
                                                do_image_splitting=True, rescale_factor=RESCALE,
                                                image_mean=MEAN, image_std=STD)
    Idefics3Processor(image_processor=image_processor, tokenizer=hf_tokenizer(tok),
                      image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE).save_pretrained(out_dir)
    with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok_json = json.load(f)
    assert tok_json == json.loads(tok.to_str())
    assert not os.path.exists(os.path.join(out_dir, "preprocessor_config.json"))
    processor = AutoProcessor.from_pretrained(out_dir, backend="pil")  # = the deprecated use_fast=False
    assert type(processor.image_processor) is Idefics3ImageProcessorPil
    assert processor.image_token_id == ids["<image>"] == config.image_token_id
    hf_tok = processor.tokenizer
    for s in CHATML_SPECIALS + IMAGE_SPECIALS:
        assert hf_tok.convert_tokens_to_ids(s) == ids[s]
    assert hf_tok("<|im_start|>Hi")["input_ids"] == [ids[BOS], *tok.encode("Hi").ids]  # adds no BOS

    image_info = make_images(out_dir)
    images = {name: load_image(out_dir, name) for name in IMAGES}

    # exhaustive checks of the two integer kernels against Pillow itself
    c, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    probe = np.stack([c, 255 - c, (c * 7) % 256, a], -1).astype(np.uint8)
    pim = Image.fromarray(probe)
    pil_rgb = np.array(Image.alpha_composite(Image.new("RGBA", pim.size, (255, 255, 255, 255)), pim).convert("RGB"))
    assert np.array_equal(pil_rgb, ref_alpha_on_white(probe))
    lut = ref_normalize(np.arange(256, dtype=np.uint8))
    assert np.array_equal(lut, processor.image_processor.normalize(
        processor.image_processor.rescale(np.arange(256, dtype=np.uint8).reshape(1, 1, 256).repeat(3, 0), RESCALE),
        MEAN, STD)[0, 0])
    lut_naive = np.float32((np.arange(256) / 255 - 0.5) / 0.5)  # float64 all the way, one rounding

    # position ids of the vision embeddings, recorded on every forward
    pos_calls = []
    model.model.vision_model.embeddings.position_embedding.register_forward_hook(
        lambda m, inp, out: pos_calls.append(inp[0].clone()))

    golden_cases, case_arrays = [], []
    pixel_files, feature_files = {}, {}
    with torch.no_grad():
        for case_name, messages, kwargs in CASES:
            names = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
            bare = copy.deepcopy(messages)
            for m in bare:
                for p in m["content"]:
                    p.pop("image", None)
            prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            assert prompt == processor.apply_chat_template(bare, add_generation_prompt=True, tokenize=False)
            enc = processor(text=prompt, images=[images[n] for n in names], return_tensors="pt", **kwargs)
            input_ids = enc["input_ids"][0].tolist()
            assert enc["attention_mask"].all()
            pv, pam = enc["pixel_values"], enc["pixel_attention_mask"]
            assert pv.dtype == torch.float32 and pam.dtype == torch.int64 and bool(pam.all())

            # the reference pipeline: pixel values, prompt expansion, ids
            split = kwargs.get("do_image_splitting", True)
            refs = [ref_preprocess(images[n], split) for n in names]
            ref_pv = np.concatenate([r[0] for r in refs])
            assert np.array_equal(pv[0].numpy(), ref_pv), case_name
            expanded = prompt
            for r in refs:
                expanded = expanded.replace("<image>", "\0", 1)
            for r in refs:
                expanded = expanded.replace("\0", ref_expansion(r[1], r[2]), 1)
            assert hf_tok(expanded)["input_ids"] == input_ids == tok.encode(expanded).ids
            rc = processor.image_processor([images[n] for n in names], return_row_col_info=True, **kwargs)
            assert [[r[1] for r in refs]] == rc["rows"] and [[r[2] for r in refs]] == rc["cols"]

            # vision tower, connector, per image (dumped once per image and mode)
            pos_calls.clear()
            vis, feats = features(model, pv, pam)
            assert len(pos_calls) == 1 and torch.equal(pos_calls[0], torch.arange(16).expand(pv.shape[1], 16))
            feats = feats[0]
            assert feats.shape == (pv.shape[1] * IMAGE_SEQ_LEN, TEXT["hidden_size"])
            shuffled = ref_pixel_shuffle(vis.numpy())
            proj = model.model.connector.modality_projection.proj.weight.numpy()
            assert np.allclose(shuffled @ proj.T, feats.numpy().reshape(shuffled.shape[0], 4, -1), atol=1e-5)
            assert torch.equal(torch.from_numpy(shuffled), model.model.connector.pixel_shuffle(vis, SCALE_FACTOR))
            image_entries, t0 = [], 0
            for n, r in zip(names, refs):
                nt = r[0].shape[0]
                stem = n[:-4] + ("" if split else ".unsplit")
                pix = pv[0, t0:t0 + nt]
                f_img = feats[t0 * IMAGE_SEQ_LEN:(t0 + nt) * IMAGE_SEQ_LEN]
                v_img = vis[t0:t0 + nt]
                if stem not in pixel_files:
                    pixel_files[stem] = (sha256_f32le(dump_f32(pix, os.path.join(out_dir, f"{stem}.pixel_values.f32"))),
                                         pix.clone())
                    alone_vis, alone = features(model, pix[None], pam[:, t0:t0 + nt])
                    feature_files[stem] = (
                        sha256_f32le(dump_f32(alone[0], os.path.join(out_dir, f"{stem}.features.f32"))),
                        sha256_f32le(dump_f32(alone_vis, os.path.join(out_dir, f"{stem}.vision.f32"))),
                        alone[0], alone_vis)
                assert torch.equal(pixel_files[stem][1], pix)
                feat_diff = max_abs_diff(feature_files[stem][2], f_img)
                vis_diff = max_abs_diff(feature_files[stem][3], v_img)
                assert feat_diff < 1e-5 and vis_diff < 1e-5, (feat_diff, vis_diff)
                image_entries.append({
                    "file": n, "rows": r[1], "cols": r[2], "tiles": nt, "sizes_hw": r[3],
                    "image_tokens": nt * IMAGE_SEQ_LEN, "expansion": ref_expansion(r[1], r[2]),
                    "pixel_values_file": f"{stem}.pixel_values.f32: ({nt}, 3, {TILE}, {TILE}) f32, tiles "
                                         "row-major then the global image (when split)",
                    "pixel_values_sha256_f32le": pixel_files[stem][0],
                    "features_file": f"{stem}.features.f32: ({nt * IMAGE_SEQ_LEN}, {TEXT['hidden_size']}) "
                                     "f32, connector output, 4 rows per tile in tile order",
                    "features_sha256_f32le": feature_files[stem][0],
                    "vision_file": f"{stem}.vision.f32: ({nt}, {PATCHES_PER_SIDE ** 2}, {VISION['hidden_size']}) "
                                   "f32, vision tower output after post_layernorm, patches row-major",
                    "vision_sha256_f32le": feature_files[stem][1],
                    "max_abs_diff_in_this_case_vs_file": max(feat_diff, vis_diff),
                })
                t0 += nt
            image_pos = [i for i, t in enumerate(input_ids) if t == ids["<image>"]]
            assert len(image_pos) == feats.shape[0]

            # logits at every position, no cache
            out = forward(model, input_ids, pv, pam)
            logits = out.logits[0]
            assert logits.shape == (len(input_ids), VOCAB)
            logits_np = dump_f32(logits, os.path.join(out_dir, f"{case_name}.logits.f32"))
            # the same through inputs_embeds built by hand: features scattered into the <image> rows
            emb = model.get_input_embeddings()(torch.tensor([input_ids])).clone()
            emb[0, image_pos] = feats
            manual = model(inputs_embeds=emb, use_cache=False).logits[0]
            manual_diff = max_abs_diff(manual, logits)
            assert manual_diff < 1e-5, manual_diff

            new_ids, margins = greedy_mm(model, input_ids, pv, pam, GREEDY_STEPS)
            assert ids["<image>"] not in new_ids
            full = forward(model, input_ids + new_ids, pv, pam).logits[0]
            assert [int(i) for i in full[len(input_ids) - 1:-1].argmax(-1)] == new_ids
            if ids[EOS] not in new_ids:  # (min_new_tokens masks EOS)
                gen = model.generate(**enc, max_new_tokens=GREEDY_STEPS, min_new_tokens=GREEDY_STEPS,
                                     do_sample=False)[0, len(input_ids):].tolist()
                assert gen == new_ids, (gen, new_ids)

            case_arrays.append((pv[0].numpy(), input_ids, image_pos, vis.numpy(), feats.numpy(), logits.numpy()))
            golden_cases.append({
                "name": case_name,
                "messages": messages,
                "processor_kwargs": kwargs,
                "prompt": prompt,
                "expanded_prompt": expanded,
                "input_ids": input_ids,
                "n_tokens": len(input_ids),
                "n_image_tokens": len(image_pos),
                "image_token_positions": [image_pos[0], image_pos[-1]],
                "pixel_values_shape": list(pv.shape),
                "pixel_attention_mask_shape": list(pam.shape),
                "pixel_attention_mask": "all ones",
                "pixel_values_sha256_f32le": sha256_f32le(f32le(pv)),
                "images": image_entries,
                "logits_file": f"{case_name}.logits.f32: ({len(input_ids)}, {VOCAB}) f32, one forward "
                               "with the pixels, no cache",
                "logits_sha256_f32le": sha256_f32le(logits_np),
                "top5_last": top5(logits[-1]),
                "greedy_ids": new_ids,
                "greedy_text": hf_tok.decode(new_ids),
                "margins": margins,
                "min_margin": min(margins),
                "inputs_embeds_max_abs_diff": manual_diff,
            })

        # the same RGBA image given by path: transformers' load_image does exif_transpose + convert("RGB"),
        # which DROPS the alpha channel (raw RGB, no compositing) before the image processor sees it
        rgba_path = os.path.join(out_dir, "rgba_50x50.png")
        by_path = processor(text=golden_cases[3]["prompt"], images=[rgba_path], return_tensors="pt")
        dropped = ref_preprocess(Image.open(rgba_path).convert("RGB"))[0]
        assert np.array_equal(by_path["pixel_values"][0].numpy(), dropped)
        assert by_path["input_ids"][0].tolist() == golden_cases[3]["input_ids"]
        composited = case_arrays[3][0]
        rgba_by_path = {
            "how": "processor(images=[path]) (or a URL / base64 string): load_image -> "
                   "ImageOps.exif_transpose -> convert('RGB'), i.e. alpha discarded, no compositing",
            "pixel_values_sha256_f32le": sha256_f32le(f32le(by_path["pixel_values"])),
            "max_abs_diff_vs_composited": float(np.abs(dropped - composited).max()),
            "tiles_that_differ": [int(i) for i in np.nonzero((dropped != composited).any(axis=(1, 2, 3)))[0]],
        }

        # sanity: the logits depend on the pixels (small's prompt with rgba's 10 tiles instead)
        swapped = forward(model, golden_cases[0]["input_ids"], torch.from_numpy(case_arrays[3][0])[None],
                          torch.ones(1, 10, TILE, TILE, dtype=torch.int64)).logits[0]
        image_sensitivity = max_abs_diff(swapped, torch.from_numpy(case_arrays[0][5]))
        assert image_sensitivity > 0.1, image_sensitivity

        # a batch of two prompts with different tile counts: image padding
        p1, p2 = golden_cases[0]["prompt"], golden_cases[1]["prompt"]
        benc = processor(text=[p1, p2], images=[[images["small_20x14.png"]], [images["nonsquare_70x40.png"]]],
                         return_tensors="pt", padding=True)
        bpv, bpam = benc["pixel_values"], benc["pixel_attention_mask"]
        assert list(bpv.shape) == [2, 10, 3, TILE, TILE] and list(bpam.shape) == [2, 10, TILE, TILE]
        assert bool((bpv[1, 7:] == 0).all()) and bool((bpam[1, 7:] == 0).all()) and bool(bpam[1, :7].all())
        _, bfeats = features(model, bpv, bpam)
        assert [f.shape[0] for f in bfeats] == [40, 28]
        batch_diff = max(max_abs_diff(bfeats[0], feature_files["small_20x14"][2]),
                         max_abs_diff(bfeats[1], feature_files["nonsquare_70x40"][2]))
        assert batch_diff < 1e-5
        batch = {
            "prompts": ["small", "nonsquare"],
            "pixel_values_shape": list(bpv.shape),
            "pixel_attention_mask_shape": list(bpam.shape),
            "real_tiles": [10, 7],
            "padding": "sample 1 tiles 7..9 are all-zero pixel_values with all-zero pixel_attention_mask; "
                       "get_image_features drops every all-zero tile before the vision tower",
            "input_ids_padding_side": hf_tok.padding_side,
            "features_max_abs_diff_vs_alone": batch_diff,
        }

        # the files as written load back to the same model
        reloaded = Idefics3ForConditionalGeneration.from_pretrained(out_dir, attn_implementation="sdpa").eval()
        c0 = CASES[0]
        enc0 = processor(text=golden_cases[0]["prompt"], images=[images["small_20x14.png"]], return_tensors="pt")
        assert torch.equal(reloaded(**enc0, use_cache=False).logits[0],
                           forward(model, golden_cases[0]["input_ids"], enc0["pixel_values"],
                                   enc0["pixel_attention_mask"]).logits[0]), c0[0]

    golden = {
        "config": golden_cfg,
        "special_ids": ids,
        "image_seq_len": IMAGE_SEQ_LEN,
        "images": image_info,
        "pixel_lut": {
            "rule": "u8 -> f32((f32(f64(u) * (1/255)) - 0.5f) / 0.5f): rescale in float64 then cast, "
                    "normalize in float32",
            "values": [float(v) for v in lut],
            "differs_from_one_float64_rounding_at": [int(i) for i in np.nonzero(lut != lut_naive)[0]],
        },
        "tokenizer_samples": tokenizer_samples(hf_tok),
        "template_samples": template_samples(processor),
        "cases": golden_cases,
        "batch_padding": batch,
        "image_sensitivity_max_abs_diff": image_sensitivity,
        "rgba_by_path": rgba_by_path,
    }

    # llama.cpp: text model and mmproj
    chktxt = converter_chktxt(args.llama_cpp)
    conv_tok = AutoTokenizer.from_pretrained(out_dir)  # what the converter hashes
    pre_hash = hashlib.sha256(str(conv_tok.encode(chktxt)).encode()).hexdigest()
    st = {k: v.numpy() for k, v in load_file(os.path.join(out_dir, "model.safetensors")).items()}
    gguf = import_gguf(args.llama_cpp)
    text_log = convert(args.llama_cpp, out_dir, os.path.join(out_dir, "model.gguf"), pre_hash, mmproj=False)
    mm_log = convert(args.llama_cpp, out_dir, os.path.join(out_dir, "mmproj.gguf"), pre_hash, mmproj=True)
    text_summary = check_text_gguf(gguf, os.path.join(out_dir, "model.gguf"), st, tok_json)
    mm_summary = check_mmproj_gguf(gguf, os.path.join(out_dir, "mmproj.gguf"), st)
    # an independent float64 numpy forward from the two GGUFs alone
    _, mm_t = gguf_tensors(gguf, os.path.join(out_dir, "mmproj.gguf"))
    _, text_t = gguf_tensors(gguf, os.path.join(out_dir, "model.gguf"))
    eps = gguf_fields(gguf.GGUFReader(os.path.join(out_dir, "mmproj.gguf"), "r"))[
        "clip.vision.attention.layer_norm_epsilon"]
    np_check = {"vision": 0.0, "features": 0.0, "logits": 0.0}
    for pv_np, input_ids, image_pos, vis_np, feats_np, logits_np in case_arrays:
        x, f = np_vision_features(mm_t, pv_np, VISION_EPS)
        lg = np_text_logits(text_t, input_ids, image_pos, f)
        np_check["vision"] = max(np_check["vision"], float(np.abs(x - vis_np).max()))
        np_check["features"] = max(np_check["features"], float(np.abs(f - feats_np).max()))
        np_check["logits"] = max(np_check["logits"], float(np.abs(lg - logits_np).max()))
    assert max(np_check.values()) < 1e-4, np_check
    assert abs(eps - VISION_EPS) < 1e-12, eps
    golden["numpy_f64_from_gguf_max_abs_diff"] = np_check
    golden["gguf"] = {
        "pre_tokenizer_hash": pre_hash,
        "converter_log": text_log + mm_log,
        "model.gguf": text_summary,
        "mmproj.gguf": mm_summary,
    }
    write_golden(out_dir, golden)

    print(f"wrote {out_dir}: " + "; ".join(
        f"{c['name']}: {c['n_tokens']} tokens, min margin {c['min_margin']:.4f}" for c in golden_cases))


if __name__ == "__main__":
    main()
