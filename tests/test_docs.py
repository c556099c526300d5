"""The docs say what the code does: every message they quote from llmodal is one the code can print, and the numbers
README and docs/RELIABILITY.md give for the deployment are the ones the deploy path sends."""

import ast
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# How the docs present llmodal's own output: a span in backticks (``…`` when it holds backticks) or double quotes
# that starts with one of its message heads or reads `NAME=value is invalid (why)`, or that follows "exit 1 with",
# "one line:", "out of memory:" and the like. A quote from another source carries its URL right after it.
HEADS = ("llmodal: ", "fast boot: ", "refusing ", "warning: ", "extrapolated: ", "error: ")
COMMAND = re.compile(r"^([A-Z_]+=\S* )*(llmodal\s|python\s|modal\s|bash\s|curl\s|uv\s|pip\s|\.venv/|\S+\.py\b|-)")
ELLIPSIS = re.compile(r"…|\.\.\.")  # where the docs leave part of a message out


def quoted_messages() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        text = re.sub(r"```.*?```", lambda m: " " * len(m.group(0)), path.read_text(), flags=re.S)
        for m in re.finditer(r"``(.+?)``|`([^`\n]+)`|\"([^\"]+?)\"", text):
            q = " ".join(next(g for g in m.groups() if g is not None).split())
            before, after = text[max(0, m.start() - 12):m.start()], text[m.end():m.end() + 8]
            if len(q.split()) < 4 or after.lstrip().startswith("(http") or COMMAND.match(q):
                continue
            if q.startswith(HEADS) or " is invalid (" in q or re.search(r"(:\s|\bwith\s|\bline:\s)$", before):
                found.append((path.name, q))
    return found


def source_pieces() -> set[str]:
    """Every string literal in src/llmodal, f-strings cut at their placeholders (what is printed verbatim)."""
    out = set()
    for py in (ROOT / "src" / "llmodal").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            parts = node.values if isinstance(node, ast.JoinedStr) else [node]
            out |= {" ".join(p.value.split()) for p in parts
                    if isinstance(p, ast.Constant) and isinstance(p.value, str)}
    return {p for p in out if len(p) >= 3}


def printed_by_the_code(message: str, pieces: set[str]) -> bool:
    """Every letter of ``message`` comes from a literal of the source, whole, in order (a value the code fills in —
    a number, a GPU name, a variable — is itself a literal or holds no letters); only at the quote's two ends and
    beside its ellipses may a literal be cut."""
    for seg in ELLIPSIS.split(message):
        if any(seg in p for p in pieces):  # this part lies inside one literal
            continue
        n = len(seg)
        reach = [False] * (n + 1)
        reach[0] = True
        for p in pieces:  # the quote (or the part after an ellipsis) may begin inside a literal
            for k in range(1, len(p)):
                if seg.startswith(p[k:]):
                    reach[len(p) - k] = True
        for i in range(n):
            if not reach[i]:
                continue
            if not (seg[i].isalpha() or seg[i] == "_"):
                reach[i + 1] = True
            for p in pieces:
                if seg.startswith(p, i):
                    reach[i + len(p)] = True
                elif p.startswith(seg[i:]):  # ...and end inside one
                    reach[n] = True
        if not reach[n]:
            return False
    return True


def test_every_message_the_docs_quote_is_one_the_code_prints():
    pieces = source_pieces()
    quoted = quoted_messages()
    texts = [q for _, q in quoted]
    # The extractor sees the messages the docs quote (so this cannot pass by finding none)…
    assert any(q.startswith("VLLM_SERVER_API_KEY=<hidden> is invalid (") for q in texts), texts
    assert any(q.startswith("fast boot: the snapshot-side start failed") for q in texts), texts
    assert len(quoted) >= 8, quoted
    # …and the check refuses a message the code no longer prints (the one docs/RELIABILITY.md quoted before).
    assert not printed_by_the_code("VLLM_SERVER_API_KEY=<hidden> is invalid (leading or trailing whitespace)", pieces)
    assert not printed_by_the_code("fast boot: the snapshot-side start broke: …", pieces)
    stale = [(doc, q) for doc, q in quoted if not printed_by_the_code(q, pieces)]
    assert stale == [], stale


def test_the_quoted_key_refusal_is_what_a_bad_key_prints():
    from llmodal.core.config import load_settings
    from llmodal.core.errors import ConfigError

    quote = next(q for _, q in quoted_messages() if q.startswith("VLLM_SERVER_API_KEY=<hidden> is invalid"))
    for bad in (" leading", "trailing ", "in side", "a,,b"):
        with pytest.raises(ConfigError) as e:
            load_settings(None, server_api_key=bad)
        assert str(e.value).startswith(quote), (str(e.value), quote)


@pytest.fixture
def deployed(monkeypatch):
    """The app `modal deploy modal_vllm.py` (and `llmodal deploy`) sends with the default settings: its spec and
    settings, computed by the packaged app module itself."""
    import os

    for k in [k for k in os.environ if k.startswith(("VLLM_", "LLMODAL_", "MODAL_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("LLMODAL_ENV_FILE", "")
    sys.modules.pop("llmodal.modal.app", None)
    m = importlib.import_module("llmodal.modal.app")
    yield m
    sys.modules.pop("llmodal.modal.app", None)


def _one(pattern: str, text: str) -> tuple[int, ...]:
    hits = re.findall(pattern, " ".join(text.split()))
    assert len(hits) == 1, (pattern, hits)
    return tuple(int(x.replace(",", "")) for x in (hits[0] if isinstance(hits[0], tuple) else (hits[0],)))


def test_the_deploy_numbers_in_the_docs_are_what_the_deploy_sends(deployed):
    from llmodal.engine.launch import CPU_QUEUE_LIMIT
    from llmodal.modal.spec import MAX_DRAIN_S

    spec, settings = deployed.spec, deployed.settings
    fk = spec.function_kwargs
    readme = (ROOT / "README.md").read_text()
    rel = (ROOT / "docs" / "RELIABILITY.md").read_text()
    for text in (readme, rel):  # every Modal concurrency the docs write out as code
        for n in re.findall(r"max_inputs=(\d+)", text):
            assert int(n) == spec.concurrent_inputs, n
    assert _one(r"max_inputs=\d+\)` \(1\.5 × the plan's queue limit of (\d+)\)", readme) == (settings.queue_limit,)
    assert _one(r"`LLMODAL_MAX_CONCURRENT_INPUTS`, `LLMODAL_MIN_CONTAINERS`, `LLMODAL_MAX_CONTAINERS` \| 1\.5 × the "
                r"plan's queue limit \((\d+) on the guide's A100\), (\d+), (\d+) \|", readme) == (
        spec.concurrent_inputs, fk["min_containers"], fk["max_containers"])
    assert _one(r"`LLMODAL_QUEUE_LIMIT` \| from the plan \([^)]*; (\d+) on the guide's A100; (\d+) on the CPU\)",
                readme) == (settings.queue_limit, CPU_QUEUE_LIMIT)
    assert _one(r"`LLMODAL_SCALEDOWN_WINDOW`, `LLMODAL_TIMEOUT` \| (\d+), (\d+) \|", readme) == (
        fk["scaledown_window"], fk["timeout"])
    assert _one(r"timeout (\d+) h, scale-down after (\d+) idle minutes, web startup timeout (\d+) min", readme) == (
        fk["timeout"] / 3600, fk["scaledown_window"] / 60, spec.startup_timeout / 60)
    assert _one(r"`LLMODAL_DRAIN_TIMEOUT` \| (\d+) \| seconds in-flight requests may finish on SIGTERM: 0 … 600 for "
                r"`llmodal serve`; 0 … (\d+) on Modal", readme) == (settings.drain_timeout_s, MAX_DRAIN_S)
    assert _one(r"timeout ([\d,]+) s, scale-down ([\d,]+) s, startup timeout ([\d,]+) s, (\d+) concurrent inputs",
                rel) == (fk["timeout"], fk["scaledown_window"], spec.startup_timeout, spec.concurrent_inputs)
    assert _one(r"GPU concurrency (\d+) \(was 64 on the guide's command\), gateway (\d+), the same handed-over "
                r"settings \(queue limit (\d+)\)", rel) == (spec.concurrent_inputs, spec.gateway_inputs,
                                                           settings.queue_limit)
    assert _one(r"half as much again \((\d+) for the guide's A100\)", rel) == (spec.concurrent_inputs,)
    assert _one(r"sends the same (\d+); only where no plan can be made", rel) == (spec.concurrent_inputs,)


def test_the_launch_docstring_names_the_variables_the_keys_travel_in():
    """engine/launch.py says how the keys reach vLLM's process: each variable it names is one the launch sets."""
    import llmodal.engine.launch as launch
    from llmodal.core.config import load_settings

    named = set(re.findall(r"``([A-Z][A-Z0-9_]+)``", launch.__doc__))
    s = load_settings(None, server_api_key="k" * 32)
    plain, fast_boot = launch.build_launch(s), launch.build_launch(s, keys_file="/tmp/keys", control_key=True)
    assert named and named <= set(plain.env) | set(fast_boot.env), named
    assert "k" * 32 not in " ".join(plain.argv) and plain.env["LLMODAL_API_KEYS"] == "k" * 32
