"""Errors a user can act on: each says what was wrong and what to do."""

from __future__ import annotations


class MusicembedError(Exception):
    """Base class; the CLI prints these without a traceback."""


class PluginError(MusicembedError):
    """A plugin failed to load or registered something invalid."""


class DuplicateComponentError(PluginError):
    """Two plugins registered a component with the same kind and name."""


class UnknownComponentError(MusicembedError):
    """A component name that no loaded plugin provides."""


class ConfigError(MusicembedError):
    """A gin file or binding that cannot be applied."""


class AudioDecodeError(MusicembedError):
    """A file that cannot be decoded; the run records it as failed and goes on."""


class SpaceMismatchError(MusicembedError):
    """Vectors of one embedding space written into an output of another."""


class SinkNotFoundError(MusicembedError):
    """A sink opened read-only (``musicembed search``) whose store or collection does not exist."""


class FilterError(MusicembedError, ValueError):
    """A search filter that cannot be parsed or evaluated; the message quotes the filter."""
