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


# ---------------------------------------------------------------- reading a run's outputs
# (musicembed_core.stored re-exports these; the format readers in builtins raise them)


class NotAnOutputError(MusicembedError):
    """The path is not an output a ``musicembed run`` wrote (or not a readable one)."""


class NoFramesError(MusicembedError, ValueError):
    """The output stores no frames: its run did not keep them (``store_frames = False``)."""


def no_frames_error(where: str, path: str, exporter: str) -> NoFramesError:
    """The error for an output without frames: says how to get them (format readers use it)."""
    return NoFramesError(
        f"{where} stores no frames: the run that wrote it did not keep them. Embed again with "
        f"--gin_param exporters.{exporter}.store_frames=True into a new output (another "
        f"run.output_dir, or move {path} away first: a rerun into the same output skips the "
        f"tracks it already holds)."
    )


def unknown_track_error(track_id: str | list[str], where: str, ids: list[str]) -> KeyError:
    """The error for ids the output does not hold (format readers use it)."""
    missing = [track_id] if isinstance(track_id, str) else list(track_id)
    named = ", ".join(map(repr, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    what = f"track {named} is" if len(missing) == 1 else f"tracks {named} are"
    hint = f"; ids are paths relative to run.source, e.g. {ids[0]!r}" if ids else " (it is empty)"
    return KeyError(f"{what} not in {where} ({len(ids)} tracks{hint})")
