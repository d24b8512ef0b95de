"""Read back what a run stored: an HDF5 file or a safetensors folder, one track at a time.

What a plugin command uses to read a run's output (``musicembed decode``, an
analysis script) without importing the exporters::

    from musicembed_core.stored import open_output

    with open_output("musicembed-out/run/logmel.h5") as out:   # or .../logmel.safetensors
        print(out.format, out.space.hash, len(out.ids), out.has_frames)
        vec = out.vectors()                                     # [N, dim], row i is out.ids[i]
        for track_id, frames in out.iter_frames():              # [L, F, D], one track at a time
            times = out.frame_times(track_id)                   # [F] seconds: i / out.frame_rate

Only finalised data is read, as :func:`musicembed_core.builtins.hdf5.read_hdf5`
does: the main HDF5 file (not the ``.pending`` segments of a run still going or
killed) and the safetensors shards recorded in ``index.json``. A killed run's
records appear once a run on the same output completes.

Frames are there only when the run kept them (``store_frames = True`` on the
exporter); a track that had none (stored by a run without frames into the same
output) reads as ``[L, 0, D]``.

numpy/h5py/safetensors are imported only when an output is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from .errors import (  # the readers' errors live in errors.py (no import cycle); public here
    MusicembedError,
    NoFramesError,
    NotAnOutputError,
    unknown_track_error,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["FORMATS", "NoFramesError", "NotAnOutputError", "StoredOutput", "open_output"]

FORMATS: tuple[str, ...] = ("hdf5", "safetensors")
"""Values of :attr:`StoredOutput.format`; each is also the exporter's name (``exporters.hdf5``)."""

_EXPECTED = (
    "expected an HDF5 file (<name>.h5) or a safetensors output folder (<name>.safetensors/, "
    "holding index.json) written by `musicembed run`"
)


# --------------------------------------------------------------------------- the handle


class StoredOutput:
    """One finalised output, opened for reading (see the module doc).

    Attributes: ``path``; ``format`` (``"hdf5"`` or ``"safetensors"``); ``space``
    (the :class:`~musicembed_core.space.EmbeddingSpace` its vectors belong to);
    ``ids`` (track ids in stored order, the rows of :meth:`vectors`);
    ``has_frames``; ``frame_shape`` (``(L, D)`` of the stored frames, or None).
    An HDF5 file stays open until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, path: str, fmt: str, reader: Any) -> None:
        from .space import EmbeddingSpace

        self.path = path
        self.format = fmt
        self._reader = reader
        self.space: "EmbeddingSpace" = EmbeddingSpace.from_json(reader.space_json)
        self.ids: list[str] = list(reader.ids)
        self.frame_shape: tuple[int, int] | None = reader.frame_shape

    @property
    def frame_rate(self) -> float | None:
        """Frames per second of the stored frames (the encoder's, from the space): frame ``i``
        of a track is at ``i / frame_rate`` seconds from its start, across window seams."""
        rate = self.space.encoder.get("frame_rate")
        return float(rate) if rate else None

    def frame_times(self, track_id: str) -> "np.ndarray":
        """Start time in seconds of each stored frame of ``track_id``: float64 ``[F]``,
        ``i / frame_rate`` (time-aligned frames for beat tracking and the like)."""
        import numpy as np

        count = self.frames(track_id).shape[1]
        if not self.frame_rate:
            raise NoFramesError(f"{self.path}: its space records no frame_rate; frame times are unknown")
        return np.arange(count, dtype=np.float64) / self.frame_rate

    @property
    def has_frames(self) -> bool:
        """True when the run kept frame-level layer stacks (``store_frames = True``)."""
        return self.frame_shape is not None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, track_id: object) -> bool:
        return self._reader.has(track_id)

    def __repr__(self) -> str:
        frames = f", frames [L, D]={list(self.frame_shape)}" if self.frame_shape else ""
        return (f"StoredOutput({self.path!r}, format={self.format!r}, space={self.space.hash}, "
                f"{len(self.ids)} tracks{frames})")

    def __enter__(self) -> "StoredOutput":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release the file (HDF5) or the open shard (safetensors)."""
        self._reader.close()

    # ------------------------------------------------------------------ rows

    def vectors(self) -> "np.ndarray":
        """All track vectors, float32 ``[N, dim]``; row ``i`` belongs to ``ids[i]``."""
        return self._reader.vectors()

    def metadata(self, track_id: str) -> dict[str, Any]:
        """The metadata stored with the track (path, duration, sample rate, ...)."""
        return self._reader.metadata(track_id)

    def content_hash(self, track_id: str) -> str:
        """Hash of the audio file's bytes when the track was embedded."""
        return self._reader.content_hash(track_id)

    # ------------------------------------------------------------------ frames

    def frames(self, track_id: str) -> "np.ndarray":
        """Frame stack float32 ``[L, F, D]`` of one track (``F = 0``: stored without frames).

        KeyError (naming the id and the output) for an unknown id,
        :class:`NoFramesError` (saying how to store them) if the output has no frames.
        """
        return self._reader.frames(track_id)

    def iter_frames(self, ids: Iterable[str] | None = None) -> Iterator[tuple[str, "np.ndarray"]]:
        """``(id, frames [L, F, D])`` for ``ids`` (default: every track), reading one track
        at a time: memory holds one track's frames, never the whole output's.

        Every id is checked before the first is read (KeyError naming the unknown ones).
        """
        if not self.has_frames:
            raise self._reader.no_frames()
        wanted = self.ids if ids is None else list(ids)
        missing = [t for t in wanted if not self._reader.has(t)]
        if missing:
            raise unknown_track_error(missing, self._reader.where, self.ids)
        return self._iter(wanted)

    def _iter(self, wanted: list[str]) -> Iterator[tuple[str, "np.ndarray"]]:
        for track_id in wanted:
            yield track_id, self._reader.frames(track_id)


# --------------------------------------------------------------------------- opening


def open_output(path: str | os.PathLike[str]) -> StoredOutput:
    """Open a run's output for reading: an HDF5 file (``.h5``) or a safetensors folder.

    Anything else raises :class:`NotAnOutputError` naming the path and saying what
    was expected.
    """
    path = os.fspath(path)
    p = Path(path)
    if p.is_dir():
        return _open_folder(path)
    if p.is_file():
        if p.name == "index.json":  # the index itself: its folder is the output
            return _open_folder(str(p.parent))
        return _open_file(path)
    if Path(path + ".pending").is_dir():
        raise NotAnOutputError(
            f"{path} has not been finalised yet: a run writing it is still going, or was killed "
            f"(its records wait in {path}.pending/). Run the same `musicembed run` again to "
            f"complete it, then read it."
        )
    raise NotAnOutputError(f"{path} does not exist; {_EXPECTED}.")


def _open_folder(path: str) -> StoredOutput:
    from .builtins import safetensors_export as st

    if os.path.isfile(os.path.join(path, st.INDEX)):
        try:
            reader = st.SafetensorsReader(path)
        except MusicembedError as exc:
            raise NotAnOutputError(str(exc)) from exc
        return StoredOutput(path, "safetensors", reader)
    names = sorted(os.listdir(path))
    if any(st.is_shard_name(n) for n in names):
        raise NotAnOutputError(
            f"{path} holds safetensors shards but no {st.INDEX}: the run writing it was killed "
            f"before it recorded its first shard. Run the same `musicembed run` again to "
            f"complete it, then read it."
        )
    outputs = [n for n in names if n.endswith(".h5") and os.path.isfile(os.path.join(path, n))]
    outputs += [f"{n}/" for n in names if os.path.isfile(os.path.join(path, n, st.INDEX))]
    if outputs:
        raise NotAnOutputError(
            f"{path} is a folder of outputs, not one output; pass one of them: "
            + ", ".join(os.path.join(path, n) for n in outputs)
        )
    raise NotAnOutputError(f"{path} is a folder without {st.INDEX}; {_EXPECTED}.")


def _open_file(path: str) -> StoredOutput:
    import h5py

    from .builtins import hdf5

    if path.endswith(".safetensors"):
        raise NotAnOutputError(
            f"{path} is a single safetensors file; {_EXPECTED}. Pass the folder that holds "
            f"the shards and index.json."
        )
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except OSError as exc:
        raise NotAnOutputError(f"cannot read {path}: {exc}") from exc
    if not is_hdf5:
        raise NotAnOutputError(f"{path} is not an HDF5 file; {_EXPECTED}.")
    try:
        reader = hdf5.Hdf5Reader(path)
    except MusicembedError as exc:
        raise NotAnOutputError(str(exc)) from exc
    except OSError as exc:
        raise NotAnOutputError(
            f"cannot read HDF5 file {path}: {exc}. It was not written by `musicembed run`, or "
            f"the disk lost data."
        ) from exc
    return StoredOutput(path, "hdf5", reader)
