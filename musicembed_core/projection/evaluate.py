"""``musicembed eval-projector``: the training's metrics for a checkpoint on any captioned set.

The checkpoint's captions are embedded and ranked against the stored vectors of
the space it was trained into (:mod:`.metrics`: t2a and a2t R@1/5/10, MRR, median
rank; plus the InfoNCE loss over batches in the training's fixed order). The set is
every captioned stored track (``split="all"``) or one split of the training
(``train``/``val``/``test`` from the training's split.json). With the training's
captions and ``--split test`` it reproduces training_summary.json's test metrics:
both go through :func:`~.train.evaluate_pairs` with the checkpoint's settings.

Vectors of another embedding space are refused, naming what differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MusicembedError, SpaceMismatchError

SPLITS = ("all", "train", "val", "test")


def _check_space(cfg: dict[str, Any], checkpoint: str, out: Any) -> None:
    from ..space import _diff
    from .checkpoint import target_signature

    want = target_signature(cfg)
    got = json.loads(out.space.to_json())
    if got.get("hash") == cfg["target_space"]["hash"]:
        return
    diffs = "; ".join(_diff(want, got)[:6]) or "hash differs"
    raise SpaceMismatchError(
        f"projector {checkpoint} maps text into embedding space {cfg['target_space']['hash']} "
        f"({cfg['target_space'].get('name') or 'unnamed'}), but {out.path} holds space "
        f"{got.get('hash')} ({got.get('name') or 'unnamed'}): {diffs}. Evaluate it on the vectors "
        f"of the run it was trained on (the same encoder and enricher chain)."
    )


def _split_ids(cfg: dict[str, Any], checkpoint: Path, split: str, split_file: str | None) -> list[str]:
    from .captions import Split

    candidates = [Path(split_file)] if split_file else []
    recorded = (cfg.get("training") or {}).get("split")
    if not split_file:
        if recorded:
            candidates.append(Path(recorded))
        candidates.append(checkpoint.parent / "split.json")
    for path in candidates:
        if path.is_file():
            try:
                record = Split.from_json(json.loads(path.read_text(encoding="utf-8")))
            except ValueError as exc:
                raise ConfigError(f"{path}: cannot read the split ({exc})") from exc
            ids = getattr(record, split)
            if not ids:
                raise ConfigError(f"{path}: the {split} split is empty (the training held out no "
                                  f"{split} tracks); use --split all or another split")
            return list(ids)
    raise ConfigError(
        f"--split {split}: no split.json found ({', '.join(str(p) for p in candidates)}); give "
        f"--split-file OUTDIR/split.json, or --split all"
    )


def evaluate_checkpoint(checkpoint: str, captions: str, captions_format: str = "auto",
                        vectors: str | None = None, run: Any = None, embedding: str | None = None,
                        split: str = "all", split_file: str | None = None,
                        device: str = "auto") -> dict[str, Any]:
    """Metrics of ``checkpoint`` on the captioned tracks of ``vectors`` (or of the run's output;
    default: the vectors it was trained on) restricted to ``split``."""
    from . import require

    for module in ("torch", "transformers", "peft"):
        require(module, "evaluating a text projector")
    from .checkpoint import read_config
    from .train import (evaluate_pairs, join_counts, load_training_data, open_vectors, pick_device,
                        use_bf16)

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    folder = Path(checkpoint).expanduser().absolute()
    cfg = read_config(folder)
    if vectors is None and run is None:
        vectors = (cfg.get("training") or {}).get("vectors")
        if not vectors:
            raise ConfigError(f"{folder}: the checkpoint does not record its vectors; give --vectors "
                              f"OUT.h5 or the run's --gin_file")
    out = open_vectors(vectors, run, embedding, doing="evaluate a projector on")
    try:
        _check_space(cfg, str(folder), out)
        data = load_training_data(out, captions, captions_format)
    finally:
        out.close()
    if split == "all":
        ids = list(data.ids)
        left_out = 0
    else:
        wanted = _split_ids(cfg, folder, split, split_file)
        ids = [t for t in wanted if t in data.row]
        left_out = len(wanted) - len(ids)
        if not ids:
            raise MusicembedError(
                f"none of the {len(wanted)} {split} tracks of the training has a caption in "
                f"{captions} (e.g. {', '.join(repr(t) for t in wanted[:3])})"
            )
    if len(ids) < 2:
        raise MusicembedError(f"{len(ids)} captioned track to rank: evaluation needs at least 2")
    hp = cfg.get("hyperparameters") or {}
    dev = pick_device(device, "--device")
    bf16 = use_bf16(hp.get("bf16", "auto"), dev)
    from .textmodel import load_projector

    model, _ = load_projector(folder, device=str(dev))
    result = evaluate_pairs(model, data, ids, batch_size=int(hp.get("batch_size", 32)),
                            eval_batch_size=int(hp.get("eval_batch_size", 128)),
                            temperature=float(hp.get("temperature", 0.07)),
                            seed=int(hp.get("seed", 0)), device=dev, bf16=bf16)
    return {
        "checkpoint": str(folder), "split": split, "space_hash": data.space.hash,
        "vectors": data.source, "captions": data.captions_path,
        "split_tracks_without_caption": left_out, "join": join_counts(data.joined),
        "join_report": data.joined.report(), "metrics": result,
    }


def print_evaluation(result: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    m = result["metrics"]
    table = Table(title=f"{escape(result['checkpoint'])} on {result['split']} "
                        f"({m['tracks']} tracks, {m['captions']} captions)", title_justify="left")
    table.add_column("direction")
    for col in ("R@1", "R@5", "R@10", "MRR", "median rank", "chance R@10"):
        table.add_column(col, justify="right")
    for d in ("t2a", "a2t"):
        x = m[d]
        table.add_row(d, f"{x['R@1']:.3f}", f"{x['R@5']:.3f}", f"{x['R@10']:.3f}", f"{x['MRR']:.3f}",
                      f"{x['median_rank']:g}", f"{x['chance_R@10']:.3f}")
    console.print(table)
    console.print(f"loss {m['loss']:.4f}; {escape(result['join_report'])}", highlight=False,
                  soft_wrap=True)
