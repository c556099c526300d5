"""What every ``llmodal`` command shares: the Typer app, the consoles, and how errors exit."""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from llmodal.core.errors import LlmodalError
from llmodal.core.config import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Your own open LLM behind a private OpenAI-compatible endpoint: vLLM on Modal or here.")
# Wide tables stay readable when output is piped or captured (rich assumes 80 columns then), unless COLUMNS says
# how wide (rich reads it itself).
_WIDE = None if os.environ.get("COLUMNS", "").isdigit() else 150
console = Console(width=None if sys.stdout.isatty() else _WIDE)
err = Console(stderr=True, width=None if sys.stderr.isatty() else _WIDE)

EnvFile = Annotated[str, typer.Option("--env-file", help="settings file to read (.env)")]


def fail(e: LlmodalError) -> NoReturn:
    err.print(f"[red]error:[/] {e}")
    raise typer.Exit(e.exit_code)


def settings_or_fail(env_file: str, **overrides) -> Settings:
    try:
        return load_settings(env_file, **overrides)
    except LlmodalError as e:
        fail(e)
