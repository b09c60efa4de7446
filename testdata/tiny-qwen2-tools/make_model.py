"""Makes testdata/tiny-qwen2-tools: a tiny random Qwen2 chat model with Qwen 2.5's tools template,
for the gateway's tool-calling tests (template path, parser on the model's own token sequences,
grammar-enforced calls from random weights).

No reference logits come with it (nothing here needs torch or transformers): Kiln's Qwen2 numerics
are checked against transformers elsewhere; this model exists so tool calls run end to end on a
vocabulary that holds ChatML's and Qwen's tool-call tokens, at a size fit to commit.

Exact versions: Python 3.11, tokenizers 0.22.1, safetensors 0.6.2, numpy 2.3.3
(`pip install tokenizers==0.22.1 safetensors==0.6.2 numpy==2.3.3`). Run from anywhere:
`python testdata/tiny-qwen2-tools/make_model.py`; it writes next to itself.

  tokenizer   byte-level BPE (GPT-2 pre-tokenizer, as Qwen's), asked for 1024 ids (the corpus gives
              568 with the added tokens: training stops when no pair occurs twice), trained on a fixed corpus
              of English sentences and tool-call JSON made from random.Random(0); added tokens as
              Qwen 2.5 has them: <|endoftext|>, <|im_start|>, <|im_end|> special; <tool_call> and
              </tool_call> not special (so they stay in decoded text, as in Qwen 2.5); and
              Mistral's [TOOL_CALLS], special, for tests of that syntax
  weights     numpy.random.default_rng(0), parameter by parameter in sorted-name order: matrices
              ~ N(0, 0.1), biases ~ N(0, 0.1), norms ~ U(0.5, 1.5); float32; tied embeddings
  config      Qwen2: hidden 64, 2 layers, 4 heads, 2 KV heads, MLP 128, 4096 positions
  template    ../qwen2.5-tools/chat_template.jinja, copied as chat_template in
              tokenizer_config.json
"""

import json
import os
import random

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, AddedToken

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB = 1024
HIDDEN, LAYERS, HEADS, KV_HEADS, MLP = 64, 2, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS

WORDS = ("the weather in paris oslo lima rome today tomorrow is sunny rainy cold warm what how "
         "many days city add sum numbers of and a to for please tell me check call function tool "
         "result answer user assistant system you are helpful").split()


def corpus():
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 12)
        lines.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice(".?!"))
    for _ in range(1000):
        args = {"city": rng.choice(["Paris", "Oslo", "Lima"]), "days": rng.randint(1, 7)}
        lines.append('<tool_call>\n' + json.dumps({"name": "get_weather", "arguments": args})
                     + '\n</tool_call>')
        lines.append(json.dumps({"a": rng.randint(0, 99), "b": rng.randint(0, 99)}))
    return lines


def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 2, special_tokens=special, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    tok.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False)])
    # Mistral's marker as the control token it is there, so a test can run that syntax on this
    # model (`--tool-call-format mistral`) and its special-token path.
    tok.add_special_tokens([AddedToken("[TOOL_CALLS]", special=True, normalized=False)])
    return tok


def weights(vocab):
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
            p + "self_attn.q_proj.weight": (HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.q_proj.bias": (HEADS * HEAD_DIM,),
            p + "self_attn.k_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.bias": (KV_HEADS * HEAD_DIM,),
            p + "self_attn.v_proj.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.bias": (KV_HEADS * HEAD_DIM,),
            p + "self_attn.o_proj.weight": (HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": (MLP, HIDDEN),
            p + "mlp.up_proj.weight": (MLP, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, MLP),
        })
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("norm.weight"):
            out[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            out[name] = rng.normal(0.0, 0.1, shape).astype(np.float32)
    return out


def main():
    tok = tokenizer()
    # The corpus runs out of merges before VOCAB: the vocabulary is what training gives.
    vocab = tok.get_vocab_size()
    tok.save(os.path.join(HERE, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}
    with open(os.path.join(HERE, "../qwen2.5-tools/chat_template.jinja")) as f:
        template = f.read()
    with open(os.path.join(HERE, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "model_max_length": 4096, "tokenizer_class": "Qwen2Tokenizer",
                   "chat_template": template}, f, indent=2, ensure_ascii=False)
    config = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": HIDDEN, "intermediate_size": MLP, "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "hidden_act": "silu", "tie_word_embeddings": True, "vocab_size": vocab,
        "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": LAYERS,
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
    }
    with open(os.path.join(HERE, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(HERE, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"],
                   ids["<|endoftext|>"]], "do_sample": False}, f, indent=2)
    save_file(weights(vocab), os.path.join(HERE, "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
