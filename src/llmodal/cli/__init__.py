"""The command line. ``commands``: serve, env, smoke, plan, bench; ``modal_commands``: deploy, status,
logs, stop, doctor, init; ``_app``: the Typer app and how errors exit."""

from llmodal.cli.commands import app, main

__all__ = ["app", "main"]
