"""What ``musicembed export-model`` exports: an encoder and an enricher chain.

The command's argument is an encoder name (``logmel``, ``music2vec``, ...) or
a gin file: a run (its ``run.embeddings`` give encoder and chain; pick one
with ``--embedding``), or an encoder file under ``gin/encoders/`` defining a
macro such as ``LOGMEL = @encoders.logmel()``. The chain is the run's, or
else the default: the encoder's last layer, mean over frames, flattened,
L2-normalised. ``--layers`` and ``--pooling`` replace the chain's layer
selection and pooling step. Independent of the output format, so every model
exporter shares it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..components import Encoder, Enricher
from ..errors import ConfigError

DEFAULT_POOLING = "mean"
DEFAULT_LAYERS = "-1"
"""The encoder's last layer: the top transformer layer; for ``logmel`` layer 1,
the loudness-independent spectral shape."""


@dataclass
class ExportTarget:
    name: str
    """Embedding name (the run's, or the encoder's)."""
    encoder: Encoder
    enrichers: list[Enricher]
    source: str
    """Where encoder and chain came from, for messages."""


def is_gin_file(arg: str) -> bool:
    """An argument naming a gin file rather than an encoder (by suffix or path)."""
    return arg.endswith(".gin") or "/" in arg or Path(arg).is_file()


def resolve(
    spec: str,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
    embedding: str | None = None,
    layers: str | None = None,
    pooling: str | None = None,
) -> ExportTarget:
    """Encoder + chain for ``spec`` (an encoder name or a gin file) after the overrides."""
    from .. import ginconfig
    from ..plugins import get_manager

    manager = get_manager()
    base: list[Enricher] | None = None
    if is_gin_file(spec):
        from ..ginpath import resolve as resolve_gin

        spec = str(resolve_gin(spec, manager))  # a path, or a name such as runs/quickstart.gin
        ginconfig.parse([spec, *gin_files], gin_params, finalize=False)
        run_specs = _run_embeddings()
        if run_specs is not None:
            chosen = _pick(run_specs, embedding, spec)
            encoder, base, name = chosen.encoder, list(chosen.enrichers), chosen.name
            source = f"embedding {name!r} of run {spec}"
        else:
            encoder, macro = _encoder_from_gin(spec, embedding)
            name, source = encoder.name, f"{macro} in {spec}"
    else:
        if embedding is not None:
            raise ConfigError("--embedding selects an embedding of a run gin file; "
                              f"{spec!r} is an encoder name")
        manager.get("encoders", spec)  # unknown names fail here, naming the closest
        ginconfig.parse(gin_files, gin_params, finalize=False)
        encoder = _configured("encoders", spec)
        name, source = encoder.name, f"encoder {spec!r}"
    encoder.geometry()  # a bad checkpoint config fails here, before any weights load
    enrichers = build_chain(encoder, base, layers, pooling)
    return ExportTarget(name=name, encoder=encoder, enrichers=enrichers, source=source)


def build_chain(
    encoder: Encoder,
    base: Sequence[Enricher] | None,
    layers: str | None,
    pooling: str | None,
) -> list[Enricher]:
    """``base`` (a run's chain) with its layer selection / pooling replaced when given;
    without ``base``: layer selection, pooling, flatten, L2 normalisation."""
    from ..builtins.enrichers import FlattenEnricher, L2NormalizeEnricher, LayersEnricher
    from ..chain import EnricherChain

    if base is not None:
        chain = EnricherChain(base)
        frames = list(chain.frame_enrichers)
        pool: Enricher = chain.pool
        vector = list(chain.vector_enrichers)
    else:
        frames, pool, vector = [], None, [FlattenEnricher(), L2NormalizeEnricher()]  # type: ignore[assignment]
        layers = layers if layers is not None else DEFAULT_LAYERS
        pooling = pooling if pooling is not None else DEFAULT_POOLING
    if layers is not None:
        frames = [LayersEnricher(parse_layers(layers))]
        frames[0].resolve(encoder.geometry().num_layers)  # out-of-range indices fail now, with the range
    if pooling is not None:
        pool = pooling_enricher(pooling)
    return [*frames, pool, *vector]


def parse_layers(text: str) -> list[int] | str:
    """``--layers``: ``all``, a slice such as ``6:`` or ``-4:``, or indices ``3`` / ``3,5,7``."""
    text = text.strip()
    if text.lower() == "all" or ":" in text:
        return text
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise ConfigError(
            f"--layers {text!r}: give 'all', a layer index (e.g. -1), indices like '3,5,7' "
            f"or a slice like '6:'"
        ) from None


def pooling_enricher(text: str) -> Enricher:
    """``--pooling``: a pooling enricher's name (``mean``, ``iqr``, ...) or a comma list of
    statistics (``mean,std``: ``enrichers.stats``). Built through gin, so ``--gin_param``
    bindings such as ``enrichers.iqr.max_frames`` apply."""
    from ..plugins import get_manager

    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise ConfigError("--pooling is empty; e.g. --pooling mean or --pooling mean,std")
    if len(names) > 1:
        return _configured("enrichers", "stats", stats=names)
    info = get_manager().get("enrichers", names[0])
    stage = getattr(info.cls, "stage", None)
    if stage != "pool":
        raise ConfigError(
            f"--pooling {names[0]!r} is a {stage!r}-stage enricher, not a pooling step; use "
            f"mean, std, max, iqr, robust_sigma, delta_mean, delta_std, or several like 'mean,std'"
        )
    return _configured("enrichers", names[0])


# --------------------------------------------------------------------------- gin helpers


def _configured(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate ``<kind>.<name>`` through gin, so its bindings apply."""
    import gin

    from .. import ginconfig

    try:
        return gin.get_configurable(f"{kind}.{name}")(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(ginconfig.explain(exc)) from exc


def _run_embeddings() -> list[Any] | None:
    """The parsed run's embeddings (``run.embeddings`` evaluated), or None when no run is bound."""
    import gin

    from .. import ginconfig

    try:
        refs = gin.query_parameter("run.embeddings")
    except ValueError:
        return None
    try:
        # deepcopy is gin's documented way to evaluate the @references in a value.
        specs = copy.deepcopy(refs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(ginconfig.explain(exc)) from exc
    return list(specs)


def _pick(specs: Sequence[Any], wanted: str | None, where: str) -> Any:
    names = [s.name for s in specs]
    if wanted is None:
        if len(specs) == 1:
            return specs[0]
        raise ConfigError(
            f"{where} has several embeddings ({', '.join(names)}): choose one with --embedding NAME"
        )
    for s in specs:
        if s.name == wanted:
            return s
    raise ConfigError(f"{where} has no embedding named {wanted!r}; its embeddings: {', '.join(names)}")


def _encoder_from_gin(path: str, wanted: str | None) -> tuple[Encoder, str]:
    """The encoder a gin file provides: a macro (``LOGMEL = @encoders.logmel()``), or the
    one encoder whose parameters it binds."""
    import gin
    from gin import config as gin_config

    from .. import ginconfig

    macros: dict[str, Encoder] = {}
    bound: set[str] = set()
    # gin has no public listing of the parsed macros and bindings.
    for (scope, selector), _ in list(gin_config._CONFIG.items()):
        if selector == "gin.macro":
            try:
                value = copy.deepcopy(gin.query_parameter(f"%{scope}"))
            except (ValueError, TypeError) as exc:
                raise ConfigError(ginconfig.explain(exc)) from exc
            if isinstance(value, Encoder):
                macros[scope] = value
        elif selector.startswith("encoders."):
            bound.add(selector.split(".", 1)[1])
    if wanted is not None:
        if wanted not in macros:
            raise ConfigError(
                f"{path} defines no encoder macro {wanted!r}; its encoder macros: "
                f"{', '.join(sorted(macros)) or '(none)'}"
            )
        return macros[wanted], wanted
    if len(macros) == 1:
        (macro, enc), = macros.items()
        return enc, macro
    if len(macros) > 1:
        raise ConfigError(
            f"{path} defines several encoders ({', '.join(sorted(macros))}): choose one "
            f"with --embedding MACRO"
        )
    if len(bound) == 1:
        (name,) = bound
        return _configured("encoders", name), f"encoders.{name}"
    raise ConfigError(
        f"{path} defines no encoder: expected a run (run.embeddings = [...]) or an encoder "
        f"macro such as LOGMEL = @encoders.logmel() (see gin/encoders/)"
    )


# --------------------------------------------------------------------------- the command


def export_model(
    spec: str,
    output: str,
    fmt: str = "torchscript",
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
    embedding: str | None = None,
    layers: str | None = None,
    pooling: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    verify: bool | None = None,
) -> dict[str, Any]:
    """``musicembed export-model``: resolve the target, configure the exporter, export.

    ``device``/``dtype`` configure the encoder itself when it has such parameters
    (so the recorded embedding space is the one the export computes); otherwise
    the exporter moves/casts the encoder's module.
    """
    from ..components import ModelExporter, constructor_params
    from ..plugins import get_manager

    manager = get_manager()
    info = manager.get("exporters", fmt)
    if not issubclass(info.cls, ModelExporter):
        model_formats = [c.name for c in manager.all_components()
                         if c.kind == "exporters" and issubclass(c.cls, ModelExporter)]
        raise ConfigError(
            f"--format {fmt!r} is a vector exporter (for run.exporters), not a model format; "
            f"model formats: {', '.join(model_formats) or '(none)'}"
        )
    target = resolve(spec, gin_files, gin_params, embedding, layers, pooling)
    encoder_params = {n for n, _ in constructor_params(type(target.encoder))}
    overrides: dict[str, Any] = {}
    if device is not None:
        overrides["device"] = device
        if "device" in encoder_params:
            target.encoder.device = device  # type: ignore[attr-defined]
    if dtype is not None:
        if "dtype" in encoder_params:
            target.encoder.dtype = dtype  # type: ignore[attr-defined]
        else:
            overrides["dtype"] = dtype
    if verify is not None:
        overrides["verify"] = verify
    exporter = _configured("exporters", fmt, **overrides)
    return exporter.export(target.encoder, target.enrichers, output, name=target.name)
