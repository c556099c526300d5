"""The guide's curl tests as one command, against any OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import time
import httpx

from llmodal.core import constants as C
from llmodal.core.checks import Check
from llmodal.tools.client import Endpoint


def _timed(name: str, fn) -> Check:
    t0 = time.monotonic()
    try:
        ok, detail = fn()
    except Exception as e:  # a check that raises is a failed check, reported by its type and text
        ok, detail = False, f"{type(e).__name__}: {str(e)[:200]}"
    return Check(name, ok, detail, seconds=time.monotonic() - t0)


def run_smoke(ep: Endpoint, *, max_tokens: int = C.GUIDE_MAX_TOKENS, timeout: float = 300.0) -> list[Check]:
    import openai

    checks: list[Check] = []
    if not ep.api_key:
        checks.append(Check("api key configured", False, "no key", "pass --api-key or set VLLM_API_KEY in .env",
                            seconds=0.0))
    oa = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key or "EMPTY", timeout=timeout, max_retries=0)
    model = ep.model

    def models():
        nonlocal model
        ids = [m.id for m in oa.models.list().data]
        if model is None and ids:
            model = ids[0]
        return (model in ids), f"served: {', '.join(ids)}" + ("" if model in ids else f"; {model!r} missing")

    def chat_body():
        return dict(model=model, messages=[{"role": "user", "content": C.GUIDE_PROMPT}],
                    temperature=C.GUIDE_TEMPERATURE, max_tokens=max_tokens)

    def chat():
        r = oa.chat.completions.create(**chat_body())
        text = r.choices[0].message.content or ""
        return bool(text) and r.usage.completion_tokens > 0, (
            f"{r.usage.completion_tokens} tokens, finish={r.choices[0].finish_reason}")

    def stream():
        chunks, text = 0, ""
        for ev in oa.chat.completions.create(**chat_body(), stream=True):
            if ev.choices and ev.choices[0].delta.content:
                chunks += 1
                text += ev.choices[0].delta.content
        return chunks > 1 and bool(text), f"{chunks} content chunks"

    def named_tool():
        # Constrained by vLLM to the schema: holds for any model served with a tool-call parser.
        tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Tokyo"]}},
            "required": ["city"], "additionalProperties": False}}}
        r = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                       tools=[tool], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                       max_tokens=200, temperature=1.0, seed=7)
        calls = r.choices[0].message.tool_calls or []
        args = json.loads(calls[0].function.arguments) if calls else {}
        ok = bool(calls) and calls[0].function.name == "get_weather" and args.get("city") in ("Paris", "Tokyo")
        return ok, f"get_weather({calls[0].function.arguments})" if calls else "no tool call"

    def json_schema():
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                  "additionalProperties": False}
        r = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Answer in JSON."}],
                                       max_tokens=32, temperature=0, response_format={
                                           "type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
        data = json.loads(r.choices[0].message.content or "null")
        return isinstance(data, dict) and isinstance(data.get("ok"), bool), (r.choices[0].message.content or "")[:60]

    def status_without(headers: dict[str, str]):
        r = httpx.get(f"{ep.base_url}/models", headers=headers, timeout=30)
        return r.status_code == 401, f"HTTP {r.status_code} (want 401)"

    checks.append(_timed("GET /v1/models lists the model", models))
    checks.append(_timed("chat completion (guide's request)", chat))
    checks.append(_timed("streamed chat completion", stream))
    checks.append(_timed("named tool call is schema-valid", named_tool))
    checks.append(_timed("response_format json_schema", json_schema))
    checks.append(_timed("no key → 401", lambda: status_without({})))
    checks.append(_timed("wrong key → 401",
                         lambda: status_without({"Authorization": "Bearer wrong-" + str(time.time_ns())})))
    return checks
