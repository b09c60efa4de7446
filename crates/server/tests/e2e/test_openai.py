"""End-to-end: the official `openai` client (and requests, curl) against the real `kiln serve`,
through every snippet our users' hosted providers document, plus the error cases."""

import asyncio
import base64
import json
import os
import subprocess
import threading
import time

import openai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI

from conftest import API_KEY, Server

MODEL = "SmolLM2-135M-Instruct"
CAPITAL = "What is the capital of France?"


def client(server, **kw):
    return OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0, **kw)


def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


# --- Scaleway -----------------------------------------------------------------------------------


def test_scaleway_chat_with_system_prompt_and_sampling(server):
    r = client(server).chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": "Describe a futuristic city in one sentence."},
        ],
        temperature=0.2,
        max_tokens=100,
        top_p=0.7,
    )
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 100
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_greedy_chat_is_the_reference_answer_and_matches_kiln_generate(server):
    r = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0
    )
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop"
    out = subprocess.run(
        [os.environ["KILN_BIN"], "generate", "--chat", CAPITAL],
        capture_output=True, text=True, check=True, timeout=300,
    )
    assert out.stdout.strip() == r.choices[0].message.content


@pytest.mark.parametrize(
    "stop,expected", [(" is", "The capital of France"), ([" is", "France"], "The capital of ")]
)
def test_stop_as_string_and_list(server, stop, expected):
    r = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0, stop=stop
    )
    assert r.choices[0].message.content == expected
    assert r.choices[0].finish_reason == "stop"


def test_stream_matches_non_stream(server):
    c = client(server)
    full = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0
    ).choices[0].message.content
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0, stream=True
    )
    parts, ids, finish = [], set(), None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        ids.add(chunk.id)
        if chunk.choices:
            if chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(parts) == full
    assert len(ids) == 1 and finish == "stop"


def test_stream_stop_string_never_leaks(server):
    stream = client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0,
        stream=True, stop=["Paris"],
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "The capital of France is "


def test_async_legacy_completions_stream(server):
    async def go():
        c = AsyncOpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)
        stream = await c.completions.create(
            model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
        )
        return [chunk.choices[0].text async for chunk in stream if chunk.choices]

    parts = asyncio.run(go())
    text = "".join(parts)
    assert text.startswith(" Paris")
    r = client(server).completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert r.object == "text_completion" and r.choices[0].text == text


def test_legacy_completions_match_the_golden_greedy_text(server, golden):
    for name in ("english", "code"):
        case = golden["prompts"][name]
        r = client(server).completions.create(
            model=MODEL, prompt=case["text"], max_tokens=len(case["greedy_ids"]), temperature=0
        )
        assert r.choices[0].text == case["greedy_text"], name
        assert r.usage.prompt_tokens == len(case["token_ids"])
    # Token-id prompts and lists of prompts.
    ids = golden["prompts"]["english"]["token_ids"]
    r = client(server).completions.create(model=MODEL, prompt=[ids, ids], max_tokens=4, temperature=0)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text == r.choices[1].text


def test_vision_parts_are_refused_by_a_text_model(server):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    content = [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{png}"}},
    ]
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}]
        )
    assert "does not accept image input" in e.value.message
    thirteen = [{"type": "text", "text": "count"}] + [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.jpg"}}
    ] * 13
    with pytest.raises(openai.BadRequestError) as e:
        client(server).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": thirteen}]
        )
    assert "12" in e.value.message


def test_text_content_parts_work(server):
    r = client(server).chat.completions.create(
        model=MODEL, temperature=0,
        messages=[{"role": "user", "content": [{"type": "text", "text": CAPITAL}]}],
    )
    assert r.choices[0].message.content == "The capital of France is Paris."


# --- Ektos ----------------------------------------------------------------------------------------


def test_curl_with_bearer_and_models(server):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": CAPITAL}], "temperature": 0})
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", server.base + "/v1/chat/completions",
         "-H", f"Authorization: Bearer {API_KEY}", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "The capital of France is Paris."
    models = client(server).models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client(server).models.retrieve(MODEL).id == MODEL


# --- Cloudsway ----------------------------------------------------------------------------------


def test_empty_or_missing_model_uses_the_default(server):
    r = client(server).chat.completions.create(
        model="", messages=[{"role": "user", "content": CAPITAL}], temperature=0
    )
    assert r.model == MODEL and r.choices[0].message.content.startswith("The capital")
    raw = requests.post(server.base + "/v1/chat/completions", headers=auth(),
                        json={"messages": [{"role": "user", "content": CAPITAL}], "max_tokens": 3})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    for key in ("id", "object", "created", "model", "choices", "usage", "system_fingerprint"):
        assert key in body
    for key in ("finish_reason", "index", "logprobs", "message"):
        assert key in body["choices"][0]


def test_deployment_scoped_paths(server):
    c = OpenAI(base_url=server.base + "/v1/ai/my-deployment", api_key=API_KEY, max_retries=0)
    r = c.chat.completions.create(model="", messages=[{"role": "user", "content": CAPITAL}], temperature=0)
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert c.completions.create(model=MODEL, prompt="Hello", max_tokens=2).choices
    assert [m.id for m in c.models.list().data] == [MODEL]


def test_include_usage_gives_a_final_usage_chunk(server):
    chunks = list(client(server).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], stream=True,
        stream_options={"include_usage": True}, max_tokens=5,
    ))
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])


# --- Heroku ---------------------------------------------------------------------------------------


def test_raw_requests_multi_turn_history(server):
    payload = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": CAPITAL},
        ],
        "temperature": 0,
        "max_tokens": 30,
    }
    r = requests.post(server.base + "/v1/chat/completions", headers=auth(), data=json.dumps(payload))
    assert r.status_code == 200, r.text
    assert "Paris" in r.json()["choices"][0]["message"]["content"]


# --- Sampling extras ------------------------------------------------------------------------------


def test_n_seed_and_logprobs(server):
    c = client(server)
    msgs = [{"role": "user", "content": "Write a word."}]
    a = c.chat.completions.create(model=MODEL, messages=msgs, n=3, seed=7, temperature=1.0, max_tokens=12)
    b = c.chat.completions.create(model=MODEL, messages=msgs, n=3, seed=7, temperature=1.0, max_tokens=12)
    assert [x.index for x in a.choices] == [0, 1, 2]
    assert [x.message.content for x in a.choices] == [x.message.content for x in b.choices]
    r = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": CAPITAL}], temperature=0,
        logprobs=True, top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == t.logprob


# --- Errors ---------------------------------------------------------------------------------------


def error_of(resp):
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_auth_errors(server):
    bad = OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    r = requests.post(server.base + "/v1/chat/completions", json={"messages": []})
    assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"
    # Probes and scrapers need no key.
    assert requests.get(server.base + "/health").status_code == 200
    metrics = requests.get(server.base + "/metrics")
    assert metrics.status_code == 200
    assert "kiln_time_to_first_token_seconds" in metrics.text
    assert "kiln_http_requests_total" in metrics.text


def test_error_envelopes(server):
    base, h = server.base, auth()
    r = requests.post(base + "/v1/chat/completions", headers=h, data='{"messages": [')
    assert r.status_code == 400 and "line 1" in error_of(r)["message"]
    r = requests.post(base + "/v1/chat/completions", headers=h,
                      json={"messages": [{"role": "user", "content": "x"}], "temperature": 3})
    assert r.status_code == 400 and error_of(r)["param"] == "temperature"
    r = requests.post(base + "/v1/chat/completions", headers=h,
                      json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"
    r = requests.post(base + "/v1/chat/completions", headers=h,
                      json={"messages": [{"role": "user", "content": "x"}], "frobnicate": 1})
    assert r.status_code == 400 and error_of(r)["param"] == "frobnicate"
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    r = requests.get(base + "/v1/nothing-here", headers=h)
    assert r.status_code == 404 and error_of(r)
    r = requests.get(base + "/v1/chat/completions", headers=h)
    assert r.status_code == 405 and "POST" in r.headers["allow"] and error_of(r)
    r = requests.post(base + "/v1/chat/completions", headers=h, data=b"x" * (2 << 20))
    assert r.status_code == 413 and error_of(r)
    spec = requests.get(base + "/openapi.json").json()
    assert spec["openapi"].startswith("3.1") and "/v1/chat/completions" in spec["paths"]


def test_client_disconnect_cancels_the_request(server):
    def running():
        text = requests.get(server.base + "/metrics").text
        line = next(l for l in text.splitlines() if l.startswith("kiln_num_requests_running"))
        return float(line.split()[-1])

    with requests.post(server.base + "/v1/chat/completions", headers=auth(), stream=True,
                       json={"messages": [{"role": "user", "content": "Tell a long story."}],
                             "max_tokens": 3000, "stream": True,
                             "logit_bias": {"2": -100}}) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
        assert running() == 1
    deadline = time.time() + 30
    while running() != 0:
        assert time.time() < deadline, "the abandoned request is still running"
        time.sleep(0.1)


def test_overload_answers_429_with_retry_after():
    s = Server("--max-running", "1", "--max-queue", "1", api_key=None)
    try:
        body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 200,
                "logit_bias": {"2": -100}}
        results = []

        def call():
            results.append(requests.post(s.base + "/v1/chat/completions", json=body))

        threads = [threading.Thread(target=call) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert 200 in codes and 429 in codes, codes
        limited = next(r for r in results if r.status_code == 429)
        assert limited.headers["retry-after"] and error_of(limited)["type"] == "rate_limit_error"
    finally:
        assert s.stop() == 0
