"""One error type for bad input, so the CLI can print a clear message and exit non-zero."""

from __future__ import annotations


class CodestageError(Exception):
    """A user-facing error: the message names what is wrong and where (file, line, field)."""


class ConfigError(CodestageError):
    """A config value is missing, malformed or out of range."""


class DataError(CodestageError):
    """An input data file is missing, malformed, or yields nothing."""


class ModelPathError(CodestageError):
    """A path given as a model is not a loadable Hugging Face model directory."""


class TrainingError(CodestageError):
    """Training cannot continue (non-finite loss, out of memory, ...)."""
