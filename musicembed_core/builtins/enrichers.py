"""Built-in enrichers: layer selection, frame pooling statistics, vector post-processing.

A track's layer stack is ``[L, F, D]`` (layers, frames, dim). The chain is
``frames* pool vector*`` (see :class:`musicembed_core.components.Enricher`):

* ``layers`` (frames) selects layers;
* ``mean``, ``std``, ``iqr``, ``robust_sigma``, ``delta_mean``, ``delta_std``,
  ``max`` and ``stats`` (pool) reduce ``[L, F, D]`` to ``[L, D']`` and stream over the
  blocks of a track through :meth:`Enricher.pooling`;
* ``flatten`` and ``l2_normalize`` (vector) finish the track vector.

Every pooling enricher defines ``enrich(x)`` as "stream ``x`` in one block", so
the whole-track and streaming results agree by construction (up to float64
rounding in the accumulators). Outputs are float32.

The maths lives in :mod:`musicembed_core.builtins.enricher_ops` (TorchScript-
compatible functions): these classes stream blocks through it, and each
enricher's ``torch_module(num_layers)`` returns the scriptable module the model
exporter puts into an exported TorchScript model, so both compute the same thing.

This module imports neither torch nor numpy at import time: ``musicembed
plugins`` imports it just to list the components.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from ..components import Enricher, Pooling
from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch


class EnricherConfigError(ConfigError, ValueError):
    """A bad enricher argument (also a ``ValueError`` for plain-Python callers)."""


# --------------------------------------------------------------------------- helpers


def _check_stack(x: "torch.Tensor", who: str) -> None:
    if x.dim() != 3:
        raise ValueError(
            f"enrichers.{who} expects a layer stack [layers, frames, dim], got shape {tuple(x.shape)}"
        )


def _check_shape(shape: tuple[int, ...], who: str) -> None:
    """:func:`_check_stack` for a shape (the chain's size, computed without torch)."""
    if len(shape) != 3:
        raise ValueError(
            f"enrichers.{who} expects a layer stack [layers, frames, dim], got shape {tuple(shape)}"
        )


def _no_frames(who: str) -> ValueError:
    return ValueError(f"enrichers.{who}: the track has no frames to pool")


def _ops() -> Any:
    """The enricher maths (imports torch, hence lazily)."""
    from . import enricher_ops

    return enricher_ops


class _Moments:
    """Running count / mean / sum of squared deviations, merged in float64 (Chan et al.).

    Each block's own mean and variance come from ``torch.var_mean`` in the block's
    dtype (one pass, no float64 copy of the frames); only the ``[L, D]`` merge runs
    in float64, so the result does not depend on how a track is split
    (``enricher_ops.block_moments`` / ``merge_moments``).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: Any = None
        self.m2: Any = None

    def add(self, x: "torch.Tensor") -> None:
        """Add the frames ``x`` ``[L, f, D]`` (any float dtype)."""
        ops = _ops()
        f = x.shape[1]
        if f == 0:
            return
        bmean, bm2 = ops.block_moments(x)
        if self.n == 0:
            self.n, self.mean, self.m2 = f, bmean, bm2
            return
        self.mean, self.m2 = ops.merge_moments(self.n, self.mean, self.m2, f, bmean, bm2)
        self.n += f

    def std(self) -> "torch.Tensor":
        """Population standard deviation, float32 ``[L, D]``."""
        return _ops().std_result(self.m2, self.n)


# --------------------------------------------------------------------------- frames stage


class LayersEnricher(Enricher):
    """Select layers of the stack: ``[L, F, D] -> [L', F, D]``.

    ``indices`` is ``"all"``, a list of layer indices (negative ones count from
    the end), a single index, or a Python slice string such as ``"6:"``,
    ``"-4:"``, ``"2:10:2"``. Selection is checked against L when frames arrive.
    """

    name: ClassVar[str] = "layers"
    stage: ClassVar[str] = "frames"

    def __init__(self, indices: "list[int] | str" = "all") -> None:
        if isinstance(indices, bool):
            raise EnricherConfigError("enrichers.layers: indices must be 'all', a list of ints or 'a:b'")
        if isinstance(indices, int):
            indices = [indices]
        if isinstance(indices, str):
            indices = indices.strip()
            self._slice = _parse_slice(indices)
        else:
            try:
                indices = [_as_index(i) for i in indices]
            except (TypeError, ValueError):
                raise EnricherConfigError(
                    f"enrichers.layers: indices must be 'all', a list of ints or a slice string "
                    f"like '6:' or '-4:', got {indices!r}"
                ) from None
            if not indices:
                raise EnricherConfigError("enrichers.layers: indices is an empty list")
            self._slice = None
        self.indices = indices

    def resolve(self, num_layers: int) -> list[int]:
        """Non-negative layer indices selected from a stack of ``num_layers`` layers."""
        L = num_layers
        if self._slice is not None:
            picked = list(range(L))[self._slice]
            if not picked:
                raise EnricherConfigError(
                    f"enrichers.layers: indices={self.indices!r} selects no layer of a "
                    f"{L}-layer stack (L={L})"
                )
            return picked
        bad = [i for i in self.indices if not -L <= i < L]
        if bad:
            raise EnricherConfigError(
                f"enrichers.layers: indices {bad} out of range for a {L}-layer stack (L={L}); "
                f"valid indices are {-L}..{L - 1}"
            )
        return [i % L for i in self.indices]

    def enrich(self, x: "torch.Tensor") -> "torch.Tensor":
        return _ops().select_layers(x, self.resolve(x.shape[0]))

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (len(self.resolve(shape[0])), *shape[1:])

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().SelectLayers(self.resolve(num_layers))


def _as_index(i: Any) -> int:
    if isinstance(i, bool) or int(i) != i:
        raise TypeError(i)
    return int(i)


def _parse_slice(text: str) -> slice:
    if text.lower() == "all" or text == ":":
        return slice(None)
    parts = text.split(":")
    try:
        if len(parts) == 1:
            i = int(parts[0])
            return slice(i, i + 1 if i != -1 else None)
        if len(parts) > 3:
            raise ValueError
        vals = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise EnricherConfigError(
            f"enrichers.layers: indices={text!r} is neither 'all', a list of ints nor a slice "
            f"string like '6:', '-4:' or '2:10:2'"
        ) from None
    if len(vals) == 3 and vals[2] == 0:
        raise EnricherConfigError(f"enrichers.layers: indices={text!r} has a zero step")
    return slice(*vals)


# --------------------------------------------------------------------------- pool stage


class _PoolEnricher(Enricher):
    """Pooling enricher whose ``enrich`` is its streaming state fed one block."""

    stage: ClassVar[str] = "pool"

    def enrich(self, x: "torch.Tensor") -> "torch.Tensor":
        _check_stack(x, self.name)
        state = self.pooling()
        state.update(x)
        return state.result()

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``[L, F, D] -> [L, D]``."""
        _check_shape(shape, self.name)
        return (shape[0], shape[2])


class _MeanPooling(Pooling):
    def __init__(self) -> None:
        self.n = 0
        self.sum: Any = None

    def update(self, frames: "torch.Tensor") -> None:
        if frames.shape[1] == 0:
            return
        bsum = _ops().frame_sum(frames)
        self.sum = bsum if self.sum is None else self.sum + bsum
        self.n += frames.shape[1]

    def result(self) -> "torch.Tensor":
        if self.n == 0:
            raise _no_frames("mean")
        return _ops().mean_result(self.sum, self.n)


class MeanEnricher(_PoolEnricher):
    """Mean over frames: ``[L, F, D] -> [L, D]`` (float64 accumulation)."""

    name: ClassVar[str] = "mean"

    def pooling(self) -> Pooling:
        return _MeanPooling()

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().MeanPool()


class _StdPooling(Pooling):
    def __init__(self) -> None:
        self.m = _Moments()

    def update(self, frames: "torch.Tensor") -> None:
        self.m.add(frames)

    def result(self) -> "torch.Tensor":
        if self.m.n == 0:
            raise _no_frames("std")
        return self.m.std()


class StdEnricher(_PoolEnricher):
    """Population standard deviation (ddof=0) over frames: ``[L, F, D] -> [L, D]``."""

    name: ClassVar[str] = "std"

    def pooling(self) -> Pooling:
        return _StdPooling()

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().StdPool()


class _MaxPooling(Pooling):
    def __init__(self) -> None:
        self.max: Any = None

    def update(self, frames: "torch.Tensor") -> None:
        if frames.shape[1] == 0:
            return
        import torch

        bmax = _ops().frame_max(frames)
        self.max = bmax if self.max is None else torch.maximum(self.max, bmax)

    def result(self) -> "torch.Tensor":
        if self.max is None:
            raise _no_frames("max")
        import torch

        return self.max.to(torch.float32)


class MaxEnricher(_PoolEnricher):
    """Maximum over frames: ``[L, F, D] -> [L, D]``."""

    name: ClassVar[str] = "max"

    def pooling(self) -> Pooling:
        return _MaxPooling()

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().MaxPool()


class _DeltaMeanPooling(Pooling):
    """Mean of ``x[t+1] - x[t]`` telescopes to ``(x[F-1] - x[0]) / (F - 1)``."""

    def __init__(self) -> None:
        self.n = 0
        self.first: Any = None
        self.last: Any = None

    def update(self, frames: "torch.Tensor") -> None:
        f = frames.shape[1]
        if f == 0:
            return
        import torch

        if self.first is None:
            self.first = frames[:, 0].to(torch.float64)
        self.last = frames[:, -1].to(torch.float64)
        self.n += f

    def result(self) -> "torch.Tensor":
        if self.n == 0:
            raise _no_frames("delta_mean")
        return _ops().delta_mean_result(self.first, self.last, self.n)


class DeltaMeanEnricher(_PoolEnricher):
    """Mean over frames of the first difference ``x[t+1] - x[t]``: ``[L, F, D] -> [L, D]``.

    A one-frame track gives zeros.
    """

    name: ClassVar[str] = "delta_mean"

    def pooling(self) -> Pooling:
        return _DeltaMeanPooling()

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().DeltaMeanPool()


class _DeltaStdPooling(Pooling):
    def __init__(self) -> None:
        self.m = _Moments()
        self.last: Any = None
        self.first: Any = None

    def update(self, frames: "torch.Tensor") -> None:
        if frames.shape[1] == 0:
            return
        import torch

        ops = _ops()
        x = ops.work_dtype(frames)
        if self.first is None:
            self.first = x[:, 0].to(torch.float64)
        if self.last is not None:
            # The difference across the block boundary, computed like the others.
            self.m.add(x[:, :1] - self.last.to(x.dtype))
        self.last = x[:, -1:].clone()
        if x.shape[1] > 1:
            self.m.add(ops.frame_diffs(x))

    def result(self) -> "torch.Tensor":
        if self.first is None:
            raise _no_frames("delta_std")
        import torch

        if self.m.n == 0:
            return torch.zeros_like(self.first, dtype=torch.float32)
        return self.m.std()


class DeltaStdEnricher(_PoolEnricher):
    """Population std over frames of the first difference ``x[t+1] - x[t]``.

    ``[L, F, D] -> [L, D]``; a one-frame track gives zeros.
    """

    name: ClassVar[str] = "delta_std"

    def pooling(self) -> Pooling:
        return _DeltaStdPooling()

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().DeltaStdPool()


class _IqrPooling(Pooling):
    """Keeps frames exactly up to ``max_frames``, then a uniform reservoir of them.

    Reservoir sampling is Algorithm R: frame ``i`` (0-based, ``i >= k``) replaces
    slot ``j = h(i) mod (i + 1)`` when ``j < k``, where ``h`` is splitmix64 of the
    frame index and the seed (``enricher_ops.reservoir_draws``). Draws depend only
    on the frame index, so the sample does not depend on how the track was split
    into blocks.
    """

    def __init__(self, max_frames: int, seed: int, robust_sigma: bool = False) -> None:
        self.k = max_frames
        self.seed = seed
        self.robust_sigma = robust_sigma
        self.offset = _ops().seed_offset(seed)
        self.n = 0
        self.blocks: list[Any] = []  # while n < k
        self.buffer: Any = None  # [L, k, D] once n >= k

    @property
    def frames_held(self) -> int:
        """Number of frames currently stored (never more than ``max_frames``)."""
        if self.buffer is not None:
            return int(self.buffer.shape[1])
        return sum(int(b.shape[1]) for b in self.blocks)

    def update(self, frames: "torch.Tensor") -> None:
        import torch

        f = frames.shape[1]
        if f == 0:
            return
        if frames.dtype not in (torch.float32, torch.float64):
            frames = frames.to(torch.float32)
        if self.n < self.k:
            take = min(f, self.k - self.n)
            # Copy: the caller may reuse its chunk buffer.
            self.blocks.append(frames[:, :take].clone())
            self.n += take
            frames = frames[:, take:]
            f -= take
            if self.n == self.k:
                self._to_buffer()
        if f == 0:
            return
        self._reservoir(frames)

    def _to_buffer(self) -> None:
        """Move the kept blocks into one ``[L, k, D]`` buffer, freeing each as it goes."""
        import torch

        first = self.blocks[0]
        self.buffer = torch.empty(
            (first.shape[0], self.k, first.shape[2]), dtype=first.dtype, device=first.device
        )
        pos = 0
        self.blocks.reverse()
        while self.blocks:
            b = self.blocks.pop()
            self.buffer[:, pos : pos + b.shape[1]] = b
            pos += b.shape[1]
            del b

    def _reservoir(self, frames: "torch.Tensor") -> None:
        f = frames.shape[1]
        slots, src = _ops().reservoir_draws(self.n, f, self.k, self.offset, self.buffer.device)
        self.n += f
        if slots.numel():
            self.buffer[:, slots] = frames[:, src].to(self.buffer.dtype)

    def result(self) -> "torch.Tensor":
        import torch

        if self.n == 0:
            raise _no_frames("robust_sigma" if self.robust_sigma else "iqr")
        held = self.buffer if self.buffer is not None else torch.cat(self.blocks, dim=1)
        if self.robust_sigma:
            ops = _ops()
            return ops.robust_sigma_result(_iqr(held), ops.IQR_PER_SIGMA)
        return _iqr(held).to(torch.float32)


def _iqr(x: "torch.Tensor", use_numpy: bool | None = None) -> "torch.Tensor":
    """75th - 25th percentile over dim 1, linear interpolation (numpy's default).

    Works one layer at a time on a frames-contiguous copy: on CPU with
    ``numpy.partition`` (linear time, only the 4 order statistics needed),
    elsewhere with ``torch.sort`` (``use_numpy`` forces either path; the exported
    TorchScript model sorts). Both give the same order statistics, and
    ``enricher_ops.iqr_from_ordered`` interpolates them. ``torch.quantile``
    refuses large inputs.
    """
    ops = _ops()
    if not (use_numpy if use_numpy is not None else x.device.type == "cpu"):
        return ops.iqr_sorted(x)
    import numpy as np
    import torch

    ks = ops.quartile_columns(x.shape[1])
    out = torch.empty((x.shape[0], x.shape[2]), dtype=torch.float64, device=x.device)
    for layer in range(x.shape[0]):
        xt = x[layer].t().contiguous()  # [D, n]
        out[layer] = ops.iqr_from_ordered(torch.from_numpy(np.partition(xt.numpy(), ks, axis=1)))
    return out


class IqrEnricher(_PoolEnricher):
    """Interquartile range over frames (75th - 25th percentile, linear interpolation).

    ``[L, F, D] -> [L, D]``. Exact while the track has at most ``max_frames``
    frames: all of them are kept. Beyond that a uniform reservoir sample of
    ``max_frames`` frames is kept instead (deterministic, seeded by ``seed``, and
    independent of how the track is split into blocks), so memory stays bounded
    at ``L * max_frames * D`` values. ``enrich`` on a whole stack applies the
    very same reservoir (it streams the stack as one block), so whole-track and
    streaming results are identical.
    """

    name: ClassVar[str] = "iqr"

    def __init__(self, max_frames: int = 4096, seed: int = 0) -> None:
        if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
            raise EnricherConfigError(
                f"enrichers.{self.name}: max_frames must be an int >= 2, got {max_frames!r}"
            )
        self.max_frames = max_frames
        self.seed = int(seed)

    def pooling(self) -> Pooling:
        return _IqrPooling(self.max_frames, self.seed)

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().IqrPool(self.max_frames, self.seed)


class RobustSigmaEnricher(IqrEnricher):
    """Normal-consistent standard deviation from the IQR: ``IQR / 1.3489795003921634``.

    ``[L, F, D] -> [L, D]``. For normally distributed frames it estimates the
    standard deviation, but outliers (clicks, silence) barely move it: the seed
    project's Music2Latent track vectors used it. Computed exactly like
    ``enrichers.iqr`` (same ``max_frames`` reservoir and ``seed``, streaming), then
    scaled in float64.

    A statistic of its own rather than a ``scale`` parameter on ``iqr``: the
    embedding space then says *what* was computed (``robust_sigma``, not ``iqr``
    with a magic number), and ``enrichers.stats`` can name it like any other
    statistic.
    """

    name: ClassVar[str] = "robust_sigma"

    def pooling(self) -> Pooling:
        return _IqrPooling(self.max_frames, self.seed, robust_sigma=True)

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().RobustSigmaPool(self.max_frames, self.seed)


class _StatsPooling(Pooling):
    def __init__(self, parts: list[Pooling]) -> None:
        self.parts = parts

    def update(self, frames: "torch.Tensor") -> None:
        for p in self.parts:
            p.update(frames)

    def result(self) -> "torch.Tensor":
        import torch

        return torch.cat([p.result() for p in self.parts], dim=-1)


_STAT_FACTORIES: dict[str, Callable[["StatsEnricher"], Enricher]] = {
    "mean": lambda s: MeanEnricher(),
    "std": lambda s: StdEnricher(),
    "iqr": lambda s: IqrEnricher(max_frames=s.max_frames, seed=s.seed),
    "robust_sigma": lambda s: RobustSigmaEnricher(max_frames=s.max_frames, seed=s.seed),
    "delta_mean": lambda s: DeltaMeanEnricher(),
    "delta_std": lambda s: DeltaStdEnricher(),
    "max": lambda s: MaxEnricher(),
}


class StatsEnricher(_PoolEnricher):
    """Several pooling statistics concatenated along the last dim.

    ``[L, F, D] -> [L, len(stats) * D]``, in the order given. Valid names:
    ``mean``, ``std``, ``iqr``, ``robust_sigma``, ``delta_mean``, ``delta_std``,
    ``max``; ``max_frames`` and ``seed`` configure ``iqr`` and ``robust_sigma``.
    """

    name: ClassVar[str] = "stats"

    def __init__(
        self,
        stats: "list[str] | str" = ("mean", "iqr", "delta_mean"),  # type: ignore[assignment]
        max_frames: int = 4096,
        seed: int = 0,
    ) -> None:
        if isinstance(stats, str):
            stats = [stats]
        stats = list(stats)
        valid = ", ".join(_STAT_FACTORIES)
        if not stats:
            raise EnricherConfigError(f"enrichers.stats: stats is empty; choose from {valid}")
        unknown = [s for s in stats if s not in _STAT_FACTORIES]
        if unknown:
            raise EnricherConfigError(
                f"enrichers.stats: unknown statistic(s) {unknown}; valid ones are {valid}"
            )
        self.stats = stats
        self.max_frames = max_frames
        self.seed = seed
        self._parts = [_STAT_FACTORIES[s](self) for s in stats]

    def pooling(self) -> Pooling:
        return _StatsPooling([p.pooling() for p in self._parts])

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``[L, F, D] -> [L, len(stats) * D]``."""
        _check_shape(shape, self.name)
        return (shape[0], len(self._parts) * shape[2])

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().ConcatPool([p.torch_module(num_layers) for p in self._parts])


# --------------------------------------------------------------------------- vector stage


class FlattenEnricher(Enricher):
    """Flatten to a 1-D vector (row-major: layer by layer)."""

    name: ClassVar[str] = "flatten"
    stage: ClassVar[str] = "vector"

    def enrich(self, x: "torch.Tensor") -> "torch.Tensor":
        return _ops().flatten(x)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(shape),)

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().Flatten()


class L2NormalizeEnricher(Enricher):
    """Divide by the L2 norm along the last dim (at least ``eps``)."""

    name: ClassVar[str] = "l2_normalize"
    stage: ClassVar[str] = "vector"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = float(eps)

    def enrich(self, x: "torch.Tensor") -> "torch.Tensor":
        return _ops().l2_normalize(x, self.eps)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def torch_module(self, num_layers: int) -> "torch.nn.Module":
        return _ops().L2Normalize(self.eps)


BUILTIN_ENRICHERS: tuple[type[Enricher], ...] = (
    LayersEnricher,
    MeanEnricher,
    StdEnricher,
    IqrEnricher,
    RobustSigmaEnricher,
    DeltaMeanEnricher,
    DeltaStdEnricher,
    MaxEnricher,
    StatsEnricher,
    FlattenEnricher,
    L2NormalizeEnricher,
)
"""Every enricher this module defines, for registration."""
