"""One exception hierarchy. Every message is safe to print: no secret is ever put in one."""

from __future__ import annotations


class LlmodalError(Exception):
    """Base of every error llmodal raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(LlmodalError):
    """A setting is missing or out of range. The message names the variable and the allowed values."""

    exit_code = 2


class PlanError(LlmodalError):
    """The planner cannot answer: unknown model or GPU, or a quantization with no checkpoint."""

    exit_code = 2


class DoesNotFit(LlmodalError):
    """The plan does not fit the GPUs; the message carries the numbers."""

    exit_code = 3


class ServerStartError(LlmodalError):
    """vLLM did not come up. ``cause`` is one line taken from its output."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class EndpointError(LlmodalError):
    """An endpoint could not be reached or answered wrongly."""


class PreflightError(LlmodalError):
    """A paid action was refused before anything was sent."""

    exit_code = 2
