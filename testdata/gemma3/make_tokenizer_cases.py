#!/usr/bin/env python3
"""Regenerate testdata/gemma3/tokenizer_cases.json: transformers' ids for awkward strings with
Gemma 3's tokenizer as transformers builds it from the GGUF (no tokenizer.json involved).

Made 2026-12-02 with transformers 5.24.0 / tokenizers 0.23.3 (torch 2.15.0 venv, see
testdata/requirements-golden.txt), from the Gemma 3 270M Q4_K_M GGUF that
`cargo xtask fetch-model --model gemma3-270m` installs:

    ~/.cache/kiln/golden-venv/bin/python testdata/gemma3/make_tokenizer_cases.py \
        [--gguf ~/.cache/kiln/models/gemma-3-270m-q4_k_m.gguf] [--out FILE]

Each case: `text`, `ids` (tok(text, add_special_tokens=False): control tokens written in the text
are parsed, no BOS) and `decoded` (tok.decode(ids)).
"""

import argparse
import json
import os

from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))

TEXTS = [
    "Hello world", " Hello", "  two leading spaces", "trailing space ", "a  b   c    d",
    "tab\there\t\tdouble", "line\nbreak\n\nparagraph\n\n\n\nfour", "    indented code\n        deeper",
    "mixed \t \n whitespace", "Ünïcödé façade naïve", "日本語のテキストと中文文本", "🚀🌍🎉👩‍👩‍👧‍👦",
    "emoji with text 🙂 ok", "\u0000\u0001 control chars", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math", "ꙮ rare glyph ᚠᛇᚻ",
    "<start_of_turn>user\nhi<end_of_turn>", "literal <bos> and <eos> text", "[multimodal] tag",
    "numbers 1234567890 3.14159 -42", "x=1;y=2;z=x+y", "https://example.com/path?q=1&r=2",
    "", " ", "\n", "  ", "\t", "ALL CAPS SHOUTING", "don't won't it's", "café\u0301 combining",
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", default=os.path.expanduser("~/.cache/kiln/models/gemma-3-270m-q4_k_m.gguf"))
    parser.add_argument("--out", default=os.path.join(HERE, "tokenizer_cases.json"))
    args = parser.parse_args()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(args.gguf), gguf_file=os.path.basename(args.gguf))
    cases = []
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})
    meta = {"made_with": "transformers 5.24.0 / tokenizers 0.23.3, AutoTokenizer.from_pretrained(dir, "
            "gguf_file=gemma-3-270m-q4_k_m.gguf), add_special_tokens=False"}
    with open(args.out, "w") as f:
        json.dump({"_meta": meta, "cases": cases}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
