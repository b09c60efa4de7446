"""End-to-end: one `kiln serve` serving two models — the default model (SmolLM2) and a tiny
random SmolVLM — from `--model` flags and from a config file's `[[models]]`, driven by the
official `openai` client: `/v1/models` lists both with what a client needs, `model` routes (the
greedy answer of SmolLM2 is the golden one, the vision model takes images and SmolLM2 refuses
them), an empty `model` goes to the default, deployments map to a model, `/health` lists both,
metrics carry a `model` label, and bad configurations fail at start with a clear message."""

import base64
import json
import os
import subprocess

import openai
import pytest
import requests
from openai import OpenAI

from conftest import API_KEY, ROOT, Server

TINY = os.path.join(ROOT, "testdata", "tiny-smolvlm")
SMOL = "SmolLM2-135M-Instruct"
VLM = "tiny-vlm"
DEPLOYMENT = "sVUARttwSjilLOZY"


def image_url():
    with open(os.path.join(TINY, "small_20x14.png"), "rb") as f:
        return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def client(server, deployment=None):
    path = f"/v1/ai/{deployment}" if deployment else "/v1"
    return OpenAI(base_url=server.base + path, api_key=API_KEY, max_retries=0)


def auth():
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def two():
    s = Server("--model", f"{SMOL}={default_model()}",
               "--model", f"{VLM}={TINY}", "--deployment", f"{DEPLOYMENT}={VLM}",
               "--kv-cache-dtype", "f32")
    yield s
    assert s.stop() == 0


def default_model():
    return os.environ["KILN_DEFAULT_MODEL"]


def test_models_lists_both_with_what_a_client_needs(two):
    models = client(two).models.list().data
    assert [m.id for m in models] == [SMOL, VLM]
    smol, vlm = (m.model_dump() for m in models)
    assert smol["input_modalities"] == ["text"] and "max_images_per_request" not in smol
    assert vlm["input_modalities"] == ["text", "image"] and vlm["max_images_per_request"] == 12
    assert smol["context_length"] == 8192 and vlm["context_length"] > 0
    assert all(m.owned_by == "kiln" and m.created > 0 for m in models)
    assert client(two).models.retrieve(VLM).id == VLM


def test_model_routes_and_empty_goes_to_the_default(two, golden):
    c = client(two)
    case = golden["prompts"]["english"]
    r = c.completions.create(model=SMOL, prompt=case["text"], max_tokens=len(case["greedy_ids"]),
                             temperature=0)
    assert r.choices[0].text == case["greedy_text"]
    r = c.chat.completions.create(model=SMOL, temperature=0, max_tokens=12,
                                  messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r.model == SMOL
    assert "Paris" in r.choices[0].message.content
    # The empty name is the default model: the same greedy answer.
    r2 = c.chat.completions.create(model="", temperature=0, max_tokens=12,
                                   messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r2.model == SMOL and r2.choices[0].message.content == r.choices[0].message.content
    # The vision model takes an image, SmolLM2 refuses it.
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": image_url()}}]
    r = c.chat.completions.create(model=VLM, max_tokens=4, temperature=0,
                                  messages=[{"role": "user", "content": content}])
    assert r.model == VLM and r.usage.prompt_tokens > 20
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=SMOL, max_tokens=4,
                                  messages=[{"role": "user", "content": content}])
    assert e.value.code == "image_input_not_supported"
    with pytest.raises(openai.NotFoundError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"


def test_a_deployment_serves_its_model(two):
    d = client(two, DEPLOYMENT)
    assert [m.id for m in d.models.list().data] == [VLM]
    r = d.chat.completions.create(model="", max_tokens=3, temperature=0,
                                  messages=[{"role": "user", "content": "hi"}])
    assert r.model == VLM
    with pytest.raises(openai.NotFoundError) as e:
        d.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}])
    assert VLM in e.value.message
    with pytest.raises(openai.NotFoundError):
        client(two, "someone-else").models.list()


def test_health_lists_every_model_and_metrics_carry_the_model(two):
    h = requests.get(two.base + "/health").json()
    assert h == {"status": "ok", "models": [{"id": SMOL, "status": "ok"}, {"id": VLM, "status": "ok"}]}
    client(two).completions.create(model=VLM, prompt="a", max_tokens=2)
    metrics = requests.get(two.base + "/metrics").text
    for name in (SMOL, VLM):
        assert f'kiln_num_requests_running{{model="{name}"}} 0' in metrics, metrics
    generated = {}
    for line in metrics.splitlines():
        if line.startswith("kiln_generation_tokens_total{"):
            label, value = line.split(" ")
            generated[label.split('"')[1]] = float(value)
    assert generated[VLM] >= 2


def test_models_from_the_config_file(tmp_path):
    config = tmp_path / "kiln.toml"
    config.write_text(
        f'kv_cache_dtype = "f32"\n'
        f'deployments = {{ dep = "vlm" }}\n\n'
        f'[[models]]\npath = "{TINY}"\nserved_model_name = ["vlm", "vlm-alias"]\n'
        f'kv_cache_tokens = 512\nmax_model_len = 200\n\n'
        f'[[models]]\npath = "{default_model()}"\nserved_model_name = "smol"\n'
        f'kv_cache_memory = "64MiB"\n')
    s = Server("--config", str(config))
    try:
        c = client(s)
        models = c.models.list().data
        assert [m.id for m in models] == ["vlm", "vlm-alias", "smol"]
        assert models[0].model_dump()["context_length"] == 200
        r = c.completions.create(model="", prompt="Hello", max_tokens=2)
        assert r.model == "vlm"
        r = client(s, "dep").completions.create(model="vlm-alias", prompt="Hello", max_tokens=2)
        assert r.model == "vlm-alias"
        assert c.completions.create(model="smol", prompt="Hello", max_tokens=2).model == "smol"
    finally:
        assert s.stop() == 0


def run_kiln(*args):
    env = dict(os.environ, KILN_LOG="warn")
    return subprocess.run([os.environ["KILN_BIN"], "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_bad_configurations_fail_at_start_with_a_clear_message():
    # Two models under one name.
    r = run_kiln("--model", f"x={TINY}", "--model", f"x={TINY}")
    assert r.returncode != 0 and "the name `x` is given to two served models" in r.stderr, r.stderr
    # A deployment naming no served model.
    r = run_kiln("--model", f"x={TINY}", "--deployment", "d=nobody")
    assert r.returncode != 0 and "`nobody`" in r.stderr, r.stderr
    # KV budgets that cannot fit in this machine's memory, refused before anything loads.
    r = run_kiln("--model", f"a={TINY}", "--model", f"b={TINY}", "--kv-cache-memory", "1000000GiB")
    assert r.returncode != 0 and "would take" in r.stderr and "available" in r.stderr, r.stderr
