"""Base classes for the five component kinds.

Importing this module imports neither torch nor numpy: plugin entry modules
subclass these at import time and ``musicembed plugins`` must stay fast. Torch
is imported inside methods that need it.

Configuration convention: a component stores every constructor argument as an
attribute of the same name. :meth:`Component.config` then reports the
configuration generically, which is what goes into the embedding-space
signature and into ``musicembed plugins``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .space import EmbeddingSpace


class Component:
    """Common behaviour of every registered component."""

    name: ClassVar[str] = ""
    """Registry name, unique per kind (``encoders.<name>`` in gin)."""
    runtime_params: ClassVar[frozenset[str]] = frozenset({"device", "num_threads"})
    """Constructor arguments that change where/how fast it runs, not its output:
    left out of :meth:`signature`, so moving a run from GPU to CPU keeps its space."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments as stored on the instance (JSON-friendly values)."""
        return {
            pname: _jsonable(getattr(self, pname))
            for pname, _ in constructor_params(type(self))
            if hasattr(self, pname)
        }

    def signature(self) -> dict[str, Any]:
        """Identity of this component inside an embedding space."""
        cfg = {k: v for k, v in self.config().items() if k not in self.runtime_params}
        return {"name": self.name, **cfg}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def constructor_params(cls: type) -> list[tuple[str, Any]]:
    """(name, default) of each named constructor argument: the component's gin parameters."""
    out = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append((p.name, None if p.default is inspect.Parameter.empty else p.default))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Component):
        return value.signature()
    return repr(value)


# --------------------------------------------------------------------------- encoders


class Encoder(Component):
    """Audio -> frame embeddings.

    Subclasses set the class attributes (or instance attributes in ``__init__``
    when they depend on the configured variant) and implement :meth:`encode`.
    Weights are loaded lazily in :meth:`load`, which the pipeline calls once
    before the first batch; constructing an encoder must stay cheap.
    """

    sample_rate: int = 16000
    """Input rate in Hz; the pipeline resamples to it (once per distinct rate)."""
    frame_rate: float = 50.0
    """Output frames per second of audio."""
    num_layers: int = 1
    """L in the ``[L, B, F, D]`` layer stack."""
    dim: int = 0
    """D in the ``[L, B, F, D]`` layer stack."""
    window_seconds: float = 10.0
    """Context window: audio is cut into chunks of this length."""
    hop_seconds: float | None = None
    """Distance between chunk starts; ``None`` means equal to the window (no overlap)."""
    min_seconds: float = 0.1
    """Shortest chunk the model accepts. A shorter track is repeated (tiled) up to it;
    a shorter tail after at least one full window is dropped."""

    def load(self) -> None:
        """Load weights (idempotent). Called by the pipeline before encoding."""

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        """Encode equal-length mono waves ``[B, T]`` in [-1, 1] -> ``[L, B, F, D]``."""
        raise NotImplementedError

    def module(self) -> "torch.nn.Module":
        """The loaded model as an ``nn.Module`` computing what :meth:`encode` computes.

        ``[B, T]`` float32 waves at :attr:`sample_rate` (raw, before any input
        normalisation the model needs: the module does it) -> ``[L, B, F, D]``.
        Model exporters (TorchScript for LibTorch) trace or script it, so it must
        hold no Python-only operations on the data path. Optional: encoders that
        cannot be exported leave this unimplemented.
        """
        raise NotImplementedError(
            f"encoder {self.name!r} does not provide module(), so it cannot be exported"
        )

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig.update(
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            num_layers=self.num_layers,
            dim=self.dim,
            window_seconds=self.window_seconds,
            hop_seconds=self.hop_seconds,
        )
        return sig


# --------------------------------------------------------------------------- enrichers


class Pooling:
    """Streaming state of one pooling enricher for one track.

    ``update`` receives consecutive blocks of frames ``[L, f, D]`` of a track;
    ``result`` returns what ``Enricher.enrich`` would return on the whole
    ``[L, F, D]``. Memory must not grow with the number of frames where the
    statistic allows it.
    """

    def update(self, frames: "torch.Tensor") -> None:
        raise NotImplementedError

    def result(self) -> "torch.Tensor":
        raise NotImplementedError


class BufferedPooling(Pooling):
    """Fallback streaming state: keeps every frame and calls ``enrich`` at the end."""

    def __init__(self, enricher: "Enricher") -> None:
        self.enricher = enricher
        self.blocks: list[Any] = []

    def update(self, frames: "torch.Tensor") -> None:
        self.blocks.append(frames)

    def result(self) -> "torch.Tensor":
        import torch

        return self.enricher.enrich(torch.cat(self.blocks, dim=1))


class Enricher(Component):
    """One step of the frames -> track-vector chain.

    ``stage`` says where the step sits in a chain:

    * ``"frames"``: acts on each frame independently, ``[L, F, D] -> [L', F, D']``
      (layer selection). Runs per chunk, so it costs no memory.
    * ``"pool"``: consumes the frame axis, ``[L, F, D] -> [L, D']`` (mean, IQR,
      ...). Override :meth:`pooling` to stream; the default keeps all frames.
    * ``"vector"``: acts on the pooled result (flatten, L2 normalisation).

    A valid chain is ``frames* pool vector*``.
    """

    stage: ClassVar[str] = "vector"

    def enrich(self, x: "torch.Tensor") -> "torch.Tensor":
        raise NotImplementedError

    def pooling(self) -> Pooling:
        """Fresh streaming state for one track (only for ``stage == "pool"``)."""
        return BufferedPooling(self)

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        """A TorchScript-able module computing :meth:`enrich`, for ``musicembed export-model``.

        Optional: a chain with an enricher that does not provide it cannot be
        exported (``run`` is unaffected). The exporter checks it against ``enrich``.
        """
        raise NotImplementedError


# --------------------------------------------------------------------------- records


@dataclass
class Record:
    """One track's result in one embedding space."""

    id: str
    """Stable track id: the path relative to the run's source folder."""
    vector: "np.ndarray"
    """float32 ``[dim]``."""
    content_hash: str
    """Hash of the file's bytes; a rerun skips ids whose hash is unchanged."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """path, duration, sample_rate, size, mtime_ns and any user metadata."""
    frames: "np.ndarray | None" = None
    """Optional frame-level stack ``[L, F, D]`` (after frame-stage enrichers)."""


class Exporter(Component):
    """Persistent output, one instance per embedding space.

    Contract: after :meth:`open`, :meth:`known` returns ``{id: content_hash}``
    of what is already stored (also what a killed earlier run managed to write);
    :meth:`write` may be called many times; :meth:`close` finalises. Killing the
    process at any point must leave previously finalised output readable.
    Opening an existing output of another space raises
    :class:`musicembed_core.errors.SpaceMismatchError`.
    """

    path: str | None = None

    def open(self, path: str, space: "EmbeddingSpace") -> None:
        raise NotImplementedError

    def known(self) -> Mapping[str, str]:
        return {}

    def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ModelExporter(Component):
    """Exports an encoder (+ pooling) as a standalone model file (TorchScript, ...)."""

    def export(self, encoder: Encoder, enrichers: Sequence[Enricher], path: str) -> dict[str, Any]:
        raise NotImplementedError


# --------------------------------------------------------------------------- projectors


class TextProjector(Component):
    """Text -> vectors in one audio embedding space."""

    target_space: str = ""
    """Hash of the :class:`EmbeddingSpace` the projector maps into."""
    dim: int = 0

    def load(self) -> None:
        """Load weights (idempotent)."""

    def embed_text(self, texts: list[str]) -> "torch.Tensor":
        """``N`` strings -> ``[N, dim]``."""
        raise NotImplementedError


# --------------------------------------------------------------------------- sinks


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


class Sink(Component):
    """Vector store keyed by track id."""

    metric: str = "cosine"

    def open(self, collection: str, dim: int, metric: str, space: "EmbeddingSpace") -> None:
        raise NotImplementedError

    def known(self) -> Mapping[str, str]:
        """``{id: content_hash}`` already stored (for skipping unchanged files)."""
        return {}

    def upsert(self, ids: Sequence[str], vectors: "np.ndarray", metadata: Sequence[dict]) -> None:
        raise NotImplementedError

    def search(
        self, vectors: "np.ndarray", k: int = 10, filter: str | None = None
    ) -> list[list[Hit]]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def fetch(self, ids: Sequence[str]) -> dict[str, "np.ndarray"]:
        """Stored vectors by id (absent ids are left out): ``musicembed search --id``."""
        raise NotImplementedError(f"sink {self.name!r} cannot return stored vectors")

    def delete(self, ids: Iterable[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


KIND_BASES: dict[str, type[Component]] = {
    "encoders": Encoder,
    "enrichers": Enricher,
    "exporters": Component,  # Exporter or ModelExporter
    "projectors": TextProjector,
    "sinks": Sink,
}
