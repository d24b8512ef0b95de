"""Base classes for the five component kinds.

Importing this module imports neither torch nor numpy: plugin entry modules
subclass these at import time and ``musicembed plugins`` must stay fast. Torch
is imported inside methods that need it.

Configuration convention: a component stores every constructor argument as an
attribute of the same name. :meth:`Component.config` then reports the
configuration generically, which is what goes into the embedding-space
signature and into ``musicembed plugins``. The rule is enforced: constructing a
component that leaves an argument unstored raises :class:`PluginError` naming
the argument (see :meth:`Component.__init_subclass__`).
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from .geometry import Geometry
    from .space import EmbeddingSpace


class Component:
    """Common behaviour of every registered component."""

    name: ClassVar[str] = ""
    """Registry name, unique per kind (``encoders.<name>`` in gin)."""
    runtime_params: ClassVar[frozenset[str]] = frozenset({"device", "num_threads"})
    """Constructor arguments that change where/how fast it runs, not its output:
    stored and shown by :meth:`config`, but left out of :meth:`signature`, so moving
    a run from GPU to CPU keeps its space."""
    unstored_params: ClassVar[frozenset[str]] = frozenset()
    """Constructor arguments deliberately *not* stored under their own name (so not
    in :meth:`config` nor :meth:`signature`), e.g. a file whose content the
    component keeps in other attributes that its :meth:`signature` covers. Every
    other argument must be stored: construction checks it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Wrap each constructor a subclass defines, so that the outermost one checks,
        # once it has returned, that every argument was stored (no cooperation needed).
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_musicembed_checked", False):
            cls.__init__ = _checked_init(init)  # type: ignore[method-assign]

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


_constructing = threading.local()


def _begin_construction(obj: Any) -> bool:
    """True for the outermost constructor of ``obj`` (a subclass's calls its base's)."""
    active: set[int] = _constructing.__dict__.setdefault("ids", set())
    outermost = id(obj) not in active
    active.add(id(obj))
    return outermost


def _end_construction(obj: Any) -> None:
    _constructing.__dict__.setdefault("ids", set()).discard(id(obj))


def _checked_init(init: Any) -> Any:
    # The wrapper takes the plugin's module name (functools.wraps): it refers to this
    # module only through functions, so a class pickled by value (Ray workers, a class
    # defined in a script) carries no thread-local with it.
    @functools.wraps(init)
    def __init__(self: Component, *args: Any, **kwargs: Any) -> None:
        outermost = _begin_construction(self)
        try:
            init(self, *args, **kwargs)
        finally:
            if outermost:
                _end_construction(self)
        if outermost:
            check_stored_params(self)

    __init__._musicembed_checked = True  # type: ignore[attr-defined]
    return __init__


def check_stored_params(component: Component) -> None:
    """Raise :class:`PluginError` if a constructor argument is not stored as an attribute.

    Such an argument would silently be missing from :meth:`Component.config`, so two
    runs that differ only in it would share an embedding space.
    """
    cls = type(component)
    missing = [
        pname
        for pname, _ in constructor_params(cls)
        if pname not in cls.unstored_params and not hasattr(component, pname)
    ]
    if not missing:
        return
    from .errors import PluginError

    args = ", ".join(repr(m) for m in missing)
    fix = "; ".join(f"self.{m} = {m}" for m in missing)
    raise PluginError(
        f"{cls.__module__}.{cls.__qualname__} (component {cls.name!r}) does not store its "
        f"constructor argument{'s' if len(missing) > 1 else ''} {args} as an attribute of the "
        f"same name, so it would be left out of the embedding-space signature: add `{fix}` to "
        f"its __init__ (or, if the vectors do not depend on it, or other stored attributes "
        f"already cover it, list it in the class attribute `unstored_params`)."
    )


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

    The encoder's *geometry* (rates, layer stack shape, windowing) is one frozen
    :class:`~musicembed_core.Geometry`, returned by :meth:`geometry`. A simple
    encoder declares it as class attributes (or sets them in ``__init__`` when
    they depend on its parameters); the default :meth:`resolve_geometry` reads
    them once. An encoder whose geometry comes from a checkpoint overrides
    :meth:`resolve_geometry` (``PretrainedEncoder`` does: it reads the
    checkpoint's config, never its weights).

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
    receptive_field: int | None = None
    """Samples one frame sees when frames come from unpadded strided convolutions
    (see :attr:`Geometry.receptive_field`); ``None`` for ``F = T // frame_hop``."""

    def geometry(self) -> "Geometry":
        """The encoder's geometry, resolved on first use and then fixed."""
        geo = self.__dict__.get("_geometry")
        if geo is None:
            from .geometry import Geometry

            geo = self.resolve_geometry()
            if not isinstance(geo, Geometry):
                raise TypeError(
                    f"encoder {self.name!r}: resolve_geometry() returned {geo!r}, "
                    "expected a musicembed_core.Geometry"
                )
            self.__dict__["_geometry"] = geo
        return geo

    def resolve_geometry(self) -> "Geometry":
        """Build the geometry (called once). Default: from the class/instance attributes."""
        from .geometry import Geometry

        return Geometry(
            sample_rate=self.sample_rate,
            frame_rate=self.frame_rate,
            num_layers=self.num_layers,
            dim=self.dim,
            window_seconds=self.window_seconds,
            hop_seconds=self.hop_seconds,
            min_seconds=self.min_seconds,
            receptive_field=self.receptive_field,
        )

    def load(self) -> None:
        """Load weights (idempotent). Called by the pipeline before encoding."""

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        """Encode equal-length mono waves ``[B, T]`` in [-1, 1] -> ``[L, B, F, D]``
        with ``F = self.geometry().frames_for(T)``."""
        raise NotImplementedError

    def module(self) -> "torch.nn.Module":
        """The loaded model as an ``nn.Module`` computing what :meth:`encode` computes.

        ``[B, T]`` float32 waves at the geometry's ``sample_rate`` (raw, before any
        input normalisation the model needs: the module does it) -> ``[L, B, F, D]``.
        Model exporters (TorchScript for LibTorch) trace or script it, so it must
        hold no Python-only operations on the data path. Optional: encoders that
        cannot be exported leave this unimplemented.
        """
        raise NotImplementedError(
            f"encoder {self.name!r} does not provide module(), so it cannot be exported"
        )

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig.update(self.geometry().signature())
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

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The shape :meth:`enrich` returns for an input of ``shape``, by arithmetic alone.

        Optional: it lets a run find its vector size (hence its embedding space)
        without importing torch, so a rerun that skips every file and a search by
        id start fast. ``None`` (the default) means "run me": the chain then calls
        :meth:`enrich` on a dummy stack. It must raise what :meth:`enrich` would
        for an input of that shape (e.g. a layer index out of range).
        """
        return None

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
        """Store records; an id written again replaces it.

        A record the output cannot store (a non-finite vector, a wrong dim, an id
        it cannot encode) raises an exception naming the id; the output stays
        usable. The runner then isolates that record by splitting the batch, so
        one bad record never blocks the others.
        """
        raise NotImplementedError

    def flush(self) -> None:
        """Make every record written so far durable (it survives kill -9 and shows
        in ``known()`` after a reopen). The runner calls it every
        ``run.flush_every_tracks`` tracks or ``run.flush_every_seconds``, whichever
        comes first, so a killed run redoes at most that much work. Default: nothing
        to do (for outputs whose ``write`` is already durable)."""

    def close(self) -> None:
        raise NotImplementedError


class ModelExporter(Component):
    """Exports an encoder (+ pooling) as a standalone model file (TorchScript, ...)."""

    def export(self, encoder: Encoder, enrichers: Sequence[Enricher], path: str) -> dict[str, Any]:
        raise NotImplementedError


# --------------------------------------------------------------------------- projectors


class TextProjector(Component):
    """Text -> vectors comparable with the audio vectors of one embedding space.

    A projector does not name a space hash: :meth:`target` declares what it is
    tied to, and :func:`check_projector` compares that with an embedding's space
    (``musicembed run`` before any work, ``musicembed search --text`` before the query).
    """

    dim: int = 0
    """Output dim (the target space's dim); 0 when only known after :meth:`load`."""

    def target(self) -> dict[str, Any]:
        """What the projector's vectors are comparable with, in one of two forms.

        * ``{"space": stored}``: a projector trained for exactly one space, where
          ``stored`` is what its checkpoint saved: :meth:`EmbeddingSpace.to_json`
          (a str or its parsed dict) or the :class:`EmbeddingSpace` itself.
        * ``{"encoder": enc, "enrichers": [step, ...]}``: a joint model (CLAP-like)
          whose text tower belongs to one audio encoder and chain. ``enc`` is an
          encoder name or a dict of encoder signature fields that must match
          (``{"name": "clap_musicgen", "model": "org/repo"}``); each step is an
          enricher name or a dict of its signature fields, in chain order.

        Reading a small config file here is fine; loading weights is not.
        """
        raise NotImplementedError(
            f"projector {self.name!r} ({type(self).__qualname__}) does not implement target()"
        )

    @staticmethod
    def tied_to(encoder: "Encoder", chain: "Sequence[str]") -> dict[str, Any]:
        """:meth:`target` of a joint model's text tower (CLAP, MuLan): the audio encoder's
        name, model and resolved weights, and the enricher chain (names, in order) its runs
        use. ``return self.tied_to(self._audio_encoder, ("layers", "mean", "flatten",
        "l2_normalize"))``."""
        sig = encoder.signature()
        return {
            "encoder": {k: sig[k] for k in ("name", "model", "weights") if k in sig},
            "enrichers": [{"name": step} for step in chain],
        }

    def load(self) -> None:
        """Load weights (idempotent)."""

    def embed_text(self, texts: list[str]) -> "torch.Tensor":
        """``N`` strings -> ``[N, dim]``."""
        raise NotImplementedError

    def embed_batched(self, texts: Sequence[str], batch_size: int,
                      embed_batch: "Callable[[list[str]], torch.Tensor]") -> "torch.Tensor":
        """The usual body of :meth:`embed_text`: refuses one ``str``, calls :meth:`load`, and
        runs ``embed_batch`` on up to ``batch_size`` texts at a time under
        ``torch.inference_mode``; float32 on the CPU, ``[0, dim]`` for no texts.
        ``return self.embed_batched(texts, self.batch_size, self._embed_batch)``."""
        import torch

        if isinstance(texts, str):
            raise TypeError("embed_text takes a list of strings, got one str")
        self.load()
        texts = list(texts)
        outs = [torch.zeros((0, self.dim), dtype=torch.float32)]
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                outs.append(embed_batch(texts[i:i + batch_size]).float().cpu())
        return torch.cat(outs)

    def checked_batch_size(self, batch_size: Any) -> int:
        """``batch_size`` if it is a positive int, else a :class:`ConfigError` naming
        ``projectors.<name>.batch_size``."""
        from .errors import ConfigError

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"projectors.{self.name}.batch_size={batch_size!r}: must be a positive int")
        return batch_size


def check_projector(projector: TextProjector, space: "EmbeddingSpace") -> None:
    """Raise :class:`SpaceMismatchError` if ``projector`` does not map text into ``space``.

    The message names each field that differs (encoder, enricher chain, dim, ...).
    """
    from .errors import PluginError, SpaceMismatchError

    who = f"projector {projector.name!r}"
    try:
        target = projector.target()
    except NotImplementedError as exc:
        raise PluginError(f"{exc}: it must declare the space or the encoder + chain it "
                          f"belongs to (see docs/hooks.md, register_text_projectors)") from exc
    if not isinstance(target, Mapping) or not (
        set(target) == {"space"} or set(target) == {"encoder", "enrichers"}
    ):
        raise PluginError(
            f"{who}: target() returned {target!r}; expected {{'space': ...}} or "
            f"{{'encoder': ..., 'enrichers': [...]}}"
        )
    have = _plain(space.identity())
    if "space" in target:
        stored = _stored_space(target["space"], who)
        reasons = _differences(stored, have, subset=False)
        tied = f"was trained for space {stored.get('hash') or '?'}"
    else:
        want = {
            "encoder": _step(target["encoder"], who),
            "enrichers": [_step(e, who) for e in target["enrichers"]],
        }
        reasons = _differences(want, have, subset=True)
        chain = [e.get("name", "?") for e in want["enrichers"]]
        tied = f"belongs to encoder {want['encoder'].get('name')!r} with chain {chain}"
    if projector.dim and projector.dim != space.dim and not any(r.startswith("dim:") for r in reasons):
        reasons.append(f"dim: the projector outputs {projector.dim}, the space has {space.dim}")
    if reasons:
        label = f"embedding {space.name!r} (space {space.hash})" if space.name else f"space {space.hash}"
        raise SpaceMismatchError(
            f"{who} cannot embed text into {label}: it {tied}, and "
            f"{'; '.join(reasons[:6])}. Bind embedding.projector only in the embedding the "
            f"projector was made for, or use one trained for this encoder and enricher chain."
        )


def _plain(value: Any) -> Any:
    """JSON round trip, so tuples/lists and int/str keys compare as they are stored."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _stored_space(stored: Any, who: str) -> dict[str, Any]:
    from .errors import PluginError
    from .space import EmbeddingSpace

    if isinstance(stored, EmbeddingSpace):
        return _plain({"hash": stored.hash, **stored.identity()})
    if isinstance(stored, str):
        try:
            stored = json.loads(stored)
        except ValueError as exc:
            raise PluginError(f"{who}: its stored space is not JSON ({exc})") from exc
    if not isinstance(stored, Mapping) or "encoder" not in stored or "enrichers" not in stored:
        raise PluginError(
            f"{who}: target()['space'] must be EmbeddingSpace.to_json() (or the space), "
            f"got {stored!r:.200}"
        )
    return _plain(dict(stored))


def _step(value: Any, who: str) -> dict[str, Any]:
    from .errors import PluginError

    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return _plain(dict(value))
    raise PluginError(f"{who}: target() names components by name or by a dict with a 'name', "
                      f"got {value!r}")


def _differences(want: Any, have: Any, subset: bool, path: str = "") -> list[str]:
    """Fields where ``have`` (the space) differs from ``want`` (the projector's target).

    ``subset``: only the fields ``want`` names count (a joint model's declaration).
    """
    if isinstance(want, dict) and isinstance(have, dict):
        keys = set(want) if subset else set(want) | set(have)
        out: list[str] = []
        for k in sorted(keys - ({"hash", "name"} if not path else set())):
            out += _differences(want.get(k), have.get(k), subset, f"{path}{k}.")
        return out
    if isinstance(want, list) and isinstance(have, list):
        if len(want) != len(have):
            names = [x.get("name") if isinstance(x, dict) else x for x in want]
            ours = [x.get("name") if isinstance(x, dict) else x for x in have]
            return [f"{path.rstrip('.')}: the projector's has {len(want)} steps {names}, "
                    f"the space's {len(have)} steps {ours}"]
        out = []
        for i, (a, b) in enumerate(zip(want, have)):
            out += _differences(a, b, subset, f"{path}{i}.")
        return out
    if want != have:
        return [f"{path.rstrip('.')}: the projector's is {want!r}, the space's is {have!r}"]
    return []


# --------------------------------------------------------------------------- sinks


@dataclass
class Hit:
    """One search result."""

    id: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)


class Sink(Component):
    """Vector store keyed by track id (contract v2).

    ``open(collection, space, readonly=False)``: the dimension is ``space.dim``,
    the metric the sink's own :attr:`metric`. A writable open creates the store
    and collection when missing (or on the first write) and stores the space
    (:func:`musicembed_core.space_record`); reopening checks it
    (:func:`musicembed_core.check_stored_space`), refusing another space with
    :class:`~musicembed_core.errors.SpaceMismatchError`. ``readonly=True``
    (``musicembed search``) creates nothing, not even a folder or an empty
    database: a missing store or collection raises
    :class:`~musicembed_core.errors.SinkNotFoundError` (build it with
    :func:`musicembed_core.sink_not_found`), and writes are refused.

    ``upsert`` receives the same :class:`Record` objects exporters get; writing
    an id again replaces it. :func:`musicembed_core.stack_records` checks and
    stacks a batch, :func:`musicembed_core.exact_search` searches a matrix
    exactly, :func:`musicembed_core.parse_filter` parses metadata filters.
    """

    metric: str = "cosine"
    """``cosine`` or ``ip`` (higher is closer) or ``l2`` (squared distance, lower is closer)."""

    def open(self, collection: str, space: "EmbeddingSpace", *, readonly: bool = False) -> None:
        raise NotImplementedError

    def known(self) -> Mapping[str, str]:
        """``{id: content_hash}`` already stored (for skipping unchanged files)."""
        return {}

    def shared_service(self) -> bool:
        """True when the store is a server several processes may write at once (a Milvus
        server): ``run.engine = "ray"`` then upserts from its workers, in batches by id.
        Default False: only the run's own process writes it (files, embedded stores)."""
        return False

    def upsert(self, records: Sequence[Record]) -> None:
        """Insert or replace by ``record.id`` (``vector``, ``content_hash``, ``metadata``;
        ``frames`` is ignored). A batch repeating an id keeps its last record.

        A batch with a record the store refuses raises (naming the id when it can) and
        leaves the sink usable; the runner splits the batch to isolate that record."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make every upserted record durable (survives kill -9, counted by ``known()``
        after a reopen). Called by the runner at a bounded interval (see
        :meth:`Exporter.flush`). Default: nothing (``upsert`` already durable)."""

    def search(
        self, vectors: "np.ndarray", k: int = 10, filter: str | None = None
    ) -> list[list[Hit]]:
        """``k`` nearest stored tracks per query row ``[Q, dim]``, best first.

        ``Hit.metadata`` is the stored record's metadata with its ``content_hash``.
        """
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def fetch(self, ids: Sequence[str]) -> dict[str, "np.ndarray"]:
        """Stored vectors by id (absent ids are left out): ``musicembed search --id``."""
        raise NotImplementedError(f"sink {self.name!r} cannot return stored vectors")

    def fetch_metadata(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Stored metadata by id, as ``Hit.metadata`` shows it (absent ids are left out).

        Optional: ``musicembed tag`` merges its tags into it and upserts each record
        again with its :meth:`fetch` vector and ``known()`` content hash.
        """
        raise NotImplementedError(f"sink {self.name!r} cannot return stored metadata")

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
