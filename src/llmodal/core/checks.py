"""One result type for every checklist llmodal prints: ``smoke`` and ``doctor``."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be checked here (not a failure)
    detail: str
    fix: str = ""
    seconds: float | None = None


def checks_table(checks: list[Check], *, timed: bool = False) -> Table:
    cols = ["check", "result", "detail", "fix"] + (["s"] if timed else [])
    t = Table(*cols)
    for c in checks:
        mark = "[green]pass[/]" if c.ok else ("[yellow]not checked[/]" if c.ok is None else "[red]FAIL[/]")
        row = [c.name, mark, c.detail, c.fix]
        if timed:
            row.append(f"{c.seconds:.1f}" if c.seconds is not None else "")
        t.add_row(*row)
    return t
