"""End-to-end: tool calling on the real default model (SmolLM2, whose template knows no tools, so
Kiln's generic Hermes prompt) through the real server, with the official openai client and with
LangChain: `required` and named calls with schema-valid arguments, a full two-turn tool loop,
streamed deltas that reassemble (with the SDK's stream helper) into the non-streamed call, n > 1,
`none`, LangChain's `bind_tools` loop and `with_structured_output` (json_schema and
function_calling), and the 400s."""

import json
from typing import Literal

import pytest
import requests
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import OpenAI
from pydantic import BaseModel, Field

from conftest import API_KEY


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key=API_KEY, max_retries=0)


class WeatherArgs(BaseModel, extra="forbid"):
    city: str = Field(max_length=30)
    unit: Literal["celsius", "fahrenheit"]


class AddArgs(BaseModel, extra="forbid"):
    a: int = Field(ge=-1000, le=1000)
    b: int = Field(ge=-1000, le=1000)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": WeatherArgs.model_json_schema()}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.", "parameters": AddArgs.model_json_schema()}}
ARGS = {"get_weather": WeatherArgs, "add": AddArgs}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def check_call(call, names=("get_weather", "add")):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in names
    return ARGS[call.function.name].model_validate_json(call.function.arguments)


def test_required_gives_schema_valid_calls(client):
    for seed in range(5):
        r = client.chat.completions.create(
            model="", messages=QUESTION, tools=[WEATHER, ADD], tool_choice="required",
            temperature=1, seed=seed, max_tokens=200, parallel_tool_calls=False)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", c
        assert len(c.message.tool_calls) == 1, c
        check_call(c.message.tool_calls[0])


def test_a_named_function_is_the_one_called(client):
    r = client.chat.completions.create(
        model="", messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        tools=[WEATHER, ADD], tool_choice={"type": "function", "function": {"name": "add"}},
        temperature=0, max_tokens=100)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    assert len(c.message.tool_calls) == 1
    check_call(c.message.tool_calls[0], names=("add",))


def test_two_turn_tool_loop(client):
    messages = list(QUESTION)
    first = client.chat.completions.create(
        model="", messages=messages, tools=[WEATHER], tool_choice="required", temperature=0,
        max_tokens=100, parallel_tool_calls=False)
    msg = first.choices[0].message
    assert len(msg.tool_calls) == 1
    args = check_call(msg.tool_calls[0], names=("get_weather",))
    # The assistant message goes back as the client got it, then the tool's result.
    messages.append(msg.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id,
                     "content": json.dumps({"city": args.city, "temperature": 21, "sky": "clear"})})
    final = client.chat.completions.create(
        model="", messages=messages, tools=[WEATHER], temperature=0, max_tokens=60)
    c = final.choices[0]
    assert c.finish_reason in ("stop", "length"), c
    assert c.message.tool_calls is None and c.message.content.strip(), c
    assert "<tool_call>" not in c.message.content


def test_streamed_calls_reassemble_into_the_whole_answer(client):
    kwargs = dict(model="", messages=QUESTION, tools=[WEATHER, ADD], tool_choice="required",
                  temperature=0, max_tokens=200)
    whole = client.chat.completions.create(**kwargs).choices[0].message
    with client.chat.completions.stream(**kwargs) as stream:
        deltas = []
        for event in stream:
            if event.type == "chunk" and event.chunk.choices:
                deltas.extend(event.chunk.choices[0].delta.tool_calls or [])
        final = stream.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls"
    got = [(c.function.name, c.function.arguments) for c in final.message.tool_calls]
    assert got == [(c.function.name, c.function.arguments) for c in whole.tool_calls]
    # Each call's first delta names it; the rest carry only argument text.
    seen = set()
    for d in deltas:
        if d.index not in seen:
            seen.add(d.index)
            assert d.id and d.type == "function" and d.function.name, d
        else:
            assert d.id is None and d.type is None and d.function.name is None, d
    assert len(seen) == len(got)


def test_every_choice_of_n_calls(client):
    r = client.chat.completions.create(
        model="", messages=QUESTION, tools=[WEATHER], tool_choice="required", n=3,
        temperature=1, seed=11, max_tokens=100, parallel_tool_calls=False)
    assert len(r.choices) == 3
    for c in r.choices:
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
        check_call(c.message.tool_calls[0], names=("get_weather",))


def test_none_never_calls(client):
    r = client.chat.completions.create(
        model="", messages=QUESTION, tools=[WEATHER], tool_choice="none", temperature=0,
        max_tokens=40)
    c = r.choices[0]
    assert c.message.tool_calls is None and c.finish_reason in ("stop", "length")
    assert c.message.content


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """Get the current weather in a city."""
    return json.dumps({"city": city, "temperature": 21, "unit": unit})


def chat_model(server, **kwargs):
    models = requests.get(f"{server.base}/v1/models", timeout=10,
                          headers={"Authorization": f"Bearer {API_KEY}"}).json()
    return ChatOpenAI(base_url=server.base + "/v1", api_key=API_KEY,
                      model=models["data"][0]["id"], temperature=0, max_retries=0, **kwargs)


def test_langchain_bind_tools_loop(server):
    llm = chat_model(server, max_tokens=100).bind_tools([get_weather], tool_choice="required")
    messages = [HumanMessage("What is the weather like in Paris today?")]
    ai = llm.invoke(messages)
    assert len(ai.tool_calls) >= 1, ai
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    messages += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = chat_model(server, max_tokens=60).bind_tools([get_weather]).invoke(messages)
    assert not final.tool_calls and final.content.strip(), final


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(server, method):
    # `function_calling` goes through a named tool (tool_choice by name), `json_schema` through
    # response_format: both give the Pydantic object back.
    llm = chat_model(server, max_tokens=100).with_structured_output(City, method=method)
    city = llm.invoke("Name a famous city and its country.")
    assert isinstance(city, City) and city.name and city.country


def bad(server, **body):
    body.setdefault("messages", [{"role": "user", "content": "x"}])
    body.setdefault("max_tokens", 5)
    r = requests.post(f"{server.base}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    assert r.status_code == 400, r.text
    e = r.json()["error"]
    assert e["type"] == "invalid_request_error"
    return e


def test_what_cannot_work_is_a_400_naming_it(server):
    named = lambda name: {"type": "function", "function": {"name": name}}
    assert bad(server, tools=[WEATHER], tool_choice=named("add"))["param"] == \
        "tool_choice.function.name"
    unenforceable = {"type": "function", "function": {"name": "tag", "parameters": {
        "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}}}
    e = bad(server, tools=[WEATHER, unenforceable], tool_choice="required")
    assert e["param"] == "tools[1].function.parameters" and "uniqueItems" in e["message"]
    assert bad(server, tool_choice="required")["param"] == "tool_choice"
    assert bad(server, tools=[WEATHER, WEATHER])["param"] == "tools[1].function.name"
    assert bad(server, tools=[{"type": "code_interpreter"}])["param"] == "tools[0].type"
    assert bad(server, tools=[WEATHER], tool_choice="sometimes")["param"] == "tool_choice"
    e = bad(server, messages=[{"role": "user", "content": "x"},
                              {"role": "tool", "tool_call_id": "call_x", "content": "1"}])
    assert e["param"] == "messages[1].tool_call_id"
    assert bad(server, functions=[{"name": "f"}])["param"] == "functions"
