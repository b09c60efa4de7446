#!/usr/bin/env python3
"""Regenerate the tiny random-Pixtral golden fixtures in testdata/tiny-pixtral/.

A LlavaForConditionalGeneration laid out as mistral-community/pixtral-12b is on the Hub (Pixtral vision
tower, Llava projector, Mistral text model), tiny and random, with transformers' float32 outputs for
eight chat cases with images. The algorithms behind every number (image processor, [IMG] expansion,
vision tower, projector, feature placement, GGUF layout) are written out, with transformers file:line,
in SPEC.md (beside this script).

What it makes (next to this script, or in --out DIR):
  config.json             LlavaConfig (model_type llava, image_token_index 10 = [IMG], image_seq_length 1,
                          projector_hidden_act gelu, multimodal_projector_bias true, vision_feature_layer
                          -1, vision_feature_select_strategy "full", untied). vision_config: pixtral,
                          hidden 32, 2 layers, 2 heads (head_dim 16), intermediate 64, patch_size 8,
                          image_size 64 (at most 8x8 patches), num_channels 3, hidden_act silu (as
                          pixtral-12b's config.json since its "Update hidden_act to silu"; the
                          PixtralVisionConfig default is gelu), rope_parameters axial / rope_theta 1e4.
                          text_config: mistral, hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16,
                          intermediate 128, vocab 512, rms_norm_eps 1e-5, rope_theta 1e6 (default RoPE),
                          sliding_window null, max_position_embeddings 1024, bos 1, eos 2. Legacy keys
                          appended: text_config.rope_theta / rope_scaling null, vision_config.rope_theta,
                          top-level torch_dtype (golden.json's "config" is the file before that)
  generation_config.json  bos 1, eos 2, do_sample false
  model.safetensors       under the Hub's pixtral-12b names (language_model.model.*,
                          language_model.lm_head.weight, vision_tower.*, multi_modal_projector.*), which
                          transformers 5.24 writes for its in-memory model.language_model.* /
                          model.vision_tower.* / lm_head.weight. Random weights: torch.manual_seed(0)
                          right after the model is built, then parameter by parameter in sorted order of
                          the in-memory names (checked to be the order of the saved names), every tensor
                          of 2+ dims (the 4-D patch_conv too) ~ N(0, 0.1), every 1-D one ~ U(0.5, 1.5):
                          the norm weights and also multi_modal_projector.linear_{1,2}.bias
  tokenizer.json          byte-level BPE shaped like pixtral-12b's tekken-derived tokenizer.json: added
                          tokens 0..19 = tekken's special tokens (<unk> <s> </s> [INST] [/INST]
                          [AVAILABLE_TOOLS] [/AVAILABLE_TOOLS] [TOOL_RESULTS] [/TOOL_RESULTS] [TOOL_CALLS]
                          [IMG]=10 <pad>=11 [IMG_BREAK]=12 [IMG_END]=13 [PREFIX] [MIDDLE] [SUFFIX]
                          [SYSTEM_PROMPT] [/SYSTEM_PROMPT] [TOOL_CONTENT]; special, not normalized; the
                          real file pads to 1000 with <SPECIAL_n>), ids 20..275 the 256 bytes in byte order
                          (GPT-2 byte-to-unicode pieces), 276..511 236 merged pieces in merge order; BPE
                          with ignore_merges true, fuse_unk false, no unk_token, no byte_fallback;
                          pre-tokenizer Sequence[Split(the Llama-3 regex, Isolated), ByteLevel(no prefix
                          space, use_regex false)]: the regex pixtral-12b's file really has (transformers'
                          convert_pixtral_weights_to_hf.py MistralConverter default pattern), not tekken's;
                          decoder ByteLevel; post-processor ByteLevel(trim_offsets false), which adds no
                          BOS: <s> comes from the chat template. Merges: tokenizers' BpeTrainer (min
                          frequency 2, byte-level alphabet) on tiny_common.training_sentences()
  tokenizer_config.json   as transformers 5.24 writes it (TokenizersBackend, bos <s>, eos </s>, unk <unk>)
  chat_template.jinja     mistral-community/pixtral-12b's chat_template.json of 2024-09 ("Add processor
                          chat template (#7)"), written from memory and compared with a public copy of
                          it, with one change: a text part renders chunk["content"] if it has that key,
                          else chunk["text"] (the published one reads "content" only, so an HF/OpenAI-style
                          {"type": "text", "text": ...} part rendered as nothing). It renders "<s>", then
                          per user message "[INST]" + its text and one "[IMG]" per {"type": "image"} part
                          in order + "[/INST]", per assistant message its content + "</s>"; roles must
                          alternate user/assistant; a leading system message is not rendered on its own
                          but as "[INST]" + system + "\n\n" at the start of the LAST user message (only if
                          that is the last message); add_generation_prompt changes nothing
  processor_config.json   PixtralProcessor.save_pretrained: patch_size 8, spatial_merge_size 1, the three
                          image tokens, and (5.24 layout) the image processor nested under
                          "image_processor": PixtralImageProcessor, size {"longest_edge": 64}, patch_size
                          {"height": 8, "width": 8}, resample 3 (BICUBIC), do_convert_rgb, do_resize,
                          do_rescale (rescale_factor 1/255), do_normalize (CLIP mean/std), do_pad
  preprocessor_config.json  the same image processor alone (PixtralImageProcessorPil.save_pretrained), the
                          older Hub layout that llama.cpp's converter and older readers look for
  small.png wide.png large.png rgba.png tall.png   test images (numpy seed 0, PIL's PNG writer): 20x14
                          RGB (upscaled to 24x16), 70x40 RGB (-> 64x40), 300x200 RGB (-> 64x48), 50x50 RGBA
                          with alpha 0..255 left to right, a transparent and an opaque square, random
                          colour under it (-> 56x56), 40x300 RGB (-> 8x64: the one resampled vertically
                          first, see the spec; horizontal-first would change 159 of its 1536 bytes by 1).
                          Sizes are width x height; everything below is (H, W)
  pixels.<image>.f32      the processor's pixel_values of each image at its own size, (3, H, W): what the
                          model sees (batches are zero-padded to the largest H and W, the padding cropped
                          off again by the vision tower)
  pixels.rgba.alpha_dropped.f32  rgba.png as processor.apply_chat_template(tokenize=True) sees it when the
                          message names the file: transformers' load_image does convert("RGB"), which drops
                          alpha (the colour under transparent pixels shows), before the processor's
                          composite on white can happen (max |diff| 3.83 from pixels.rgba.f32)
  <case>.vision.<i>.f32   the vision tower's last layer output for image i of the case, (patches, 32)
  <case>.features.<i>.f32 the projector output for image i, (patches, 64): the rows that replace the case's
                          [IMG] tokens, in order (patch row-major)
  <case>.logits.f32       logits at every position of the case's input_ids, one forward with no cache,
                          (n_tokens, 512)
  golden.json             config; tokenizer (layout, regex, gguf pre name and hash); tokenizer_samples
                          (text -> ids, pieces, decode; no BOS added); pixel_files (shapes, sha256);
                          pil_checks; per case: messages (image parts {"type": "image", "image": FILE}),
                          prompt (the rendered template), prompt_ids (its ids, [IMG] unexpanded), input_ids
                          (after the processor's expansion), images (file, image_size [H, W], patch_grid,
                          image_tokens, the .f32 names and shapes), logits file/shape/sha256, top5_last,
                          greedy_ids (8 steps with a KV cache, argmax, not stopped at EOS), margins (top1 -
                          top2 at each step), min_margin, and the checks below; gguf (tensor names, the
                          permuted ones, metadata of both files)
  model.gguf              llama.cpp convert_hf_to_gguf.py --outtype f32 of this folder: the text model
                          (general.architecture llama, tokenizer.ggml.model gpt2, tokenizer.ggml.pre
                          "pixtral", add_bos_token false, the chat template). attn_q / attn_k rows are
                          permuted (LlamaModel.permute, per head: GGUF row 2i+j = HF row j*8+i, i < 8) so
                          RoPE on the GGUF layout rotates adjacent pairs; everything else is the same f32
                          data under llama.cpp names
  mmproj.gguf             the same with --mmproj: general.architecture clip, clip.projector_type
                          "pixtral", the vision tower (v.*, its attn_q / attn_k permuted the same way with
                          2 heads) and the projector (mm.1.*, mm.2.*). No v.token_embd.img_break: this
                          converter's MmprojModel.filter_tensors drops every "language_model." tensor
                          before LlavaVisionModel.modify_tensors can copy [IMG_BREAK]'s embedding row out
                          of embed_tokens, so llama.cpp would not put [IMG_BREAK] rows into the image
                          embeddings from this file

Cases (n_tokens; image patch grids rows x cols):
  small         user [image small.png, "What do you see here?"]                    22 (2x3)
  wide          user ["Tell me about this image.", image wide.png]                 60 (5x8)
  large         user [image large.png, "Describe the large picture, please."]      74 (6x8)
  rgba          user ["What colour is the sea?", image rgba.png]                   71 (7x7)
  two_images    user ["Compare these two:", small.png, " and ", wide.png, "?"]     71 (2x3, 5x8)
  two_turns     user [large.png, "What is this?"], assistant "A big house by the sea.",
                user ["And this one?", small.png]                                  94 (6x8, 2x3)
  system_image  system "Answer in one short line.", user [image wide.png]          64 (5x8)
  tall          user ["Is this a tree?", image tall.png]                           27 (8x1)

How each case is made: prompt = processor.apply_chat_template(messages, tokenize=False); then
processor(text=prompt, images=[PIL images opened from the PNGs], add_special_tokens=False) gives
input_ids, pixel_values and image_sizes ([IMG] -> per image H/8 rows of W/8 [IMG] each followed by
[IMG_BREAK], the last [IMG_BREAK] replaced by [IMG_END]); model(input_ids, pixel_values, image_sizes)
gives the logits. The reference image processor is the slow one, PixtralImageProcessorPil (what
AutoImageProcessor.from_pretrained(..., use_fast=False) gives in 5.24, where use_fast=False is the
deprecated spelling of backend="pil"); the torchvision one was not run (no torchvision for torch 2.15 on
PyPI yet, so transformers' PixtralProcessor is imported from its module with the torchvision module
stubbed: see pixtral_processor_class). Checked for every case: the expansion equals expand_ids() on
prompt_ids; processor.apply_chat_template(tokenize=True) with the file paths gives the same input_ids
(and the same pixels except rgba, see above); an independent numpy image pipeline (Pillow's integer alpha
composite, Pillow 13.0.0's BICUBIC resample with its pass-order rule, rescale, normalize) gives
pixel_values bit for bit; an independent float64 numpy forward from model.safetensors, written from the
spec, matches the vision output, the features and the logits within 2.8e-6; the cached greedy steps
match one uncached forward over prompt + generated ids (same argmax, logits within 2.1e-6); in
two_images / two_turns each image alone through the vision tower gives its features within 7.2e-7 of
the batched run (block-diagonal attention; no cross-talk); the saved folder loads back (tokenizer, image
processor, model) and gives the same bytes. pil_checks: the numpy alpha composite equals Pillow's for
all 65536 (value, alpha) pairs (and so does transformers' numpy float formula, which a numpy RGBA input
would take), the numpy resize equals Pillow's on 72 random (size, target) pairs. Min margin over all
cases: 0.0185 (small).

GGUF: the converter is run with this Python in a child process with two run-time patches, not edits
(see CONVERT_WRAPPER): this tiny vocabulary's pre-tokenizer hash (PRE_HASH, unknown to llama.cpp) is
registered as "pixtral", the name llama.cpp gives pixtral-12b's real tokenizer.json (same Llama-3 regex;
"tekken" would mean tekken's regex, which this tokenizer does not use); and the mmproj tensor map is
built for at least 3 blocks (with 2 vision layers it cannot name multi_modal_projector.linear_2). Both
files are read back with llama.cpp's gguf-py: every tensor equals its safetensors tensor (q/k permuted).

Made with transformers 5.24.0, torch 2.15.0, numpy 2.4.6, safetensors 0.8.0, tokenizers 0.23.3, pillow
13.0.0 (pixel values depend on Pillow: 13.0.0 chose a new BICUBIC pass order), Jinja2 3.1.6, the gguf-py
and converter of llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (vendored in llama-cpp-python
0.3.36); float32, CPU, 2 threads, attn_implementation "sdpa" (vision tower and text model).

Run from the repository root (this Python needs pillow besides testdata/requirements-golden.txt):
    ~/.cache/kiln/torch-venv/bin/python testdata/tiny-pixtral/make_golden.py            # rewrites testdata/tiny-pixtral/
    ~/.cache/kiln/torch-venv/bin/python testdata/tiny-pixtral/make_golden.py --out "$(mktemp -d)"
--llama-cpp DIR names the llama.cpp checkout (default: the one vendored in llama-cpp-python 0.3.36
under ~/.cache/kiln/llama.cpp). Shared code (arguments, seeding, saving, the training sentences, the
dumps) comes from testdata/tiny_common.py, unchanged. ~20 s on 2 cores.

Deterministic: two runs into two folders gave byte-identical files (2026-12-02, 2-core x86-64).
An independent float64 numpy forward from model.gguf and mmproj.gguf alone (their own layouts: RoPE on
adjacent pairs, text and vision) matched every case's logits within 2.8e-6 and reproduced every
greedy_ids (checked by hand, not by this script).
"""

import hashlib
import json
import math
import os
import subprocess
import sys
import types

import numpy as np
import PIL
import torch
from PIL import Image
from safetensors.torch import load_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoImageProcessor, LlavaConfig, LlavaForConditionalGeneration, MistralConfig,
                          PixtralImageProcessorPil, PixtralVisionConfig, PreTrainedTokenizerFast)
from transformers.convert_slow_tokenizer import bytes_to_unicode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no testdata/__pycache__
sys.path.insert(0, os.path.dirname(HERE))  # testdata/, for tiny_common
from tiny_common import (dump_f32, gguf_fields, import_gguf, random_model, reload, save_model,  # noqa: E402
                         setup, sha256_f32le, top5, training_sentences, write_golden)

# ---------------------------------------------------------------- constants
# The special tokens of Mistral's tekken tokenizers (ranks 0..19 of mistral_common's
# Tekkenizer.DEPRECATED_SPECIAL_TOKENS, as mistral-community/pixtral-12b's tokenizer.json has them;
# the real one then pads with <SPECIAL_20>..<SPECIAL_999>, left out here).
SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
            "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
            "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
            "[TOOL_CONTENT]"]
BOS, EOS, IMG, IMG_BREAK, IMG_END = 1, 2, 10, 12, 13
VOCAB_SIZE = 512  # 20 specials + 256 bytes + 236 merges
N_MERGES = VOCAB_SIZE - len(SPECIALS) - 256
# The split regex of mistral-community/pixtral-12b's tokenizer.json: the default `pattern` of the
# MistralConverter in transformers' convert_pixtral_weights_to_hf.py (the Llama-3 / cl100k regex; it
# was not given tekken's own pattern), which is why llama.cpp names that tokenizer's hash "pixtral"
# and gives it LLAMA_VOCAB_PRE_TYPE_LLAMA3.
SPLIT_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# llama.cpp's get_vocab_base_pre hash of this tiny vocabulary (sha256 of str(ids) of its check text),
# registered at conversion time under GGUF_PRE (see convert_gguf).
GGUF_PRE = "pixtral"
PRE_HASH = "edf7fcb3abe15f9c651644180f6c4043f75ca0623701ce7e92a86e9e9c4b792a"

# The chat template: mistral-community/pixtral-12b's chat_template.json (added 2024-09 by "Add
# processor chat template (#7)"), written from memory and checked against a copy of it; one change:
# a text part renders chunk["content"] if it has one, else chunk["text"] (the published one reads
# chunk["content"] only, so OpenAI/HF-style {"type": "text", "text": ...} parts rendered as nothing).
CHAT_TEMPLATE = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST]" + system_message + "\\n\\n" }}
        {%- else %}
            {{- "[INST]" }}
        {%- endif %}
        {%- if message["content"] is not string %}
            {%- for chunk in message["content"] %}
                {%- if chunk["type"] == "text" %}
                    {%- if "content" in chunk %}
                        {{- chunk["content"] }}
                    {%- else %}
                        {{- chunk["text"] }}
                    {%- endif %}
                {%- elif chunk["type"] == "image" %}
                    {{- "[IMG]" }}
                {%- else %}
                    {{- raise_exception("Unrecognized content type!") }}
                {%- endif %}
            {%- endfor %}
        {%- else %}
            {{- message["content"] }}
        {%- endif %}
        {{- "[/INST]" }}
    {%- elif message["role"] == "assistant" %}
        {{- message["content"] + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

PATCH = 8
LONGEST_EDGE = 64
GREEDY_STEPS = 8
IMAGE_FILES = ["small.png", "wide.png", "large.png", "rgba.png", "tall.png"]


def img_part(name):
    return {"type": "image", "image": name}


def text_part(text):
    return {"type": "text", "text": text}


CASES = [
    ("small", [{"role": "user", "content": [img_part("small.png"), text_part("What do you see here?")]}]),
    ("wide", [{"role": "user", "content": [text_part("Tell me about this image."), img_part("wide.png")]}]),
    ("large", [{"role": "user", "content": [img_part("large.png"),
                                            text_part("Describe the large picture, please.")]}]),
    ("rgba", [{"role": "user", "content": [text_part("What colour is the sea?"), img_part("rgba.png")]}]),
    ("two_images", [{"role": "user", "content": [text_part("Compare these two:"), img_part("small.png"),
                                                 text_part(" and "), img_part("wide.png"),
                                                 text_part("?")]}]),
    ("two_turns", [{"role": "user", "content": [img_part("large.png"), text_part("What is this?")]},
                   {"role": "assistant", "content": "A big house by the sea."},
                   {"role": "user", "content": [text_part("And this one?"), img_part("small.png")]}]),
    ("system_image", [{"role": "system", "content": "Answer in one short line."},
                      {"role": "user", "content": [img_part("wide.png")]}]),
    ("tall", [{"role": "user", "content": [text_part("Is this a tree?"), img_part("tall.png")]}]),
]


# ---------------------------------------------------------------- tokenizer
def pre_tokenizer():
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_tokenizer():
    """A byte-level BPE trained with `tokenizers` on tiny_common.training_sentences(), laid out as a
    tekken-derived tokenizer.json: the specials at 0..19, the 256 bytes at 20..275 in byte order, then
    the merged pieces in merge order; ignore_merges, no BOS from the post-processor."""
    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=256 + N_MERGES, min_frequency=2, show_progress=False,
                                  special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    trainer_tok.train_from_iterator(training_sentences(), trainer)
    merges = [tuple(m) for m in json.loads(trainer_tok.to_str())["model"]["merges"]]
    assert len(merges) == N_MERGES, len(merges)

    byte_chars = bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in range(256):
        vocab[byte_chars[b]] = len(vocab)
    for left, right in merges:
        assert left + right not in vocab, (left, right)
        vocab[left + right] = len(vocab)
    assert len(vocab) == VOCAB_SIZE

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    return tok


TOKENIZER_SAMPLES = ["Hello world, the sun is hot!", "Water 2026 — café.", " Two  spaces,\tand a tab",
                     "I'll say it's the [IMG] token", "line one\nline two\n\n  end"]


def tokenizer_samples(hf_tok):
    out = []
    for text in TOKENIZER_SAMPLES:
        enc = hf_tok(text, add_special_tokens=True)
        out.append({"text": text, "ids": enc.input_ids,
                    "pieces": hf_tok.convert_ids_to_tokens(enc.input_ids),
                    "decoded": hf_tok.decode(enc.input_ids)})
    return out


# ---------------------------------------------------------------- processor
def pixtral_processor_class():
    """transformers' PixtralProcessor. Its module imports image_processing_pixtral (the torchvision
    backend) only for get_resize_output_image_size, used by _get_num_multimodal_tokens alone, and the
    lazy transformers.PixtralProcessor is a placeholder without torchvision (there is no torchvision
    for torch 2.15 on PyPI yet): without torchvision, that module is replaced by a stub holding the
    same function from image_processing_pil_pixtral (the text of the two functions is checked equal),
    and the real processing_pixtral module is imported directly."""
    name = "transformers.models.pixtral.image_processing_pixtral"
    try:
        import torchvision  # noqa: F401
    except ImportError:
        from transformers.models.pixtral import image_processing_pil_pixtral as pil
        import inspect
        import re
        tv_src = open(os.path.join(os.path.dirname(pil.__file__), "image_processing_pixtral.py"),
                      encoding="utf-8").read()
        body = lambda src: re.search(r"\ndef get_resize_output_image_size\(.*?\n(?=\n\S)", src,
                                     re.S).group(0)
        assert body(tv_src) == body(inspect.getsource(pil)), "get_resize_output_image_size differs"
        stub = types.ModuleType(name)
        stub.get_resize_output_image_size = pil.get_resize_output_image_size
        sys.modules[name] = stub
    from transformers.models.pixtral.processing_pixtral import PixtralProcessor
    return PixtralProcessor


def make_processor(tok):
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                     unk_token="<unk>")
    image_processor = PixtralImageProcessorPil(size={"longest_edge": LONGEST_EDGE},
                                               patch_size={"height": PATCH, "width": PATCH})
    proc = pixtral_processor_class()(image_processor=image_processor, tokenizer=hf_tok,
                                     patch_size=PATCH, spatial_merge_size=1,
                                     chat_template=CHAT_TEMPLATE)
    assert proc.image_token_id == IMG and proc.image_break_token_id == IMG_BREAK
    assert proc.image_end_token_id == IMG_END
    return proc


# ---------------------------------------------------------------- model
def make_config():
    vision = PixtralVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_channels=3, image_size=LONGEST_EDGE, patch_size=PATCH, hidden_act="silu",
        attention_dropout=0.0, rope_parameters={"rope_type": "axial", "rope_theta": 10000.0},
        initializer_range=0.02)
    text = MistralConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
        max_position_embeddings=1024, initializer_range=0.02, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=None,
        use_cache=True)
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=IMG, image_seq_length=1,
        projector_hidden_act="gelu", vision_feature_select_strategy="full", vision_feature_layer=-1,
        multimodal_projector_bias=True, tie_word_embeddings=False)


def legacy_keys(cfg):
    # Legacy spellings (rope_theta / rope_scaling next to transformers 5's rope_parameters), in the
    # sub-configs where pixtral-12b's config.json has them.
    text = dict(cfg["text_config"])
    text.update(rope_theta=text["rope_parameters"]["rope_theta"], rope_scaling=None)
    vision = dict(cfg["vision_config"])
    vision.update(rope_theta=vision["rope_parameters"]["rope_theta"])
    return {"text_config": text, "vision_config": vision}



# ---------------------------------------------------------------- images
def make_images(out_dir):
    """The four test PNGs (numpy RNG seed 0, in this order; PIL's PNG writer, default settings).
    Sizes are width x height."""
    rng = np.random.default_rng(0)
    yy = lambda h, w: np.arange(h, dtype=np.float64)[:, None] * np.ones((1, w))
    xx = lambda h, w: np.ones((h, 1)) * np.arange(w, dtype=np.float64)[None, :]

    # small 20x14: red ramp left to right, green ramp top to bottom, noisy blue, a dark box
    h, w = 14, 20
    small = np.stack([xx(h, w) * 255 / (w - 1), yy(h, w) * 255 / (h - 1),
                      96 + rng.integers(0, 64, (h, w))], axis=-1)
    small[4:9, 6:13] = (20, 30, 40)

    # wide 70x40: sky above sea, a yellow sun
    h, w = 40, 70
    wide = np.zeros((h, w, 3))
    wide[:24] = np.stack([40 + yy(24, w) * 4, 120 + yy(24, w) * 3, 255 - yy(24, w) * 2], axis=-1)
    wide[24:] = np.stack([10 + xx(16, w), 60 + yy(16, w) * 5, 150 + xx(16, w)], axis=-1)
    sun = (xx(h, w) - 50) ** 2 + (yy(h, w) - 12) ** 2 <= 64
    wide[sun] = (250, 220, 40)

    # large 300x200: diagonal gradient, a house, a sun, stripes and a patch of noise
    h, w = 200, 300
    large = np.stack([(xx(h, w) + yy(h, w)) * 255 / (h + w - 2), 255 - yy(h, w) * 255 / (h - 1),
                      xx(h, w) * 200 / (w - 1) + 30], axis=-1)
    large[90:170, 40:140] = (180, 60, 50)
    large[120:170, 75:105] = (70, 40, 20)
    large[((xx(h, w) - 230) ** 2 + (yy(h, w) - 50) ** 2) <= 900] = (255, 240, 120)
    stripes = ((xx(h, w) + yy(h, w)) // 6 % 2 == 0) & (yy(h, w) >= 175)
    large[stripes] = (20, 20, 160)
    large[20:60, 20:60] = rng.integers(0, 256, (40, 40, 3))

    # rgba 50x50: random colour everywhere (also under transparent pixels), alpha a ramp left to
    # right with a fully transparent and a fully opaque square
    h, w = 50, 50
    rgba = np.concatenate([rng.integers(0, 256, (h, w, 3)), np.round(xx(h, w) * 255 / (w - 1))[..., None]],
                          axis=-1)
    rgba[5:15, 5:15, 3] = 0
    rgba[30:45, 30:45, 3] = 255

    # tall 40x300: green trunk on a blue ramp, with noisy bands (-> 8x64: the height shrinks by more
    # than twice the width, so Pillow 13 resamples vertically first)
    h, w = 300, 40
    tall = np.stack([yy(h, w) * 200 / (h - 1), 80 + xx(h, w) * 3, 255 - yy(h, w) * 255 / (h - 1)], axis=-1)
    tall[40:280, 15:25] = (40, 160, 60)
    tall[::37] = rng.integers(0, 256, (len(range(0, h, 37)), w, 3))

    images = {"small.png": (small, "RGB"), "wide.png": (wide, "RGB"), "large.png": (large, "RGB"),
              "rgba.png": (rgba, "RGBA"), "tall.png": (tall, "RGB")}
    assert list(images) == IMAGE_FILES
    for name, (arr, mode) in images.items():
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        Image.fromarray(arr, mode).save(os.path.join(out_dir, name))
        back = np.array(Image.open(os.path.join(out_dir, name)))
        assert back.shape == arr.shape and np.array_equal(back, arr), name


def open_image(out_dir, name):
    im = Image.open(os.path.join(out_dir, name))
    im.load()
    return im


# ---------------------------------------------------------------- the image processor, in numpy
# Independent re-implementations of what PixtralImageProcessorPil does with Pillow, checked to give
# the same bits: the spec in SPEC.md (beside this script) describes these.
def pil_alpha_composite_on_white(rgba):
    """Pillow's ImagingAlphaComposite(white, image) then convert("RGB"): the integer formula of
    libImaging/AlphaComposite.c (PRECISION_BITS 7) with an opaque white destination."""
    src = rgba[..., :3].astype(np.int64)
    a = rgba[..., 3:4].astype(np.int64)
    coef1 = a * 255 * 255 * 128 // (a * 255 + 255 * (255 - a))   # = a * 128
    coef2 = 255 * 128 - coef1
    tmp = src * coef1 + 255 * coef2 + (0x80 << 7)
    out = (((tmp >> 8) + tmp) >> 8) >> 7
    out = np.where(a == 0, 255, out)
    return out.astype(np.uint8)


def numpy_alpha_composite_on_white(rgba):
    """transformers' convert_to_rgb for a numpy uint8 (H, W, 4) array (not the path taken here)."""
    alpha = rgba[..., 3:4] / 255
    return np.round(alpha * rgba[..., :3] + (1 - alpha) * 255).astype(np.uint8)


def _bicubic(x):
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


PIL_PRECISION_BITS = 32 - 8 - 2


def _pil_coeffs(in_size, out_size):
    """libImaging/Resample.c precompute_coeffs + normalize_coeffs_8bpc for BICUBIC (support 2)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds, kk = [], np.zeros((out_size, ksize), dtype=np.int64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = 0.0
        for v in w:
            ww += v
        if ww != 0.0:
            w = [v / ww for v in w]
        kk[xx, :xmax] = [int(-0.5 + v * (1 << PIL_PRECISION_BITS)) if v < 0
                         else int(0.5 + v * (1 << PIL_PRECISION_BITS)) for v in w]
        bounds.append((xmin, xmax))
    return bounds, kk


def _pil_pass(img, bounds, kk):
    """One 8-bit pass along axis 1 of img (H, W, C) uint8: rounding offset 2^21, >> 22, clipped."""
    out = np.empty((img.shape[0], len(bounds), img.shape[2]), dtype=np.uint8)
    src = img.astype(np.int64)
    for xx, (xmin, xmax) in enumerate(bounds):
        acc = (1 << (PIL_PRECISION_BITS - 1)) + np.einsum(
            "hkc,k->hc", src[:, xmin:xmin + xmax], kk[xx, :xmax])
        out[:, xx] = np.clip(acc >> PIL_PRECISION_BITS, 0, 255)
    return out


def pil_bicubic_resize(rgb, out_h, out_w):
    """Image.resize((out_w, out_h), BICUBIC) of an RGB uint8 (H, W, 3) array, as Pillow 13.0.0's
    ImagingResampleInner does it: nothing if the size is unchanged; else one 8-bit pass per axis
    whose size changes, the vertical one first iff the height shrinks by more than twice what the
    width shrinks (in pixels), the horizontal one first otherwise."""
    h, w, _ = rgb.shape
    horizontal_first = not (h - out_h > 0 and h - out_h > (w - out_w) * 2)
    out = rgb
    for axis in ("w", "h") if horizontal_first else ("h", "w"):
        if axis == "w" and w != out_w:
            out = _pil_pass(out, *_pil_coeffs(w, out_w))
        if axis == "h" and h != out_h:
            out = _pil_pass(out.transpose(1, 0, 2), *_pil_coeffs(h, out_h)).transpose(1, 0, 2)
    return np.ascontiguousarray(out)


def pixtral_target_size(h, w):
    """get_resize_output_image_size: scale down (floor) to fit LONGEST_EDGE, then each side up to a
    whole number of patches."""
    ratio = max(h / LONGEST_EDGE, w / LONGEST_EDGE)
    if ratio > 1:
        h, w = int(math.floor(h / ratio)), int(math.floor(w / ratio))
    return ((h - 1) // PATCH + 1) * PATCH, ((w - 1) // PATCH + 1) * PATCH


MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def numpy_preprocess(im):
    """The whole PixtralImageProcessorPil path for one PIL image: (3, H', W') float32."""
    arr = np.array(im)
    rgb = pil_alpha_composite_on_white(arr) if im.mode == "RGBA" else arr
    th, tw = pixtral_target_size(*rgb.shape[:2])
    resized = pil_bicubic_resize(rgb, th, tw)
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def check_pil_algorithms():
    """The numpy alpha composite against Pillow for every (value, alpha) pair, and the numpy bicubic
    resize against Pillow on random images of many sizes, both ways. Returns a summary."""
    v, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([v, 255 - v, v // 2, a], axis=-1).astype(np.uint8)  # (256, 256, 4)
    im = Image.fromarray(rgba, "RGBA")
    pil = np.array(Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
                   .convert("RGB"))
    assert np.array_equal(pil_alpha_composite_on_white(rgba), pil)
    float_differs = int((numpy_alpha_composite_on_white(rgba) != pil).any(-1).sum())

    rng = np.random.default_rng(1)
    n = 0
    for h, w in [(14, 20), (40, 70), (200, 300), (50, 50), (7, 9), (1, 5), (33, 17), (64, 64),
                 (100, 3), (513, 61), (74, 71), (53, 54)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for th, tw in [pixtral_target_size(h, w), (max(1, h // 3), w + 5), (h * 2 + 1, max(1, w // 2)),
                       (max(1, h - 17), max(1, w - 14)), (max(1, h - 7), max(1, w - 1)),
                       (max(1, h // 2), max(1, w // 2))]:
            want = np.array(Image.fromarray(img).resize((tw, th), Image.BICUBIC))
            assert np.array_equal(pil_bicubic_resize(img, th, tw), want), (h, w, th, tw)
            n += 1
    return {"alpha_composite_pairs_checked": 256 * 256,
            "alpha_pairs_where_numpy_float_formula_differs": float_differs,
            "bicubic_resizes_checked": n}


# ---------------------------------------------------------------- the model, in numpy (float64)
def _rms(x, w, eps):
    return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _attention(q, k, v, mask):
    """q (heads, n, d), k/v (kv_heads, n, d); mask (n, n) bool, True = may attend."""
    rep = q.shape[0] // k.shape[0]
    k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)  # head h uses kv head h // rep
    s = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
    s = np.where(mask[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def numpy_vision(sd, pixels):
    """Pixtral vision tower + multimodal projector from the spec, for a list of (3, H, W) images;
    returns the per-image (last vision layer output, projector output)."""
    p = "vision_tower."
    d, heads = 32, 2
    hd = d // heads
    w_conv = sd[p + "patch_conv.weight"].reshape(d, -1)  # (32, 3*8*8), (c, ky, kx) order
    embeds, rows, cols, lengths = [], [], [], []
    for px in pixels:
        _, h, w = px.shape
        r, c = h // PATCH, w // PATCH
        patches = px.reshape(3, r, PATCH, c, PATCH).transpose(1, 3, 0, 2, 4).reshape(r * c, -1)
        embeds.append(patches.astype(np.float64) @ w_conv.T)
        rows += [i for i in range(r) for _ in range(c)]
        cols += [j for _ in range(r) for j in range(c)]
        lengths.append(r * c)
    x = _rms(np.concatenate(embeds), sd[p + "ln_pre.weight"], 1e-5)
    n = x.shape[0]

    # 2D RoPE: frequency j of head_dim/2 = theta^(-2j/hd); even j go to the row, odd j to the column
    freqs = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    angles = np.concatenate([np.array(rows)[:, None] * freqs[0::2], np.array(cols)[:, None] * freqs[1::2]],
                            axis=-1)  # (n, hd/2)
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))
    mask = np.zeros((n, n), dtype=bool)
    start = 0
    for length in lengths:
        mask[start:start + length, start:start + length] = True
        start += length

    for i in range(2):
        lp = f"{p}transformer.layers.{i}."
        h = _rms(x, sd[lp + "attention_norm.weight"], 1e-5)
        q, k, v = (h @ sd[f"{lp}attention.{m}_proj.weight"].T for m in "qkv")
        q, k, v = (t.reshape(n, heads, hd).transpose(1, 0, 2) for t in (q, k, v))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        o = _attention(q, k, v, mask).transpose(1, 0, 2).reshape(n, d)
        x = x + o @ sd[lp + "attention.o_proj.weight"].T
        h = _rms(x, sd[lp + "ffn_norm.weight"], 1e-5)
        g = h @ sd[lp + "feed_forward.gate_proj.weight"].T
        u = h @ sd[lp + "feed_forward.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ sd[lp + "feed_forward.down_proj.weight"].T

    m = "multi_modal_projector."
    y = x @ sd[m + "linear_1.weight"].T + sd[m + "linear_1.bias"]
    y = 0.5 * y * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))  # exact (erf) GELU
    y = y @ sd[m + "linear_2.weight"].T + sd[m + "linear_2.bias"]
    split = np.cumsum(lengths)[:-1]
    return list(zip(np.split(x, split), np.split(y, split)))


def numpy_text(sd, input_ids, features):
    """The Mistral text model with the [IMG] embeddings replaced by the image features, in order."""
    p = "language_model.model."
    ids = np.array(input_ids)
    x = sd[p + "embed_tokens.weight"][ids].copy()
    feats = np.concatenate(features) if features else np.zeros((0, x.shape[1]))
    assert (ids == IMG).sum() == feats.shape[0]
    x[ids == IMG] = feats
    n, heads, kv_heads, hd = len(ids), 4, 2, 16
    inv = 1000000.0 ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    mask = np.tril(np.ones((n, n), dtype=bool))
    for i in range(2):
        lp = f"{p}layers.{i}."
        h = _rms(x, sd[lp + "input_layernorm.weight"], 1e-5)
        q = (h @ sd[lp + "self_attn.q_proj.weight"].T).reshape(n, heads, hd).transpose(1, 0, 2)
        k = (h @ sd[lp + "self_attn.k_proj.weight"].T).reshape(n, kv_heads, hd).transpose(1, 0, 2)
        v = (h @ sd[lp + "self_attn.v_proj.weight"].T).reshape(n, kv_heads, hd).transpose(1, 0, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        o = _attention(q, k, v, mask).transpose(1, 0, 2).reshape(n, heads * hd)
        x = x + o @ sd[lp + "self_attn.o_proj.weight"].T
        h = _rms(x, sd[lp + "post_attention_layernorm.weight"], 1e-5)
        g = h @ sd[lp + "mlp.gate_proj.weight"].T
        u = h @ sd[lp + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ sd[lp + "mlp.down_proj.weight"].T
    x = _rms(x, sd[p + "norm.weight"], 1e-5)
    return x @ sd["language_model.lm_head.weight"].T


# ---------------------------------------------------------------- cases
def expand_ids(ids, sizes):
    """The processor's [IMG] expansion, on ids: per image (H, W), H/8 rows of W/8 [IMG] each followed
    by [IMG_BREAK], the last [IMG_BREAK] replaced by [IMG_END]."""
    out, it = [], iter(sizes)
    for t in ids:
        if t != IMG:
            out.append(t)
            continue
        h, w = next(it)
        block = ([IMG] * (w // PATCH) + [IMG_BREAK]) * (h // PATCH)
        out += block[:-1] + [IMG_END]
    assert next(it, None) is None
    return out


def image_names(messages):
    return [c["image"] for m in messages if not isinstance(m["content"], str)
            for c in m["content"] if c["type"] == "image"]


def greedy_llava(model, inputs, steps):
    """Argmax decoding with a KV cache, exactly `steps` tokens (not stopped at EOS): the prompt with
    its images first, then one token a step. Returns the ids, the top1 - top2 margins and the
    logits each step decided on."""
    out = model(**inputs, use_cache=True)
    new, margins, rows = [], [], []
    for _ in range(steps):
        last = out.logits[0, -1]
        top2 = torch.topk(last, 2).values
        new.append(int(last.argmax()))
        margins.append(float(top2[0] - top2[1]))
        rows.append(last)
        out = model(input_ids=torch.tensor([[new[-1]]]), cache=out.cache, use_cache=True)
    return new, margins, torch.stack(rows)


def run_case(name, messages, proc, model, sd64, out_dir, pixel_files):
    """Renders, processes and runs one case; writes its .f32 files; returns its golden entry."""
    files = image_names(messages)
    images = [open_image(out_dir, f) for f in files]
    prompt = proc.apply_chat_template(messages, tokenize=False)
    unexpanded = proc.tokenizer(prompt, add_special_tokens=False).input_ids
    enc = proc(text=prompt, images=images or None, add_special_tokens=False, return_tensors="pt")
    ids = enc["input_ids"][0].tolist()
    pv, sizes = enc["pixel_values"], [tuple(int(v) for v in s) for s in enc["image_sizes"]]
    assert ids == expand_ids(unexpanded, sizes)
    assert ids == proc.tokenizer(proc.tokenizer.decode(ids), add_special_tokens=False).input_ids

    # the same prompt through apply_chat_template(tokenize=True) with file paths (load_image)
    with_paths = [dict(m, content=m["content"] if isinstance(m["content"], str) else
                       [dict(c, image=os.path.join(out_dir, c["image"])) if c["type"] == "image" else c
                        for c in m["content"]]) for m in messages]
    via_template = proc.apply_chat_template(with_paths, tokenize=True, return_dict=True, return_tensors="pt")
    assert via_template["input_ids"][0].tolist() == ids
    template_pixels_equal = torch.equal(via_template["pixel_values"], pv)
    template_pixels_diff = float((via_template["pixel_values"] - pv).abs().max())

    per_image = []
    for i, (f, im, (h, w)) in enumerate(zip(files, images, sizes)):
        own = pv[i, :, :h, :w]
        assert float(pv[i].abs().sum()) == float(own.abs().sum())  # the batch padding is zeros
        ref = numpy_preprocess(im)
        assert np.array_equal(own.numpy(), ref), (name, f)
        stem = f[:-4]
        path = f"pixels.{stem}.f32"
        if path in pixel_files:
            assert np.array_equal(pixel_files[path], ref), path
        else:
            pixel_files[path] = dump_f32(own, os.path.join(out_dir, path))
        alt = via_template["pixel_values"][i, :, :h, :w]
        if not torch.equal(alt, own):
            # load_image's convert("RGB") keeps the colour under transparent pixels (no composite)
            assert im.mode == "RGBA" and np.array_equal(alt.numpy(), numpy_preprocess(im.convert("RGB")))
            alt_path = f"pixels.{stem}.alpha_dropped.f32"
            if alt_path not in pixel_files:
                pixel_files[alt_path] = dump_f32(alt, os.path.join(out_dir, alt_path))
        per_image.append({"file": f, "pixel_values_file": path, "pixel_values_shape": [3, h, w],
                          "image_size": [h, w],
                          "patch_grid": [h // PATCH, w // PATCH],
                          "image_tokens": (h // PATCH) * (w // PATCH + 1)})

    with torch.no_grad():
        inputs = {"input_ids": enc["input_ids"]}
        if files:
            inputs.update(pixel_values=pv, image_sizes=enc["image_sizes"])
            vt = model.model.vision_tower(pv, image_sizes=enc["image_sizes"])
            vision = vt.last_hidden_state[0]
            feats = model.model.get_image_features(pixel_values=pv,
                                                   image_sizes=enc["image_sizes"]).pooler_output
            assert torch.equal(torch.cat(feats), model.model.multi_modal_projector(vision))
        logits = model(**inputs, use_cache=False).logits[0]
        assert logits.shape == (len(ids), VOCAB_SIZE)
        new, margins, step_logits = greedy_llava(model, inputs, GREEDY_STEPS)
        full = model(**dict(inputs, input_ids=torch.tensor([ids + new])), use_cache=False).logits[0]
        assert [int(t) for t in full[len(ids) - 1:-1].argmax(-1)] == new
        cache_diff = float((full[len(ids) - 1:-1] - step_logits).abs().max())

        # each image alone through the vision tower (the batch is block-diagonal: no cross-talk)
        alone_diff = 0.0
        if len(files) > 1:
            for i, (h, w) in enumerate(sizes):
                one = model.model.get_image_features(pixel_values=pv[i:i + 1, :, :h, :w],
                                                     image_sizes=torch.tensor([[h, w]])).pooler_output[0]
                alone_diff = max(alone_diff, float((one - feats[i]).abs().max()))

    # the independent float64 numpy forward
    ref_vision = numpy_vision(sd64, [numpy_preprocess(im) for im in images]) if files else []
    ref_logits = numpy_text(sd64, ids, [y for _, y in ref_vision])
    numpy_diff = {"logits": float(np.abs(ref_logits - logits.double().numpy()).max())}
    if files:
        starts = np.cumsum([0] + [len(rv) for rv, _ in ref_vision])
        numpy_diff["vision"] = max(float(np.abs(rv - vision[s:s + len(rv)].double().numpy()).max())
                                   for (rv, _), s in zip(ref_vision, starts))
        numpy_diff["features"] = max(float(np.abs(ry - f.double().numpy()).max())
                                     for (_, ry), f in zip(ref_vision, feats))
    assert max(numpy_diff.values()) < 1e-4, numpy_diff

    start = 0
    for i, entry in enumerate(per_image):
        n = entry["patch_grid"][0] * entry["patch_grid"][1]
        entry["vision_file"] = f"{name}.vision.{i}.f32"
        entry["vision_shape"] = [n, 32]
        dump_f32(vision[start:start + n], os.path.join(out_dir, entry["vision_file"]))
        entry["features_file"] = f"{name}.features.{i}.f32"
        entry["features_shape"] = [n, 64]
        f = dump_f32(feats[i], os.path.join(out_dir, entry["features_file"]))
        entry["features_sha256_f32le"] = sha256_f32le(f)
        start += n
    logits_np = dump_f32(logits, os.path.join(out_dir, f"{name}.logits.f32"))
    n_img = sum(1 for t in ids if t == IMG)
    return {
        "messages": messages,
        "prompt": prompt,
        "prompt_ids": unexpanded,
        "input_ids": ids,
        "n_tokens": len(ids),
        "n_img_tokens": n_img,
        "n_img_break_tokens": ids.count(IMG_BREAK),
        "n_img_end_tokens": ids.count(IMG_END),
        "images": per_image,
        "logits_file": f"{name}.logits.f32",
        "logits_shape": [len(ids), VOCAB_SIZE],
        "logits_sha256_f32le": sha256_f32le(logits_np),
        "top5_last": top5(logits[-1]),
        "greedy_ids": new,
        "margins": margins,
        "min_margin": min(margins),
        "cached_vs_uncached_max_abs_diff": cache_diff,
        "images_alone_vs_batched_max_abs_diff": alone_diff,
        "numpy_float64_max_abs_diff": numpy_diff,
        "apply_chat_template_tokenize_pixels_equal": template_pixels_equal,
        "apply_chat_template_tokenize_pixels_max_abs_diff": template_pixels_diff,
    }


def check_weight_order(model, st_path):
    """random_model drew the parameters in sorted order of their in-memory names (model.language_model.*,
    lm_head.weight, model.vision_tower.*, ...); save_pretrained writes them under the Hub's older names
    (language_model.model.*, language_model.lm_head.weight, vision_tower.*, ...), whose sorted order
    is the same: the i-th tensor of model.safetensors is the i-th one drawn."""
    drawn = [p for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0])]
    saved = load_file(st_path)
    assert len(drawn) == len(saved)
    for p, (name, t) in zip(drawn, sorted(saved.items())):
        assert torch.equal(p.detach(), t), name


# ---------------------------------------------------------------- llama.cpp
# Runs llama.cpp's convert_hf_to_gguf.py in a child Python with two run-time patches (the converter's
# files are not edited):
#  - this tiny vocabulary's pre-tokenizer hash (PRE_HASH) is registered under GGUF_PRE:
#    TextModel.get_vocab_base_pre is wrapped so that this one hash maps to GGUF_PRE and every other
#    goes to the original;
#  - MmprojModel's tensor map is built for at least 3 blocks: it maps multi_modal_projector.linear_{bid}
#    to mm.{bid} only for bid < the number of vision layers, so with 2 layers linear_2 has no name
#    ("Can not map tensor 'multi_modal_projector.linear_2.bias'"); real Pixtral has 24.
CONVERT_WRAPPER = r"""
import hashlib, os, runpy, sys
converter, pre_hash, pre_name = sys.argv[1:4]
root = os.path.dirname(os.path.abspath(converter))
sys.path[:0] = [os.path.join(root, "gguf-py"), root]
import conversion.base as base
original = base.TextModel.get_vocab_base_pre
chktxt = next(c for c in original.__code__.co_consts if isinstance(c, str) and c.startswith("\n \n\n \n"))
def get_vocab_base_pre(self, tokenizer):
    if hashlib.sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest() == pre_hash:
        return pre_name
    return original(self, tokenizer)
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
original_init = base.MmprojModel.__init__
def mmproj_init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    if self.block_count < 3:
        self.tensor_map = base.gguf.get_tensor_name_map(base.gguf.MODEL_ARCH.MMPROJ, 3)
base.MmprojModel.__init__ = mmproj_init
sys.argv = [converter] + sys.argv[4:]
runpy.run_path(converter, run_name="__main__")
"""


def convert_gguf(llama_cpp, model_dir, out_file, *extra):
    converter = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    if not os.path.isfile(converter):
        sys.exit(f"error: {converter} not found (pass --llama-cpp DIR)")
    subprocess.run([sys.executable, "-c", CONVERT_WRAPPER, converter, PRE_HASH, GGUF_PRE, model_dir,
                    "--outtype", "f32", "--outfile", out_file, "--model-name", "tiny-pixtral", *extra],
                   check=True)


def llama_permute(w, n_head):
    # llama.cpp conversion/llama.py LlamaModel.permute (n_head = KV heads for k)
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


TEXT_GLOBAL = {"token_embd.weight": "language_model.model.embed_tokens.weight",
               "output.weight": "language_model.lm_head.weight",
               "output_norm.weight": "language_model.model.norm.weight"}
TEXT_PER_LAYER = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                  "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                  "ffn_norm": "post_attention_layernorm"}
MMPROJ_GLOBAL = {"v.patch_embd.weight": "vision_tower.patch_conv.weight",
                 "v.pre_ln.weight": "vision_tower.ln_pre.weight",
                 "mm.1.weight": "multi_modal_projector.linear_1.weight",
                 "mm.1.bias": "multi_modal_projector.linear_1.bias",
                 "mm.2.weight": "multi_modal_projector.linear_2.weight",
                 "mm.2.bias": "multi_modal_projector.linear_2.bias"}
MMPROJ_PER_LAYER = {"attn_q": "attention.q_proj", "attn_k": "attention.k_proj", "attn_v": "attention.v_proj",
                    "attn_out": "attention.o_proj", "ffn_gate": "feed_forward.gate_proj",
                    "ffn_up": "feed_forward.up_proj", "ffn_down": "feed_forward.down_proj",
                    "ln1": "attention_norm", "ln2": "ffn_norm"}


def read_gguf_tensors(llama_cpp, path):
    gguf = import_gguf(llama_cpp)
    reader = gguf.GGUFReader(path, "r")
    tensors = {}
    for t in reader.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, (t.name, t.tensor_type)
        tensors[t.name] = np.array(t.data).reshape(list(reversed([int(d) for d in t.shape])))
    return reader, tensors


def hf_name(gguf_name, prefix, per_layer, global_names):
    if gguf_name in global_names:
        return global_names[gguf_name]
    parts = gguf_name.split(".")
    blk = parts.index("blk")
    return f"{prefix}{parts[blk + 1]}.{per_layer[parts[blk + 2]]}.{parts[-1]}"


def check_gguf_tensors(tensors, st, prefix, per_layer, global_names, heads):
    """Every GGUF tensor is one safetensors tensor (q/k rows permuted by LlamaModel.permute with the
    given head counts); returns {gguf name: hf name} and the permuted names."""
    names, permuted = {}, []
    for gname, got in tensors.items():
        src = hf_name(gname, prefix, per_layer, global_names)
        want = st[src]
        for proj, n_head in heads.items():
            if src.endswith(f".{proj}.weight"):
                want = llama_permute(want, n_head)
                assert not np.array_equal(want, st[src])
                permuted.append(gname)
        assert got.shape == want.shape and np.array_equal(got, want), gname
        assert src not in names.values(), src
        names[gname] = src
    return names, permuted


def summarize_fields(fields):
    """The GGUF metadata for golden.json: long arrays as their length, first values and sha256."""
    out = {}
    for k, v in fields.items():
        if isinstance(v, list) and len(v) > 16:
            out[k] = {"len": len(v), "head": v[:5],
                      "sha256_json": hashlib.sha256(json.dumps(v, ensure_ascii=False).encode()).hexdigest()}
        else:
            out[k] = v
    return out


def check_ggufs(llama_cpp, out_dir, config):
    st = {k: v.numpy() for k, v in load_file(os.path.join(out_dir, "model.safetensors")).items()}
    text_c, vis_c = config.text_config, config.vision_config

    reader, tensors = read_gguf_tensors(llama_cpp, os.path.join(out_dir, "model.gguf"))
    text_names, text_permuted = check_gguf_tensors(
        tensors, st, "language_model.model.layers.", TEXT_PER_LAYER, TEXT_GLOBAL,
        {"q_proj": text_c.num_attention_heads, "k_proj": text_c.num_key_value_heads})
    assert set(text_names.values()) == {k for k in st if k.startswith("language_model.")}
    text_fields = gguf_fields(reader)

    reader, tensors = read_gguf_tensors(llama_cpp, os.path.join(out_dir, "mmproj.gguf"))
    extra = {}
    if "v.token_embd.img_break" in tensors:  # [IMG_BREAK]'s embedding row, if the converter kept it
        extra["v.token_embd.img_break"] = tensors.pop("v.token_embd.img_break")
        assert np.array_equal(extra["v.token_embd.img_break"],
                              st["language_model.model.embed_tokens.weight"][IMG_BREAK])
    mm_names, mm_permuted = check_gguf_tensors(
        tensors, st, "vision_tower.transformer.layers.", MMPROJ_PER_LAYER, MMPROJ_GLOBAL,
        {"attention.q_proj": vis_c.num_attention_heads, "attention.k_proj": vis_c.num_attention_heads})
    assert set(mm_names.values()) == {k for k in st if not k.startswith("language_model.")}
    mm_fields = gguf_fields(reader)
    return {
        "model_gguf": {"tensors": text_names, "permuted_rows": text_permuted,
                       "metadata": summarize_fields(text_fields)},
        "mmproj_gguf": {"tensors": mm_names, "permuted_rows": mm_permuted,
                        "img_break_embedding": sorted(extra), "metadata": summarize_fields(mm_fields)},
    }


# ---------------------------------------------------------------- main
def main():
    args, out_dir = setup(__doc__, HERE)
    if PIL.__version__ != "13.0.0":
        print(f"warning: made with pillow 13.0.0; this is {PIL.__version__} (the resize may differ)",
              file=sys.stderr)
    pil_checks = check_pil_algorithms()

    tok = train_tokenizer()
    proc = make_processor(tok)
    config = make_config()
    model = random_model(LlavaForConditionalGeneration, config)
    golden_cfg = save_model(model, out_dir, dict(bos_token_id=BOS, eos_token_id=EOS), legacy_keys)
    st_path = os.path.join(out_dir, "model.safetensors")
    check_weight_order(model, st_path)
    proc.save_pretrained(out_dir)                   # processor_config.json (image processor inside),
    proc.image_processor.save_pretrained(out_dir)   # tokenizer files, chat_template.jinja; and
    make_images(out_dir)                            # preprocessor_config.json alone

    # what was written loads back: tokenizer, image processor, model
    tok_back = PreTrainedTokenizerFast.from_pretrained(out_dir)
    samples = tokenizer_samples(proc.tokenizer)
    assert tokenizer_samples(tok_back) == samples
    assert PixtralImageProcessorPil.from_pretrained(out_dir).to_dict() == proc.image_processor.to_dict()
    slow = AutoImageProcessor.from_pretrained(out_dir, use_fast=False)  # 5.24: = backend="pil"
    assert type(slow) is PixtralImageProcessorPil and slow.to_dict() == proc.image_processor.to_dict()
    sd64 = {k: v.double().numpy() for k, v in load_file(st_path).items()}

    cases, pixel_files = {}, {}
    for name, messages in CASES:
        cases[name] = run_case(name, messages, proc, model, sd64, out_dir, pixel_files)
    with torch.no_grad():
        reloaded = reload(LlavaForConditionalGeneration, out_dir)
        c = cases["two_images"]
        enc = proc(text=c["prompt"], images=[open_image(out_dir, f) for f in image_names(c["messages"])],
                   add_special_tokens=False, return_tensors="pt")
        again = reloaded(**{k: enc[k] for k in ("input_ids", "pixel_values", "image_sizes")}).logits[0]
        assert sha256_f32le(again.numpy().astype("<f4")) == c["logits_sha256_f32le"]

    golden = {
        "config": golden_cfg,
        "tokenizer": {
            "vocab_size": VOCAB_SIZE, "specials": {s: i for i, s in enumerate(SPECIALS)},
            "bytes": "ids 20..275 = bytes 0..255 (GPT-2 byte-to-unicode pieces)",
            "merges": N_MERGES, "split_regex": SPLIT_REGEX, "ignore_merges": True,
            "post_processor": "ByteLevel(trim_offsets=False): adds nothing; BOS comes from the template",
            "gguf_pre": GGUF_PRE, "gguf_pre_hash": PRE_HASH,
        },
        "tokenizer_samples": samples,
        "image_token_ids": {"[IMG]": IMG, "[IMG_BREAK]": IMG_BREAK, "[IMG_END]": IMG_END},
        "pixel_files": {k: {"shape": list(v.shape), "sha256_f32le": sha256_f32le(v)}
                        for k, v in sorted(pixel_files.items())},
        "pil_checks": pil_checks,
        "cases": cases,
        "min_margin": min(c["min_margin"] for c in cases.values()),
    }

    for extra in ((), ("--mmproj",)):
        out = os.path.join(out_dir, "mmproj.gguf" if extra else "model.gguf")
        convert_gguf(args.llama_cpp, out_dir, out, *extra)
    golden["gguf"] = check_ggufs(args.llama_cpp, out_dir, config)
    write_golden(out_dir, golden)

    print(f"wrote {out_dir}: " + "; ".join(f"{n} {c['n_tokens']} tokens, min margin {c['min_margin']:.4f}"
                                           for n, c in cases.items()))


if __name__ == "__main__":
    main()
