"""End-to-end: structured outputs (`response_format`) on the real default model through the real
server, with the official client's own helpers: `chat.completions.parse` with Pydantic models
(nested objects, arrays, enums, bounded numbers, optional fields), JSON mode, seeded sampling
at temperature 1, streaming, n > 1, logprobs, max_tokens, the legacy API's extension, and the
400s for what cannot be enforced."""

import enum
import json
import math
from typing import Annotated, Literal, Optional

import openai
import pytest
import requests
from openai import OpenAI
from pydantic import BaseModel, Field

from conftest import API_KEY


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=120)


class Address(BaseModel):
    city: str = Field(max_length=30)
    country: str = Field(max_length=30)


class Customer(BaseModel):
    name: str = Field(max_length=30)
    address: Address


class Recipe(BaseModel):
    title: str = Field(max_length=40)
    ingredients: list[Annotated[str, Field(max_length=30)]] = Field(min_length=1, max_length=4)


class Priority(str, enum.Enum):
    low = "low"
    medium = "medium"
    high = "high"


class Ticket(BaseModel):
    summary: str = Field(max_length=60)
    priority: Priority
    kind: Literal["bug", "feature"]


class Measurement(BaseModel):
    celsius: float = Field(ge=-50, le=60)
    humidity: int = Field(ge=0, le=100)


class Profile(BaseModel):
    username: str = Field(max_length=20)
    nickname: Optional[str] = Field(default=None, max_length=20)
    website: Optional[str] = Field(default=None, max_length=40)


CASES = [
    (Person, "Invent a person. Give their name and age."),
    (Customer, "Invent a customer who lives in Paris, France."),
    (Recipe, "Give a short recipe for pancakes."),
    (Ticket, "File a ticket: the login button does nothing when clicked."),
    (Measurement, "Report today's weather in Lisbon: temperature and humidity."),
    (Profile, "Make a user profile for someone called alice."),
]


@pytest.mark.parametrize("model,question", CASES, ids=[c[0].__name__ for c in CASES])
def test_parse_returns_the_pydantic_object(client, model, question):
    r = client.chat.completions.parse(
        model="", messages=[{"role": "user", "content": question}],
        response_format=model, temperature=0, max_tokens=300)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, model), choice.message.content
    # What was parsed is the text itself, in the layout the server promises.
    assert model.model_validate_json(choice.message.content) == choice.message.parsed
    assert json.loads(choice.message.content) == json.loads(json.dumps(json.loads(choice.message.content)))


def test_twenty_sampled_runs_all_validate(client):
    texts = set()
    for seed in range(20):
        r = client.chat.completions.parse(
            model="", messages=[{"role": "user", "content": "Invent a person."}],
            response_format=Ticket, temperature=1, seed=seed, max_tokens=300)
        c = r.choices[0]
        assert c.finish_reason == "stop" and isinstance(c.message.parsed, Ticket), c.message.content
        texts.add(c.message.content)
    assert len(texts) > 5  # sampled, not forced


def test_json_mode_always_gives_an_object(client):
    for i, question in enumerate(["Reply with a JSON object holding one key, `ok`, set to true.",
                                  "Give the capital of France as JSON.",
                                  "A JSON object with the numbers one to three."]):
        r = client.chat.completions.create(
            model="", messages=[{"role": "user", "content": question}],
            response_format={"type": "json_object"}, temperature=1, seed=i, max_tokens=400)
        c = r.choices[0]
        assert c.finish_reason == "stop", c.message.content
        assert isinstance(json.loads(c.message.content), dict), c.message.content


def schema_format(model):
    return {"type": "json_schema",
            "json_schema": {"name": model.__name__, "schema": model.model_json_schema(), "strict": True}}


def test_streaming_gives_the_same_object_as_the_whole_response(client):
    args = dict(model="", messages=[{"role": "user", "content": "Invent a person."}],
                temperature=1, seed=11, max_tokens=300)
    whole = client.chat.completions.parse(response_format=Person, **args)
    with client.chat.completions.stream(response_format=Person, **args) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == whole.choices[0].message.parsed
    assert final.choices[0].message.content == whole.choices[0].message.content


def test_every_choice_of_n_and_its_logprobs(client):
    r = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Invent a person."}],
        response_format=schema_format(Person), n=3, temperature=1, seed=5, max_tokens=300,
        logprobs=True, top_logprobs=3)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "stop"
        Person.model_validate_json(c.message.content)
        tokens = c.logprobs.content
        assert "".join(t.token for t in tokens) == c.message.content
        for t in tokens:
            # Logprobs of the masked distribution: what the schema allows shares all the mass.
            assert sum(math.exp(a.logprob) for a in t.top_logprobs) <= 1 + 1e-4
            assert t.logprob <= 0


def test_max_tokens_cuts_with_length(client):
    r = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Invent a person."}],
        response_format=schema_format(Person), temperature=0, max_tokens=4)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content.startswith('{"name": "')
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(
            model="", messages=[{"role": "user", "content": "Invent a person."}],
            response_format=Person, temperature=0, max_tokens=4)


def test_legacy_completions_take_response_format_as_an_extension(client):
    r = client.completions.create(
        model="", prompt="The colour of the sky is", max_tokens=20, temperature=0,
        extra_body={"response_format": {"type": "json_schema", "json_schema": {
            "name": "colour", "schema": {"enum": ["blue", "green", "red"]}}}})
    assert r.choices[0].text in ['"blue"', '"green"', '"red"'] and r.choices[0].finish_reason == "stop"


def bad(server, response_format, endpoint="chat/completions"):
    body = {"response_format": response_format, "max_tokens": 5}
    if endpoint == "completions":
        body["prompt"] = "x"
    else:
        body["messages"] = [{"role": "user", "content": "x"}]
    r = requests.post(f"{server.base}/v1/{endpoint}", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    return r.json()["error"]


def test_what_cannot_be_enforced_is_a_400_naming_it(server):
    e = bad(server, {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "array", "uniqueItems": True}}})
    assert e["param"] == "response_format.json_schema.schema" and "uniqueItems" in e["message"]
    assert e["type"] == "invalid_request_error"
    e = bad(server, {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "string", "pattern": "(unclosed"}}}, "completions")
    assert e["param"] == "response_format.json_schema.schema" and "regex" in e["message"]
    e = bad(server, {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "integer", "minimum": 3, "maximum": 1}}})
    assert "minimum" in e["message"]
    assert bad(server, {"type": "yaml"})["param"] == "response_format.type"
    assert bad(server, {"type": "json_schema"})["param"] == "response_format.json_schema"
    assert bad(server, {"type": "json_schema", "json_schema": {"schema": {}}})["param"] == \
        "response_format.json_schema.name"
    assert bad(server, {"type": "json_object", "schema": {}})["code"] == "unknown_parameter"
