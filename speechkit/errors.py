"""Exception types raised by speechkit.

Library code raises these; the CLI turns them into one-line messages and exit codes.
Every message should be a complete sentence a user can act on.
"""
from __future__ import annotations


class SpeechkitError(Exception):
    """Base class of every error speechkit raises on purpose."""


class AudioError(SpeechkitError):
    """An input file or array cannot be used (corrupt, empty, unsupported, non-finite...)."""


class OutputExistsError(SpeechkitError):
    """An output file exists already and overwriting was not allowed (use --force)."""


class CheckpointError(SpeechkitError):
    """A checkpoint is malformed, incompatible with the model, or of an unknown kind."""


class ConfigError(SpeechkitError):
    """A model configuration is invalid or unknown."""


class MissingDependencyError(SpeechkitError):
    """An optional dependency is not installed; the message names the extra to install."""
