"""The package reads as the flow: core → plan → engine → run → (modal | tools) → cli. Every import,
module-level or inside a function, points down the flow or within its own folder; no module
imports another that imports it back (directly or around a circle)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "llmodal"
FLOORS = {"core": 0, "plan": 1, "engine": 2, "run": 3, "modal": 4, "tools": 4, "cli": 5}


def _modules() -> dict[str, set[str]]:
    """module name → the llmodal modules it imports."""
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: a relative import (absolute ones say where the module lives)"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmodal"):
                for alias in node.names:  # `from llmodal.plan import gpus` imports the module llmodal.plan.gpus
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if (SRC.parent / (sub.replace(".", "/") + ".py")).exists() else node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("llmodal")}
        out[name] = deps - {name}
    return out


def _floor(module: str) -> tuple[str, int] | None:
    parts = module.split(".")
    return (parts[1], FLOORS[parts[1]]) if len(parts) > 2 and parts[1] in FLOORS else None


def test_every_module_lives_in_a_floor():
    loose = [p.name for p in SRC.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert loose == [], f"modules outside the floors: {loose}"


def test_imports_only_point_down_the_flow():
    upward = []
    for mod, deps in _modules().items():
        here = _floor(mod)
        if here is None:  # llmodal/__init__.py: the public façade may reach any floor
            continue
        for dep in deps:
            there = _floor(dep)
            if there and there[0] != here[0] and there[1] >= here[1]:  # noqa
                upward.append(f"{mod} → {dep}")
    assert upward == [], upward


def test_no_circles():
    graph = _modules()
    seen, stack, circles = set(), [], []

    def visit(m):
        if m in stack:
            circles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in graph.get(m, ()):
            if d in graph and d != "llmodal":
                visit(d)
        stack.pop()

    for m in graph:
        visit(m)
    assert circles == [], circles


def test_the_guard_loads_into_vllms_process_without_the_rest_of_llmodal():
    """vLLM's API process imports the guard while it starts (part of every cold and warm start): the
    package init pulled the client, httpx and the config in with it (~0.1 s there on this CPU)."""
    import subprocess
    import sys

    code = "import sys, llmodal.engine.auth; print(' '.join(m for m in sys.modules if m.startswith('llmodal')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert loaded == {"llmodal", "llmodal.core", "llmodal.core.constants", "llmodal.engine", "llmodal.engine.auth"}
