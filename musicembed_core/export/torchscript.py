"""``exporters.torchscript``: an encoder + enricher chain as one TorchScript file for LibTorch.

Why: music servers and apps written in C++ (or anything that links LibTorch)
should compute the same track vectors as ``musicembed run`` without Python,
e.g. to embed a new file or a query clip against a library indexed with
musicembed. The file holds the whole path from a raw mono wave to the
L2-normalised track vector (see :mod:`musicembed_core.export.model`);
a JSON file beside it says which input it expects and which embedding space
its vectors belong to.

How the encoder becomes TorchScript: ``Encoder.module()`` is compiled with
``torch.jit.script``; when that fails (transformers models usually do) it is
traced with ``torch.jit.trace``. A trace records the operations run for one
example input, so a model whose Python code turns shapes into constants would
silently give wrong results for other lengths: the compiled encoder is therefore
compared with the eager module at several input lengths and batch sizes, and
the export is refused when they differ. Finally the saved file is run on a
generated clip and compared with the vector the pipeline computes for it.

This module imports neither torch nor numpy at top level (it is imported when
plugins are listed).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..components import Encoder, Enricher, ModelExporter
from ..errors import MusicembedError
from ..geometry import Geometry
from . import metadata_path
from ..hub import DTYPES

log = logging.getLogger("musicembed")


PIPELINE_TOLERANCE = {"float32": 1e-4, "float16": 5e-3, "bfloat16": 2e-2}
"""Largest element difference allowed between the exported model's vector and the
pipeline's (both L2-normalised), by the encoder's precision."""


class ExportError(MusicembedError):
    """An encoder or enricher chain that cannot be exported, or an export that failed its checks."""


class TorchScriptExporter(ModelExporter):
    """Writes ``path`` (TorchScript) and ``<stem>.json`` (what it expects and computes).

    Args:
      device: where to compile and check the model ("cpu", "cuda", ...). The
        file expects its input on this device (LibTorch can map it elsewhere
        when the model was scripted, not traced).
      dtype: cast the encoder's module to this precision (float32, float16,
        bfloat16). Default: keep the precision the encoder runs in, which is
        what its embedding space was computed with; an encoder with its own
        ``dtype`` parameter should be configured there instead
        (``musicembed export-model --dtype`` does that).
      verify: run the saved file on a generated clip and refuse the export when
        its vector differs from the pipeline's.
      verify_seconds: length of that clip in encoder windows (> 1, so that
        window stitching and the tail are checked).
    """

    name: ClassVar[str] = "torchscript"
    extension: ClassVar[str] = ".pt"
    runtime_params = frozenset({"device", "verify", "verify_seconds"})
    path: str | None = None
    """Unused; present (like ``Exporter.path``) so that a run listing this exporter by
    mistake reaches :meth:`open`, which says what to do instead."""

    def __init__(
        self,
        device: str = "cpu",
        dtype: str | None = None,
        verify: bool = True,
        verify_seconds: float = 1.6,
    ) -> None:
        if dtype is not None and dtype not in DTYPES:
            raise ExportError(
                f"exporters.torchscript: dtype {dtype!r} is not one of {', '.join(DTYPES)}"
            )
        if verify_seconds <= 0:
            raise ExportError("exporters.torchscript: verify_seconds must be > 0")
        self.device = str(device)
        self.dtype = dtype
        self.verify = bool(verify)
        self.verify_seconds = float(verify_seconds)

    def open(self, path: str, space: Any) -> None:
        """Listed in ``run.exporters`` by mistake: say where it belongs instead."""
        from ..errors import ConfigError

        raise ConfigError(
            "exporters.torchscript exports a model, not vectors: remove it from run.exporters "
            "and run `musicembed export-model` (e.g. with this run's gin file) instead"
        )

    # ------------------------------------------------------------------ API
    def export(
        self,
        encoder: Encoder,
        enrichers: Sequence[Enricher],
        path: str,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Compile, check and write the model; returns the metadata written to the JSON file."""
        import torch

        from .. import __version__
        from ..atomic import atomic_path, atomic_write_json
        from ..pipeline import PreparedEmbedding
        from ..runconfig import EmbeddingSpec
        from .model import TrackEmbedder

        out = Path(path)
        if out.is_dir():
            raise ExportError(f"output {out} is a directory; give a file name such as model.pt")
        if metadata_path(out) == out:
            raise ExportError(f"output {out}: the metadata goes to <name>.json; name the model "
                              f"file differently, e.g. {out.with_suffix('.pt')}")
        device = _resolve_device(self.device)
        chain_enrichers, appended_l2 = with_final_l2(enrichers)
        try:
            prep = PreparedEmbedding.build(
                EmbeddingSpec(name or encoder.name, encoder, chain_enrichers)
            )
        except ValueError as exc:  # EnricherConfigError etc. that are not MusicembedErrors
            raise ExportError(f"enricher chain {_labels(chain_enrichers)}: {exc}") from exc
        geo = prep.geometry
        frame_ops, pool, vector_ops = script_chain(prep.chain.enrichers, encoder)

        module, compute_dtype, cast = prepare_encoder_module(
            encoder, device, None if self.dtype is None else getattr(torch, self.dtype)
        )
        compiled, how, notes = compile_encoder(module, encoder, geo, device, compute_dtype)
        meta = self._metadata(encoder, prep, how, appended_l2, path, __version__)
        meta["dtype"] = str(compute_dtype).removeprefix("torch.")
        if cast:
            notes.append(
                f"the encoder's module was cast to {meta['dtype']}: its vectors approximate "
                f"those of the embedding space {prep.space.hash}"
            )
        top = TrackEmbedder(
            compiled, frame_ops, pool, vector_ops,
            geo, dim=prep.space.dim,
            compute_dtype=compute_dtype, device=str(device),
        )
        try:
            scripted = torch.jit.script(top)
        except Exception as exc:
            raise ExportError(
                f"could not script the exported model around encoder {encoder.name!r}: "
                f"{_first_lines(exc)}"
            ) from exc

        out.parent.mkdir(parents=True, exist_ok=True)
        meta["compile_notes"] = notes
        meta["verification"] = None
        with atomic_path(out) as tmp:
            if self.verify:
                torch.jit.save(scripted, tmp)
                loaded = torch.jit.load(tmp, map_location=device)
                meta["verification"] = self._verify(loaded, prep, device, meta["dtype"], cast)
            # The metadata also travels inside the file (LibTorch: ExtraFilesMap).
            torch.jit.save(scripted, tmp, _extra_files={"musicembed.json": meta_json(meta)})
        atomic_write_json(metadata_path(out), meta, indent=2, sort_keys=True)
        return meta

    # ------------------------------------------------------------------ helpers
    def _metadata(
        self,
        encoder: Encoder,
        prep: Any,
        how: str,
        appended_l2: bool,
        path: str,
        version: str,
    ) -> dict[str, Any]:
        import torch

        chain = prep.chain
        geo = prep.geometry
        return {
            "format": "torchscript",
            "model_file": Path(path).name,
            "musicembed_version": version,
            "torch_version": torch.__version__,
            "embedding_name": prep.name,
            "input": {
                "sample_rate": geo.sample_rate,
                "channels": 1,
                "layout": "[B, T] or [T] float32 mono wave in [-1, 1] at sample_rate; "
                "the tracks of one batch have the same length",
                "device": str(_resolve_device(self.device)),
            },
            "output": {
                "dim": int(prep.space.dim),
                "layout": "[B, dim] float32, L2-normalised",
            },
            "encoder": {
                "name": encoder.name,
                "compiled_with": how,
                "num_layers": geo.num_layers,
                "dim": geo.dim,
                "frame_rate": geo.frame_rate,
                "gradient_checkpointing": False,
                "signature": encoder.signature(),
            },
            "layers": resolved_layers(chain.frame_enrichers, geo.num_layers),
            "pooling": chain.pool.signature(),
            "enrichers": chain.signature(),
            "appended_l2_normalize": appended_l2,
            "window_seconds": geo.window_seconds,
            "hop_seconds": float(geo.hop_seconds or geo.window_seconds),
            "min_seconds": geo.min_seconds,
            "window_samples": geo.window_samples,
            "hop_samples": geo.hop_samples,
            "min_samples": geo.min_samples,
            "overlap_frames": geo.overlap_frames,
            "space_hash": prep.space.hash,
            "space": json.loads(prep.space.to_json()),
        }

    def _verify(
        self, loaded: Any, prep: Any, device: Any, dtype: str, cast: bool
    ) -> dict[str, Any]:
        """Compare the saved model with ``musicembed run``'s pipeline on a generated clip."""
        import numpy as np
        import torch

        from ..audio import load_audio
        from ..examples import synth_clip, write_audio
        from ..pipeline import embed_paths

        geo = prep.geometry
        seconds = self.verify_seconds * geo.window_seconds + 0.5 * (
            geo.hop_seconds or geo.window_seconds
        )
        with tempfile.TemporaryDirectory(prefix="musicembed-export-") as tmp:
            clip = Path(tmp) / "verify.wav"
            write_audio(clip, synth_clip(seconds, geo.sample_rate, seed=11), geo.sample_rate)
            [res] = embed_paths([prep], [clip])
            if res.status != "ok":
                raise ExportError(f"the pipeline failed on the verification clip: {res.error}")
            wave = torch.from_numpy(load_audio(clip, geo.sample_rate))
        try:
            with torch.inference_mode():
                got = loaded(wave[None].to(device)).to("cpu", torch.float32)[0].numpy()
        except Exception as exc:
            raise ExportError(
                f"the exported model failed on a {seconds:.1f} s verification clip: "
                f"{_first_lines(exc)}"
            ) from exc
        want = res.vectors[0]
        diff = float(np.abs(got - want).max()) if got.shape == want.shape else math.inf
        if got.shape != want.shape:
            raise ExportError(
                f"the exported model returns {got.shape[0]} dims but the pipeline {want.shape[0]}"
            )
        tolerance = PIPELINE_TOLERANCE.get(dtype, PIPELINE_TOLERANCE["float32"])
        cos = float(np.dot(got, want) / max(np.linalg.norm(got) * np.linalg.norm(want), 1e-12))
        report = {
            "clip_seconds": round(seconds, 3),
            "max_abs_diff_vs_pipeline": diff,
            "cosine_vs_pipeline": cos,
            "tolerance": None if cast else tolerance,
        }
        if cast:  # another precision than the space's: report, do not refuse
            if cos < 0.99:
                log.warning(
                    "the %s export's vectors have cosine %.4f with the pipeline's", dtype, cos
                )
        elif diff > tolerance:
            raise ExportError(
                f"the exported model's vector differs from musicembed run's by up to {diff:.3g} "
                f"(tolerance {tolerance}) on a {seconds:.1f} s clip; the export was not "
                f"written. This is a bug in the encoder's module() or an enricher's "
                f"torch_module(): they must compute what encode()/enrich() compute."
            )
        return report


# --------------------------------------------------------------------------- the chain


def with_final_l2(enrichers: Sequence[Enricher]) -> tuple[list[Enricher], bool]:
    """The chain, ending with ``enrichers.l2_normalize`` (appended when missing)."""
    from ..builtins.enrichers import L2NormalizeEnricher

    chain = list(enrichers)
    if chain and isinstance(chain[-1], L2NormalizeEnricher):
        return chain, False
    return [*chain, L2NormalizeEnricher()], True


def _labels(enrichers: Sequence[Enricher]) -> list[str]:
    return [getattr(e, "name", "") or type(e).__name__ for e in enrichers]


def script_chain(
    enrichers: Sequence[Enricher], encoder: Encoder
) -> tuple[list[Any], Any, list[Any]]:
    """Scriptable modules of a validated chain: (frame stage, pooling, vector stage).

    Each enricher must provide ``torch_module(num_layers)``: an ``nn.Module``
    computing its ``enrich`` that ``torch.jit.script`` accepts. Each module is
    scripted and compared with ``enrich`` on random stacks, so a wrong or
    non-scriptable implementation is reported with the enricher's name.
    """
    import torch

    geometry = encoder.geometry()
    g = torch.Generator().manual_seed(0)
    # Two stacks of different lengths: pooling must not bake the frame count in.
    stacks = [
        torch.randn(geometry.num_layers, f, max(1, geometry.dim), generator=g) for f in (5, 23)
    ]
    frame_ops: list[Any] = []
    vector_ops: list[Any] = []
    pool: Any = None
    for e in enrichers:
        label = _labels([e])[0]
        maker = getattr(e, "torch_module", None)
        num_layers = int(stacks[0].shape[0])
        try:
            module = maker(num_layers) if maker is not None else None
        except NotImplementedError:
            module = None
        except Exception as exc:
            raise ExportError(f"enricher {label!r}: torch_module() failed: {exc}") from exc
        if module is None:
            raise ExportError(
                f"enricher {label!r} ({type(e).__module__}.{type(e).__qualname__}) has no "
                f"TorchScript implementation, so this chain cannot be exported. Use built-in "
                f"enrichers (layers, mean, std, max, iqr, robust_sigma, delta_mean, delta_std, stats, flatten, "
                f"l2_normalize), or give the enricher a torch_module(num_layers) method returning "
                f"a scriptable nn.Module that computes enrich()."
            )
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:
            raise ExportError(
                f"enricher {label!r}: its torch_module() is not scriptable with "
                f"torch.jit.script: {_first_lines(exc)}"
            ) from exc
        for i, x in enumerate(stacks):
            want = e.enrich(x)
            got = scripted(x)
            if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-5, atol=1e-6):
                raise ExportError(
                    f"enricher {label!r}: its torch_module() does not compute what enrich() "
                    f"computes (input shape {tuple(x.shape)})"
                )
            stacks[i] = want
        if e.stage == "frames":
            frame_ops.append(module)
        elif e.stage == "pool":
            pool = module
        else:
            vector_ops.append(module)
    return frame_ops, pool, vector_ops


def resolved_layers(frame_enrichers: Sequence[Enricher], num_layers: int) -> list[int] | None:
    """Encoder layer indices the vector is computed from (``None``: other frame enrichers)."""
    from ..builtins.enrichers import LayersEnricher

    layers = list(range(num_layers))
    for e in frame_enrichers:
        if not isinstance(e, LayersEnricher):
            return None
        layers = [layers[i] for i in e.resolve(len(layers))]
    return layers


# --------------------------------------------------------------------------- the encoder


def _resolve_device(name: str) -> Any:
    """``name`` checked by :func:`musicembed_core.hub.resolve_device`, as a ``torch.device``."""
    import torch

    from ..hub import ModelLoadError, resolve_device

    try:
        return torch.device(resolve_device(name))
    except ModelLoadError as exc:
        raise ExportError(f"export device: {exc}") from exc


def _module_device_dtype(module: Any) -> tuple[Any, Any]:
    import torch

    for t in [*module.parameters(), *module.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def prepare_encoder_module(encoder: Encoder, device: Any, dtype: Any) -> tuple[Any, Any, bool]:
    """The encoder's module in eval mode, without gradients or gradient checkpointing,
    on ``device`` and in ``dtype`` (None: its own). A copy when that means moving or
    casting it, so ``encode()`` is unchanged. Returns (module, its dtype, whether cast)."""
    encoder.load()
    try:
        module = encoder.module()
    except NotImplementedError as exc:
        raise ExportError(
            f"encoder {encoder.name!r} cannot be exported: {exc}. Encoders must implement "
            f"module() (see musicembed_core.components.Encoder.module)."
        ) from exc
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ExportError(
            f"encoder {encoder.name!r}: module() returned {type(module).__name__}, not a torch.nn.Module"
        )
    have_device, have_dtype = _module_device_dtype(module)
    dtype = have_dtype if dtype is None else dtype
    same_device = have_device.type == device.type and (
        device.index is None or have_device.index == device.index
    )
    if not same_device or have_dtype != dtype:
        module = copy.deepcopy(module).to(device=device, dtype=dtype)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    disable_gradient_checkpointing(module)
    return module, dtype, dtype != have_dtype


def disable_gradient_checkpointing(module: Any) -> None:
    """Turn off activation checkpointing in every submodule (transformers keeps a
    ``gradient_checkpointing`` flag on the modules that do it)."""
    for m in module.modules():
        if isinstance(getattr(m, "gradient_checkpointing", None), bool):
            m.gradient_checkpointing = False


def check_lengths(window: int, min_len: int) -> list[int]:
    """Input lengths the compiled encoder is checked at, besides the trace example (``window``).

    The exported model feeds the encoder full windows, tails and short tracks
    (down to ``min_len`` samples), so the check covers that range.
    """
    picks = [min_len, int(window * 0.37) + 1, int(window * 0.81) + 3]
    return sorted({max(min_len, min(p, window - 1)) for p in picks} - {window}) or [window]


def compile_encoder(
    module: Any, encoder: Encoder, geometry: Geometry, device: Any, dtype: Any
) -> tuple[Any, str, list[str]]:
    """``torch.jit.script`` the module, else ``torch.jit.trace`` it; check it generalises.

    Returns (compiled module, "script" or "trace", notes). The compiled module
    is compared with the eager one at B=1 and B=2 on lengths other than the
    trace example; any difference refuses the export with the reason.
    """
    import torch

    notes: list[str] = []
    window, min_len = geometry.window_samples, geometry.min_samples
    g = torch.Generator().manual_seed(1)

    def wave(b: int, t: int) -> Any:
        return (0.3 * torch.randn(b, t, generator=g)).to(device=device, dtype=dtype)

    def eager(x: Any) -> Any:
        try:
            with torch.no_grad():
                return module(x)
        except Exception as exc:
            dt = str(dtype).removeprefix("torch.")
            raise ExportError(
                f"encoder {encoder.name!r} fails on a {dt} wave [B={x.shape[0]}, T={x.shape[1]}] "
                f"on {device}: {_first_lines(exc)}"
            ) from exc

    eager(wave(1, window))
    try:
        compiled = torch.jit.script(module)
        how = "script"
    except Exception as exc:  # noqa: BLE001 - any scripting failure means: try tracing
        notes.append(f"torch.jit.script failed ({_first_lines(exc, 1)}); traced instead")
        example = wave(1, window)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                compiled = torch.jit.trace(module, example, check_trace=False)
            except Exception as texc:
                raise ExportError(
                    f"encoder {encoder.name!r}: module() can be neither scripted "
                    f"({_first_lines(exc, 1)}) nor traced ({_first_lines(texc)})"
                ) from texc
        tracer = sorted({str(w.message).split(". ")[0].rstrip(".") for w in caught
                         if issubclass(w.category, torch.jit.TracerWarning)})
        notes += [f"tracer warning: {m}" for m in tracer[:5]]
        how = "trace"
    cases = [(1, window), (2, window)] if how == "script" else [(2, window)]
    for t in check_lengths(window, min_len):
        cases += [(1, t), (2, t)]
    for b, t in cases:
        x = wave(b, t)
        want = eager(x)
        with torch.no_grad():
            try:
                got = compiled(x)
            except Exception as exc:  # noqa: BLE001
                got, failure = None, _first_lines(exc)
            else:
                failure = _mismatch(got, want)
        if failure:
            hint = (
                " The traced module does not generalise: its Python code turns input "
                "shapes into constants (e.g. int(x.shape[1]), numpy, Python loops over "
                "sizes). Make module() scriptable, or compute sizes with tensor ops."
                if how == "trace" else ""
            )
            traced_from = f"; the trace example was [B=1, T={window}]" if how == "trace" else ""
            warned = "; ".join(n for n in notes if n.startswith("tracer warning"))
            raise ExportError(
                f"encoder {encoder.name!r}: the {'traced' if how == 'trace' else 'scripted'} "
                f"module differs from the eager module for input [B={b}, T={t}]{traced_from}: "
                f"{failure}.{hint}"
                + (f" ({warned})" if warned else "")
            )
    return compiled, how, notes


def _mismatch(got: Any, want: Any) -> str:
    import torch

    if not isinstance(got, torch.Tensor) or not isinstance(want, torch.Tensor):
        return f"expected tensors, got {type(got).__name__} and {type(want).__name__}"
    if got.shape != want.shape:
        return f"output shape {tuple(got.shape)} instead of {tuple(want.shape)}"
    g, w = got.float(), want.float()
    scale = max(1.0, float(w.abs().max())) if w.numel() else 1.0
    err = float((g - w).abs().max()) if w.numel() else 0.0
    if not math.isfinite(err) or err > 1e-4 * scale:
        return f"values differ by up to {err:.3g}"
    return ""


def _first_lines(exc: BaseException, n: int = 3) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:n])


def meta_json(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=2, sort_keys=True)
