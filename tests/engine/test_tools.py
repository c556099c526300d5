"""Tool calling and the OpenAI surface agent frameworks use, through the openai SDK, real engine.

The tiny model's weights are random, so what it *says* is noise; what these tests check is what
vLLM guarantees with the flags llmodal sets: every tool_choice mode answers 200, and with
``required`` or a named function the arguments are constrained to the function's schema
(``--tool-strict-level parameter``). Sampling is at temperature 1 with a seed: greedy decoding of
random weights loops on the whitespace JSON allows between tokens and never closes the object.
"""

import json

import openai
import pytest

from conftest import TEST_KEY

pytestmark = pytest.mark.server

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
        "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city", "unit"],
        "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}},
                   "required": ["city"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def _oa(server):
    return openai.OpenAI(base_url=server.base_url, api_key=TEST_KEY, max_retries=0, timeout=180)


def _valid(name: str, arguments: str) -> bool:
    schema = SCHEMAS[name]
    args = json.loads(arguments)
    return (set(args) == set(schema["required"])
            and all(args[k] in schema["properties"][k]["enum"] for k in args))


def _ask(server, tool_choice, stream=False, **kw):
    return _oa(server).chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=TOOLS, tool_choice=tool_choice, max_tokens=300, temperature=1.0, seed=7, stream=stream, **kw)


def _reassemble(stream) -> tuple[list[dict], str, object]:
    """Tool-call deltas joined by index, the text, and the final usage."""
    calls: dict[int, dict] = {}
    text, usage = "", None
    for ev in stream:
        usage = ev.usage or usage
        if not ev.choices:
            continue
        d = ev.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            c = calls.setdefault(tc.index, {"name": "", "arguments": ""})
            if tc.function and tc.function.name:
                c["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                c["arguments"] += tc.function.arguments
    return [calls[i] for i in sorted(calls)], text, usage


NAMED = {"type": "function", "function": {"name": "get_time"}}


def _calls_of(message) -> list[tuple[str, str]]:
    """(name, arguments) of each call. With random weights the model may keep talking after the
    constrained call closes (a real model ends its turn there); vLLM's parser then leaves the
    text in ``content``, so read the constrained call from the start of it."""
    if message.tool_calls:
        return [(c.function.name, c.function.arguments) for c in message.tool_calls]
    obj, _ = json.JSONDecoder().raw_decode(message.content or "")
    return [(obj["name"], json.dumps(obj["parameters"]))]


@pytest.mark.parametrize("choice,expect", [("required", None), (NAMED, "get_time")])
def test_forced_tool_calls_are_schema_valid(server, choice, expect):
    r = _ask(server, choice)
    calls = _calls_of(r.choices[0].message)
    assert calls, r.choices[0].message
    for name, arguments in calls:
        assert name in SCHEMAS and _valid(name, arguments), (name, arguments)
        assert expect is None or name == expect


@pytest.mark.parametrize("choice,expect", [("required", None), (NAMED, "get_time")])
def test_forced_tool_calls_stream_and_reassemble(server, choice, expect):
    calls, _, usage = _reassemble(_ask(server, choice, stream=True))
    assert calls
    for c in calls:
        assert _valid(c["name"], c["arguments"]), c
        assert expect is None or c["name"] == expect
    assert usage is not None and usage.completion_tokens > 0  # usage in every stream, unasked


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["auto", "none"])
def test_auto_and_none_answer_200(server, choice, stream):
    r = _ask(server, choice, stream=stream)  # raises on any non-2xx
    if stream:
        calls, _, _ = _reassemble(r)
    else:
        calls = r.choices[0].message.tool_calls or []
    if choice == "none":
        assert not calls
    for c in calls:  # auto may or may not call; a call it makes must still name a known tool
        assert (c["name"] if isinstance(c, dict) else c.function.name) in SCHEMAS


def test_parallel_tool_calls_false_gives_at_most_one(server):
    r = _ask(server, "required", parallel_tool_calls=False)
    assert len(_calls_of(r.choices[0].message)) == 1


def test_response_format_json_schema_is_valid(server):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                                               "sure": {"type": "boolean"}},
              "required": ["answer", "sure"], "additionalProperties": False}
    r = _oa(server).chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Is water wet?"}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}})
    data = json.loads(r.choices[0].message.content)
    assert data["answer"] in ("yes", "no") and isinstance(data["sure"], bool)


def test_usage_is_in_every_stream_without_asking(server):
    chunks = list(_oa(server).chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True))
    assert any(c.usage and c.usage.completion_tokens == 8 for c in chunks)
