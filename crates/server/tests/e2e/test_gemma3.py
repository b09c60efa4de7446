"""End-to-end on the second real model: `kiln serve --model <Gemma 3 270M Q4_K_M GGUF>` (a base
model: no chat template) driven by the official `openai` client. Its greedy completions are
transformers' golden text, the 958-token prompt that crosses the sliding window included; chat
without a template is a clear 400 naming the fix, and `--chat-template FILE` is that fix."""

import json
import os

import openai
import pytest
import requests
from openai import OpenAI

from conftest import API_KEY, ROOT, Server

MODEL = "gemma-3-270m-q4_k_m"

# Gemma's own turn markup, for a server started with --chat-template.
TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gemma_path():
    path = os.environ.get("KILN_GEMMA3_MODEL")
    assert path and os.path.exists(path), (
        f"{path} is missing: run `cargo xtask fetch-model --model gemma3-270m`"
    )
    return path


@pytest.fixture(scope="module")
def gemma():
    s = Server("--model", gemma_path())
    yield s
    assert s.stop() == 0, "kiln did not shut down cleanly on SIGTERM"


@pytest.fixture(scope="module")
def gemma_golden():
    with open(os.path.join(ROOT, "testdata", "gemma3", "golden_gemma3.json")) as f:
        return json.load(f)


def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)


def test_models_lists_gemma(gemma):
    ids = [m.id for m in client(gemma).models.list().data]
    assert ids == [MODEL]


@pytest.mark.parametrize("name", ["english", "code", "unicode", "long_sliding_window"])
def test_greedy_completions_are_the_golden_text(gemma, gemma_golden, name):
    case = gemma_golden[name]
    r = client(gemma).completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=len(case["greedy_ids"]), temperature=0
    )
    assert r.choices[0].text == case["greedy_text"], name
    # BOS is added, as the GGUF says.
    assert r.usage.prompt_tokens == len(case["token_ids"])
    assert r.usage.completion_tokens == len(case["greedy_ids"])
    assert r.choices[0].finish_reason == "length"


def test_streamed_completion_is_the_same_text(gemma, gemma_golden):
    case = gemma_golden["english"]
    stream = client(gemma).completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=len(case["greedy_ids"]), temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == case["greedy_text"]


def test_chat_without_a_template_names_the_fix(gemma):
    with pytest.raises(openai.BadRequestError) as e:
        client(gemma).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
    body = e.value.body
    assert e.value.status_code == 400
    assert body["code"] == "no_chat_template"
    assert "--chat-template" in body["message"] and "/v1/completions" in body["message"]
    # Nothing broke: the next completion is served.
    r = client(gemma).completions.create(model=MODEL, prompt="The sky is", max_tokens=2)
    assert r.choices[0].text


def test_a_chat_template_file_makes_chat_work(tmp_path):
    template = tmp_path / "gemma.jinja"
    template.write_text(TEMPLATE)
    s = Server("--model", gemma_path(), "--chat-template", str(template))
    try:
        r = client(s).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=8, temperature=0,
        )
        assert r.choices[0].message.role == "assistant"
        # The template's markup became control tokens: 1 BOS + the turn tokens + the text.
        tokens = requests.post(
            s.base + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}],
                  "max_tokens": 1},
            timeout=60,
        ).json()["usage"]["prompt_tokens"]
        assert tokens < 16, tokens
    finally:
        assert s.stop() == 0
