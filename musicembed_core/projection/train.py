"""Training a text->audio projector (``musicembed train-projector``).

A run's stored track vectors (L2-normalised, frozen) are paired with captions; a
text encoder with LoRA adapters plus a projection head (:class:`~.textmodel.TextToAudio`)
learns, with symmetric InfoNCE (:mod:`.losses`), to put each caption near its
track's vector. Everything is configured by gin (``train/*.gin``):

* ``text_model.*``: which text encoder (:class:`~.textmodel.TextModelSpec`);
* ``projection_head.*``: ``hidden`` size and ``dropout`` of the head;
* ``train.*``: the optimisation (:func:`train_settings`).

The output folder (``-o OUTDIR``) holds::

    config.json            what is trained on what (vectors, captions, settings): resume checks it
    operative_config.gin   the gin bindings in force
    split.json             train / val / test track ids (by track: no track in two splits)
    train_log.jsonl        one JSON object per epoch ({"event": "epoch", ...}) and per
                           logged optimizer step ({"event": "step", ...})
    tensorboard/           the same figures for TensorBoard
    best_r1/ best_loss/    checkpoints (projectors.trained loads them) with the best
                           validation t2a R@1 (ties: MRR) and the lowest validation loss
    last/                  the latest checkpoint + training_state.safetensors/.json
    training_summary.json  test metrics of best_r1 (when there is a test split), val metrics,
                           epochs, stop reason, speed, the warmup rule applied, data counts

Schedule: AdamW (two parameter groups: head and LoRA); the learning rate rises
linearly over the warmup, then falls linearly to 0 at the last optimizer step.
**Warmup rule**: ``warmup = min(train.warmup_steps, floor(train.warmup_max_fraction x
total optimizer steps))``, so small data sets (where 2000 steps would be most of the
run) warm up over at most 10 % of it. An optimizer step follows every
``train.grad_accum`` batches and the last batch of an epoch; total optimizer steps =
epochs x ceil(batches per epoch / grad_accum).

Resume: ``last/`` is written at each epoch end and every ``train.save_every_steps``
optimizer steps; it carries the optimizer state and the torch/CUDA RNG state
(training_state.safetensors) and the schedule, numpy/python RNG state, epoch, batch
within the epoch, step, best values and patience counter (training_state.json). No
pickles. Rerunning the same command continues from there; the epoch's batch order is
a permutation seeded by (seed, epoch), so a resumed run sees the same batches.

bf16: ``train.bf16 = 'auto'`` (default) uses bf16 autocast on a CUDA device that
supports it, and float32 elsewhere (CPU bf16 autocast is slower than float32 on most
CPUs; ``train.bf16 = True`` forces it). torch, transformers and peft are imported
only when training starts.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..atomic import atomic_write_json, atomic_write_text
from ..errors import ConfigError, MusicembedError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from ..space import EmbeddingSpace
    from .captions import Joined, Split
    from .textmodel import TextModelSpec, TextToAudio

TRAINING_FORMAT = "musicembed-projector-training"
STATE_FORMAT = "musicembed-training-state"
SUMMARY_FORMAT = "musicembed-projector-training-summary"
VERSION = 1
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
OUR_FILES = ("config.json", "operative_config.gin", "split.json", "train_log.jsonl", "tensorboard",
             "best_r1", "best_loss", "last", "training_summary.json")
"""What a training writes into its output folder (``--restart`` removes exactly these)."""
WARMUP_RULE = "min(train.warmup_steps, floor(train.warmup_max_fraction * total_optimizer_steps))"
RESUMABLE = ("epochs", "patience", "save_every_steps", "device", "eval_batch_size",
             "log_every_steps")
"""``train.*`` values that may change between a run and its resumption (the others may not).
Changing ``epochs`` changes the schedule's length from then on."""


# --------------------------------------------------------------------------- gin configurables
# (in .settings, which gin registration imports without the loop)
from .settings import (HeadSettings, TrainSettings, projection_head, text_model,  # noqa: E402,F401
                       train_settings)


# --------------------------------------------------------------------------- schedule


def warmup_for(total_steps: int, warmup_steps: int, max_fraction: float) -> int:
    """Warmup steps applied (the rule: module doc, :data:`WARMUP_RULE`)."""
    return max(0, min(int(warmup_steps), math.floor(float(max_fraction) * int(total_steps))))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier of optimizer step ``step`` (0-based): ``(step+1)/warmup``
    during warmup, then linear decay from 1 to ``1/(total-warmup)`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    if total <= warmup:
        return 1.0
    return max(0.0, (total - step) / (total - warmup))


def batches_of(n_pairs: int, batch_size: int) -> int:
    """Batches per epoch (a last batch of one pair, which has no negative, is dropped)."""
    full, rest = divmod(n_pairs, batch_size)
    return full + (1 if rest >= 2 else 0)


def optimizer_steps_per_epoch(n_batches: int, grad_accum: int) -> int:
    return math.ceil(n_batches / grad_accum)


def epoch_order(n_pairs: int, seed: int, epoch: int) -> "np.ndarray":
    """The pairs' order in ``epoch``: a permutation seeded by ``(seed, epoch)`` alone."""
    import numpy as np

    return np.random.default_rng([int(seed), int(epoch)]).permutation(n_pairs)


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """Captioned stored tracks: vectors L2-normalised, row ``i`` belongs to ``ids[i]``."""

    source: str
    space: "EmbeddingSpace"
    ids: list[str]
    vectors: "np.ndarray"
    texts: dict[str, list[str]]
    joined: "Joined"
    paths: dict[str, str]
    captions_path: str
    captions_format: str
    captions_sha256: str
    row: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row = {tid: i for i, tid in enumerate(self.ids)}

    def pairs(self, track_ids: Sequence[str]) -> tuple[list[str], "np.ndarray"]:
        """Every caption of ``track_ids`` and the row of its track (``[pairs]`` int64)."""
        import numpy as np

        texts, rows = [], []
        for tid in track_ids:
            for text in self.texts[tid]:
                texts.append(text)
                rows.append(self.row[tid])
        return texts, np.asarray(rows, dtype=np.int64)


def open_vectors(vectors: str | None = None, cfg: Any = None, embedding: str | None = None,
                 doing: str = "train a projector on") -> Any:
    """The stored output to read: ``vectors`` (an HDF5 file or safetensors folder) or the
    output of embedding ``embedding`` of the run ``cfg`` (found as ``musicembed tag`` does)."""
    from ..stored import open_output

    if vectors is not None:
        return open_output(Path(vectors).expanduser())
    if cfg is None:
        raise ConfigError(
            "no vectors to train on: give --vectors OUT.h5 (a run's HDF5 file or safetensors "
            "folder), or the run's gin files with --gin_file RUN.gin"
        )
    from ..outputs import open_run_output
    from ..pipeline import PreparedEmbedding
    from ..search import _pick

    spec = _pick(cfg.embeddings, embedding, "embedding", "--embedding")
    return open_run_output(cfg, PreparedEmbedding.build(spec), doing=doing)


def load_training_data(out: Any, captions: str, captions_format: str = "auto") -> TrainingData:
    """Read ``out``'s vectors, join the caption file to its ids (errors say what was tried)."""
    import numpy as np

    from .captions import join_captions, read_captions
    from .checkpoint import sha256_file

    cf = read_captions(captions, captions_format)
    ids = list(out.ids)
    if not ids:
        raise MusicembedError(f"{out.path} holds no tracks: run `musicembed run` first")
    paths: dict[str, str] = {}
    for tid in ids:
        p = out.metadata(tid).get("path")
        if p:
            paths[tid] = str(p)
    joined = join_captions(cf, ids, paths)
    if not joined.texts:
        keys = cf.keys
        raise MusicembedError(
            f"no caption of {captions} matched a track of {out.path}: {len(keys)} keys tried "
            f"(column {cf.key_field!r}, e.g. {', '.join(repr(k) for k in keys[:3]) or 'none'}) "
            f"against {len(ids)} stored ids (e.g. {', '.join(repr(t) for t in ids[:3])}) by exact "
            f"id, relative path, stored path, path suffix, file name and stem. Key the captions "
            f"by the stored id (the path relative to run.source), or check that the run embedded "
            f"the captioned files."
        )
    keep = [tid for tid in ids if tid in joined.texts]
    index = {tid: i for i, tid in enumerate(ids)}
    all_vecs = np.asarray(out.vectors(), dtype=np.float32)
    vecs = all_vecs[[index[t] for t in keep]]
    del all_vecs
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = vecs / np.maximum(norms, 1e-12)
    return TrainingData(
        source=str(Path(out.path).absolute()), space=out.space, ids=keep, vectors=vecs,
        texts={t: joined.texts[t] for t in keep}, joined=joined,
        paths={t: paths[t] for t in keep if t in paths},
        captions_path=str(Path(captions).expanduser().absolute()), captions_format=cf.fmt,
        captions_sha256=sha256_file(Path(captions).expanduser()),
    )


def join_counts(joined: "Joined") -> dict[str, int]:
    return {"pairs": joined.pairs, "captioned_tracks": len(joined.texts),
            "uncaptioned_tracks": len(joined.uncaptioned), "unmatched_captions": len(joined.unmatched),
            "ambiguous_captions": len(joined.ambiguous), "skipped_rows": joined.skipped_rows}


# --------------------------------------------------------------------------- device, evaluation


def pick_device(device: str, where: str = "train.device") -> "torch.device":
    """``device`` as a ``torch.device``, checked by :func:`musicembed_core.hub.resolve_device`
    (``auto``: cuda, mps or cpu, as for every model); errors name ``where``."""
    import torch

    from ..hub import ModelLoadError, resolve_device

    try:
        return torch.device(resolve_device(device))
    except ModelLoadError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def use_bf16(setting: Any, device: "torch.device") -> bool:
    """Whether to autocast to bf16 (see the module doc)."""
    import torch

    if setting == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return bool(setting)


def autocast(device: "torch.device", bf16: bool) -> Any:
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def embed_texts(model: "TextToAudio", texts: Sequence[str], batch_size: int, device: "torch.device",
                bf16: bool) -> "np.ndarray":
    """Projected captions, float32 ``[N, audio_dim]`` (eval mode, no gradients)."""
    import numpy as np
    import torch

    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                with autocast(device, bf16):
                    vec = model(list(texts[start:start + batch_size]))
                out.append(vec.float().cpu().numpy())
    finally:
        model.train(was_training)
    dim = model.head.audio_dim if hasattr(model.head, "audio_dim") else 0
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def evaluate_pairs(model: "TextToAudio", data: TrainingData, track_ids: Sequence[str], *,
                   batch_size: int, eval_batch_size: int, temperature: float, seed: int,
                   device: "torch.device", bf16: bool) -> dict[str, Any]:
    """Loss and retrieval metrics of ``model`` on the captions of ``track_ids``.

    The loss is the training InfoNCE over batches of ``batch_size`` pairs in a fixed
    order (seeded by ``seed``); metrics rank against these tracks only (:mod:`.metrics`).
    """
    import numpy as np
    import torch

    from .losses import info_nce
    from .metrics import retrieval_metrics

    track_ids = list(track_ids)
    texts, rows = data.pairs(track_ids)
    if not texts:
        raise MusicembedError("no captioned tracks to evaluate")
    text_vecs = embed_texts(model, texts, eval_batch_size, device, bf16)
    local = {r: i for i, r in enumerate(data.row[t] for t in track_ids)}
    caption_track = np.asarray([local[int(r)] for r in rows], dtype=np.int64)
    audio = data.vectors[[data.row[t] for t in track_ids]]
    metrics = retrieval_metrics(text_vecs, caption_track, audio)
    order = np.random.default_rng([int(seed), 1 << 20]).permutation(len(texts))
    losses, weights = [], []
    for start in range(0, len(order), batch_size):
        b = order[start:start + batch_size]
        if len(b) < 2:
            continue
        loss = info_nce(torch.from_numpy(text_vecs[b]), torch.from_numpy(data.vectors[rows[b]]),
                        torch.from_numpy(rows[b]), temperature)
        losses.append(float(loss))
        weights.append(len(b))
    loss_value = float(np.average(losses, weights=weights)) if losses else float("nan")
    return {"loss": loss_value, **metrics, "tracks": len(track_ids), "captions": len(texts)}


def better_r1(candidate: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Validation t2a R@1 higher, or equal with a higher MRR."""
    if best is None:
        return True
    c, b = candidate["t2a"], best["t2a"]
    return (c["R@1"], c["MRR"]) > (b["R@1"], b["MRR"])


# --------------------------------------------------------------------------- state (no pickles)


@dataclass
class TrainState:
    epoch: int = 0
    """Epochs completed (the next epoch to run)."""
    batch: int = 0
    """Batches of epoch ``epoch`` already done (resume mid-epoch)."""
    step: int = 0
    """Optimizer steps taken."""
    best_r1: dict[str, Any] | None = None
    """{"epoch", "step", "val": metrics} of the best validation t2a R@1 so far."""
    best_loss: dict[str, Any] | None = None
    bad_epochs: int = 0
    finished: bool = False
    stop_reason: str | None = None
    elapsed: float = 0.0
    """Seconds spent training (optimizer work, not validation), over all sessions."""
    pairs_seen: int = 0
    sessions: int = 1


def _optimizer_tensors(optimizer: "torch.optim.Optimizer") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if hasattr(value, "detach"):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().to("cpu").contiguous()
            else:  # a plain number in some optimizers' state
                tensors[f"optimizer.{idx}.{key}"] = __import__("torch").tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, groups


def write_training_state(folder: Path, optimizer: "torch.optim.Optimizer", state: TrainState,
                         schedule: dict[str, Any], device: "torch.device") -> None:
    """training_state.safetensors (optimizer tensors, torch/CUDA RNG) + training_state.json."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tensors, groups = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    save_file(tensors, str(folder / STATE_TENSORS))
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    doc = {
        "format": STATE_FORMAT, "version": VERSION,
        **asdict(state),
        "optimizer": {"param_groups": groups},
        "scheduler": schedule,
        "rng": {"numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
                "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss}},
    }
    (folder / STATE_JSON).write_text(json.dumps(doc, indent=1), encoding="utf-8")


def read_training_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, json doc) of ``folder``'s training state; errors name the file."""
    from safetensors.torch import load_file

    try:
        doc = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, ValueError) as exc:
        raise MusicembedError(
            f"{folder}: cannot read the training state ({exc}); resume is impossible: rerun with "
            f"--restart to start over, or use a new -o folder"
        ) from exc
    if doc.get("format") != STATE_FORMAT:
        raise MusicembedError(f"{folder / STATE_JSON}: not a musicembed training state")
    return tensors, doc


def restore_training_state(tensors: dict[str, Any], doc: dict[str, Any],
                           optimizer: "torch.optim.Optimizer", device: "torch.device") -> TrainState:
    import numpy as np
    import torch

    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g)
              for g in doc["optimizer"]["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                       key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and device.type == "cuda":
        torch.cuda.set_rng_state_all(cuda)
    n = doc["rng"]["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = doc["rng"]["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    fields = {f: doc[f] for f in TrainState.__dataclass_fields__ if f in doc}
    return TrainState(**fields)


# --------------------------------------------------------------------------- output folder


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of config.json a resumed training must share with the first session."""
    return {
        "space_hash": config["vectors"]["space_hash"],
        "captions": {"sha256": config["captions"]["sha256"], "format": config["captions"]["format"]},
        "text_model": config["text_model"],
        "head": config["head"],
        "train": {k: v for k, v in config["train"].items() if k not in RESUMABLE},
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    if old != new:
        return [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]
    return []


def prepare_output(outdir: Path, config: dict[str, Any], restart: bool) -> bool:
    """Make ``outdir`` ready; True when an earlier session's training is to be resumed.

    Refuses a folder holding something else, or another training (other data or
    settings), saying to use a new ``-o`` folder or ``--restart``.
    """
    from .checkpoint import recover_folder

    if outdir.exists() and not outdir.is_dir():
        raise ConfigError(f"-o {outdir}: is a file; give a folder for the training's outputs")
    cfg_file = outdir / "config.json"
    if restart and outdir.is_dir():
        for name in OUR_FILES:
            p = outdir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    outdir.mkdir(parents=True, exist_ok=True)
    for name in ("last", "best_r1", "best_loss"):
        recover_folder(outdir / name)
    if not cfg_file.is_file():
        others = sorted(n for n in os.listdir(outdir) if n not in OUR_FILES and not n.startswith("."))
        if others:
            raise ConfigError(
                f"-o {outdir}: the folder holds files that are not a projector training "
                f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); give a new or "
                f"empty folder"
            )
        return False
    try:
        old = json.loads(cfg_file.read_text(encoding="utf-8"))
        if old.get("format") != TRAINING_FORMAT:
            raise ValueError(f"format {old.get('format')!r}")
        old_id = _identity(old)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"-o {outdir}: {cfg_file} is not a musicembed projector training ({exc}); give a new "
            f"folder, or --restart to replace its training"
        ) from exc
    diffs = _differences(old_id, _identity(config))
    if diffs:
        raise ConfigError(
            f"-o {outdir} holds another training (other data or settings: {'; '.join(diffs[:6])}"
            f"{'; ...' if len(diffs) > 6 else ''}). Use a new -o folder to train this one, or "
            f"--restart to discard that training and start over in this folder."
        )
    return (outdir / "last" / STATE_JSON).is_file()


def _trains_on(doc: dict[str, Any], settings: TrainSettings) -> bool:
    """A training that stopped at its last epoch goes on when train.epochs was raised
    (one that stopped early does not)."""
    return str(doc.get("stop_reason") or "").startswith("reached train.epochs") and \
        settings.epochs > int(doc.get("epoch", 0))


def _log_lines_until(path: Path, step: int) -> None:
    """Keep train_log.jsonl's lines up to optimizer step ``step`` (after a resume, the lines a
    killed session wrote past its last checkpoint are redone)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class _Log:
    """train_log.jsonl (appended, flushed each line) + TensorBoard."""

    def __init__(self, outdir: Path, purge_step: int | None) -> None:
        from . import require

        require("tensorboard", "logging projector training to TensorBoard")
        from torch.utils.tensorboard import SummaryWriter

        self.path = outdir / "train_log.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.tb = SummaryWriter(log_dir=str(outdir / "tensorboard"), purge_step=purge_step)

    def write(self, entry: dict[str, Any]) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(tag, value, step)

    def close(self) -> None:
        self.tb.close()
        self.file.close()


# --------------------------------------------------------------------------- checkpoints


def checkpoint_config(settings: TrainSettings, data: TrainingData, schedule: dict[str, Any],
                      state: TrainState, metrics: dict[str, Any] | None, outdir: Path) -> dict[str, Any]:
    """What the trainer adds to a checkpoint's config.json (:func:`~.textmodel.save_projector`
    fills in format, version, text_model and head from the model)."""
    return {
        "target_space": {"hash": data.space.hash, "name": data.space.name,
                         "signature": json.loads(data.space.to_json())},
        "hyperparameters": {**asdict(settings), "warmup_applied": schedule["warmup"],
                            "total_steps": schedule["total"]},
        "epoch": state.epoch, "step": state.step, "metrics": metrics or {},
        "training": {"output": str(outdir), "vectors": data.source, "captions": data.captions_path,
                     "captions_format": data.captions_format, "split": str(outdir / "split.json")},
    }


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainRequest:
    """One ``musicembed train-projector`` invocation."""

    captions: str
    outdir: str
    captions_format: str = "auto"
    vectors: str | None = None
    run: Any = None
    """A RunConfig whose output holds the vectors (when ``vectors`` is None)."""
    embedding: str | None = None
    restart: bool = False
    operative_config: str = ""


@dataclass
class TrainResult:
    summary: dict[str, Any]
    already_finished: bool = False


class _Progress:
    """A rich progress bar over an epoch's batches showing the current loss."""

    def __init__(self, console: Any, enabled: bool) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("batches  loss {task.fields[loss]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                            disable=not enabled, transient=False)
        self.task: Any = None

    def __enter__(self) -> "_Progress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def epoch(self, label: str, total: int, done: int) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task("train", total=total, completed=done, epoch=label, loss="-")

    def advance(self, loss: float | None) -> None:
        fields = {} if loss is None else {"loss": f"{loss:.4f}"}
        self.bar.update(self.task, advance=1, **fields)

    def note(self, text: str) -> None:
        self.bar.console.print(text, highlight=False, soft_wrap=True)


def _resolve_test_ids(settings: TrainSettings) -> list[str] | None:
    from .captions import read_id_list

    if settings.test_ids is None:
        return None
    if isinstance(settings.test_ids, list):
        return list(settings.test_ids)
    path = Path(settings.test_ids).expanduser()
    if not path.is_file():
        raise ConfigError(f"train.test_ids={settings.test_ids!r}: no such file (one track id or "
                          f"path per line)")
    return read_id_list(path)


def _split(data: TrainingData, settings: TrainSettings, outdir: Path, resuming: bool,
           log: Callable[[str], None]) -> "Split":
    from .captions import Split, split_tracks

    path = outdir / "split.json"
    saved = None
    if path.is_file():
        try:
            saved = Split.from_json(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise ConfigError(f"{path}: cannot read it ({exc}); use --restart or a new -o folder") from exc
        missing = [t for t in saved.train + saved.val + saved.test if t not in data.row]
        if missing:
            raise ConfigError(
                f"{path} names {len(missing)} tracks that are no longer captioned stored tracks "
                f"(e.g. {', '.join(repr(t) for t in missing[:3])}): the data changed since this "
                f"training started. Use a new -o folder, or --restart."
            )
    try:
        test_ids = _resolve_test_ids(settings)
    except ConfigError:
        if saved is None or not resuming:
            raise
        # a relative train.test_ids from another working directory: the saved split holds it
        log(f"train.test_ids={settings.test_ids!r} is not found from here; resuming with the "
            f"test tracks saved in {path}")
        return saved
    fresh = split_tracks(data.ids, val_fraction=settings.val_fraction,
                         test_fraction=settings.test_fraction, test_ids=test_ids,
                         seed=settings.seed, paths=data.paths)
    if saved is not None:
        if (saved.train, saved.val, saved.test) != (fresh.train, fresh.val, fresh.test):
            if not resuming:
                raise ConfigError(
                    f"{path} holds another split ({len(saved.train)}/{len(saved.val)}/"
                    f"{len(saved.test)} train/val/test tracks, now {len(fresh.train)}/"
                    f"{len(fresh.val)}/{len(fresh.test)}); use a new -o folder or --restart"
                )
            log(f"resuming with the saved split of {path} ({len(saved.train)}/{len(saved.val)}/"
                f"{len(saved.test)} tracks; the data now would split "
                f"{len(fresh.train)}/{len(fresh.val)}/{len(fresh.test)})")
        return saved
    atomic_write_json(path, fresh.to_json(), indent=1)
    return fresh


def _build_model(spec: "TextModelSpec", head: HeadSettings, settings: TrainSettings, audio_dim: int,
                 device: "torch.device") -> "TextToAudio":
    from .textmodel import TextToAudio

    model = TextToAudio(spec, audio_dim, hidden=head.hidden, dropout=head.dropout, lora=settings.lora)
    return model.to(device)


def _optimizer(model: "TextToAudio", settings: TrainSettings) -> "torch.optim.Optimizer":
    import torch

    params = model.trainable_parameters()
    head = [p for p in params["head"] if p.requires_grad]
    lora = [p for p in params["lora"] if p.requires_grad]
    groups = [{"params": head, "lr": settings.lr_head, "name": "head"}]
    if lora:
        groups.append({"params": lora, "lr": settings.lr_lora, "name": "lora"})
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.AdamW(groups, weight_decay=settings.weight_decay)


def print_summary(summary: dict[str, Any], console: Any) -> None:
    """The end-of-training table: val (and test) metrics of best_r1, the stop reason, speed."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="projector training", title_justify="left")
    table.add_column("split / direction")
    for col in ("R@1", "R@5", "R@10", "MRR", "median rank", "chance R@10", "loss"):
        table.add_column(col, justify="right")
    rows = [("val", (summary.get("best_r1") or {}).get("val"))]
    if summary.get("test"):
        rows.append(("test", summary["test"]))
    for label, m in rows:
        if not m:
            continue
        for d in ("t2a", "a2t"):
            x = m[d]
            table.add_row(f"{label} {d}", f"{x['R@1']:.3f}", f"{x['R@5']:.3f}", f"{x['R@10']:.3f}",
                          f"{x['MRR']:.3f}", f"{x['median_rank']:g}", f"{x['chance_R@10']:.3f}",
                          f"{m['loss']:.4f}" if d == "t2a" else "")
    console.print(table)
    best = summary.get("best_r1") or {}
    console.print(
        f"{summary['epochs_run']} epochs, {summary['steps']} optimizer steps "
        f"(warmup {summary['warmup']['applied']}); stopped: {escape(str(summary['stop_reason']))}; "
        f"{summary['pairs_per_second']:.1f} pairs/s. best_r1: epoch {best.get('epoch')} -> "
        f"{escape(summary['checkpoints']['best_r1'])}",
        highlight=False, soft_wrap=True,
    )


def train_projector(req: TrainRequest, spec: "TextModelSpec", head: HeadSettings,
                    settings: TrainSettings, console: Any = None, show_progress: bool = True,
                    stop_after_steps: int | None = None) -> TrainResult:
    """Train (or resume, or report a finished training) per the module doc.

    ``stop_after_steps``: return after that many optimizer steps in total, as if killed
    right after ``last/`` was written (tests of resume).
    """
    from rich.console import Console

    from . import require

    for module in ("torch", "transformers", "peft", "safetensors"):
        require(module)
    import numpy as np
    import torch

    from .losses import info_nce
    from .metrics import flatten

    console = console or Console(stderr=True)
    outdir = Path(req.outdir).expanduser().absolute()

    out = open_vectors(req.vectors, req.run, req.embedding)
    try:
        data = load_training_data(out, req.captions, req.captions_format)
    finally:
        out.close()
    config = {
        "format": TRAINING_FORMAT, "version": VERSION,
        "vectors": {"path": data.source, "space_hash": data.space.hash, "embedding": data.space.name,
                    "dim": data.space.dim},
        "captions": {"path": data.captions_path, "format": data.captions_format,
                     "sha256": data.captions_sha256},
        "text_model": asdict(spec), "head": asdict(head), "train": asdict(settings),
    }
    resuming = prepare_output(outdir, config, req.restart)
    summary_path = outdir / "training_summary.json"
    if resuming:
        state_tensors, doc = read_training_state(outdir / "last")
        if doc.get("finished") and not _trains_on(doc, settings) and summary_path.is_file():
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            console.print(
                f"{outdir}: this training is finished ({doc.get('stop_reason')}); its results are in "
                f"{summary_path}. Use --restart to train again, or a new -o folder.",
                highlight=False, soft_wrap=True)
            return TrainResult(summary, already_finished=True)
    atomic_write_json(outdir / "config.json", {**config, "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
                      indent=1)
    if req.operative_config:
        atomic_write_text(outdir / "operative_config.gin", req.operative_config)

    console.print(data.joined.report(), highlight=False, soft_wrap=True)
    split = _split(data, settings, outdir, resuming, lambda m: console.print(m, highlight=False))
    train_texts, train_rows = data.pairs(split.train)
    n_batches = batches_of(len(train_texts), settings.batch_size)
    if n_batches == 0:
        raise MusicembedError(
            f"{len(train_texts)} training captions are too few for one batch of 2 pairs: caption "
            f"more tracks")
    per_epoch = optimizer_steps_per_epoch(n_batches, settings.grad_accum)
    total = settings.epochs * per_epoch
    warmup = warmup_for(total, settings.warmup_steps, settings.warmup_max_fraction)
    schedule = {"kind": "linear_warmup_linear_decay", "warmup": warmup, "total": total,
                "rule": WARMUP_RULE, "configured_warmup_steps": settings.warmup_steps,
                "warmup_max_fraction": settings.warmup_max_fraction}

    device = pick_device(settings.device)
    bf16 = use_bf16(settings.bf16, device)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed % (2 ** 32))
    random.seed(settings.seed)
    model = _build_model(spec, head, settings, data.space.dim, device)
    optimizer = _optimizer(model, settings)
    state = TrainState()
    if resuming:
        from safetensors.torch import load_file

        from .checkpoint import WEIGHTS_FILE

        model.load_trainable_state(load_file(str(outdir / "last" / WEIGHTS_FILE), device=str(device)))
        state = restore_training_state(state_tensors, doc, optimizer, device)
        state.sessions += 1
        if state.finished and _trains_on(doc, settings):
            console.print(f"training on from epoch {state.epoch} to train.epochs={settings.epochs}",
                          highlight=False)
            state.finished, state.stop_reason = False, None
            summary_path.unlink(missing_ok=True)
        console.print(f"resuming {outdir} at epoch {state.epoch + 1}, batch {state.batch}, optimizer "
                      f"step {state.step}", highlight=False, soft_wrap=True)
        _log_lines_until(outdir / "train_log.jsonl", state.step)
    else:
        (outdir / "train_log.jsonl").unlink(missing_ok=True)
        shutil.rmtree(outdir / "tensorboard", ignore_errors=True)

    def save(folder: str, metrics: dict[str, Any] | None, with_state: bool) -> None:
        from .textmodel import save_projector

        cfg = checkpoint_config(settings, data, schedule, state, metrics, outdir)
        extra = (lambda tmp: write_training_state(tmp, optimizer, state, schedule, device)) \
            if with_state else None
        save_projector(outdir / folder, model, cfg, extra)

    audio = torch.from_numpy(data.vectors)
    log = _Log(outdir, purge_step=state.step if resuming else None)
    console.print(
        f"training on {len(split.train)} tracks ({len(train_texts)} captions), validating on "
        f"{len(split.val)}, testing on {len(split.test)}; {n_batches} batches of "
        f"{settings.batch_size} per epoch, an optimizer step every {settings.grad_accum}: {total} "
        f"steps over {settings.epochs} epochs, warmup {warmup} ({WARMUP_RULE}); device {device}"
        f"{', bf16' if bf16 else ''}", highlight=False, soft_wrap=True)
    model.train()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    session_start = time.perf_counter()
    stop_now = False
    try:
        with _Progress(console, show_progress) as bar:
            while not state.finished and state.epoch < settings.epochs:
                epoch = state.epoch
                order = epoch_order(len(train_texts), settings.seed, epoch)
                bar.epoch(f"{epoch + 1}/{settings.epochs}", n_batches, state.batch)
                window_loss, window_n = 0.0, 0
                t0 = time.perf_counter()
                for b in range(state.batch, n_batches):
                    idx = order[b * settings.batch_size:(b + 1) * settings.batch_size]
                    group = b // settings.grad_accum
                    in_group = min(settings.grad_accum, n_batches - group * settings.grad_accum)
                    rows = torch.from_numpy(train_rows[idx])
                    with autocast(device, bf16):
                        text_vec = model([train_texts[i] for i in idx])
                    loss = info_nce(text_vec, audio[rows].to(device), rows.to(device),
                                    settings.temperature)
                    (loss / in_group).backward()
                    loss_value = float(loss.detach())
                    window_loss += loss_value
                    window_n += 1
                    state.pairs_seen += len(idx)
                    boundary = (b + 1) % settings.grad_accum == 0 or b + 1 == n_batches
                    bar.advance(loss_value)
                    if not boundary:
                        continue
                    factor = lr_factor(state.step, warmup, total)
                    for g in optimizer.param_groups:
                        g["lr"] = g["initial_lr"] * factor
                    if settings.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    state.step += 1
                    state.batch = b + 1
                    if state.step % settings.log_every_steps == 0:
                        entry = {"event": "step", "epoch": epoch + 1, "step": state.step,
                                 "loss": window_loss / window_n,
                                 **{f"lr_{g.get('name', i)}": g["lr"]
                                    for i, g in enumerate(optimizer.param_groups)}}
                        log.write(entry)
                        log.scalars({"train/loss": entry["loss"],
                                     **{f"train/{k}": v for k, v in entry.items()
                                        if k.startswith("lr_")}}, state.step)
                        window_loss, window_n = 0.0, 0
                    mid_epoch = b + 1 < n_batches
                    if mid_epoch and (state.step % settings.save_every_steps == 0
                                      or state.step == stop_after_steps):
                        state.elapsed += time.perf_counter() - t0
                        save("last", None, with_state=True)
                        t0 = time.perf_counter()  # writing checkpoints is not training time
                    if state.step == stop_after_steps and mid_epoch:
                        stop_now = True
                        break
                if stop_now:
                    break
                state.elapsed += time.perf_counter() - t0
                # ----------------------------------------------------- epoch end: validate
                val = evaluate_pairs(model, data, split.val, batch_size=settings.batch_size,
                                     eval_batch_size=settings.eval_batch_size,
                                     temperature=settings.temperature, seed=settings.seed,
                                     device=device, bf16=bf16)
                state.epoch, state.batch = epoch + 1, 0
                record = {"epoch": state.epoch, "step": state.step, "val": val}
                improved_r1 = better_r1(val, (state.best_r1 or {}).get("val"))
                if improved_r1:
                    state.best_r1, state.bad_epochs = record, 0
                else:
                    state.bad_epochs += 1
                improved_loss = state.best_loss is None or val["loss"] < state.best_loss["val"]["loss"]
                if improved_loss:
                    state.best_loss = record
                if improved_r1:
                    save("best_r1", val, with_state=False)
                if improved_loss:
                    save("best_loss", val, with_state=False)
                if state.bad_epochs >= settings.patience:
                    state.finished = True
                    state.stop_reason = (f"early stopping: no better validation t2a R@1 for "
                                         f"{settings.patience} epochs")
                elif state.epoch >= settings.epochs:
                    state.finished = True
                    state.stop_reason = f"reached train.epochs={settings.epochs}"
                # logged before last/ is saved: a kill in between redoes the epoch, and the
                # resumed session drops this line (its step is past the saved one)
                log.write({"event": "epoch", "epoch": state.epoch, "step": state.step,
                           "val_loss": val["loss"], "val": {d: val[d] for d in ("t2a", "a2t")},
                           "best_r1": improved_r1, "best_loss": improved_loss,
                           "bad_epochs": state.bad_epochs, "elapsed_seconds": state.elapsed})
                log.scalars({"val/loss": val["loss"], **flatten({d: val[d] for d in ("t2a", "a2t")},
                                                                "val/")}, state.step)
                log.scalars({"epoch": state.epoch}, state.step)
                save("last", val, with_state=True)
                bar.note(f"epoch {state.epoch}: val loss {val['loss']:.4f}, t2a R@1 "
                         f"{val['t2a']['R@1']:.3f} R@10 {val['t2a']['R@10']:.3f} MRR "
                         f"{val['t2a']['MRR']:.3f}"
                         + (" (best)" if improved_r1 else f" ({state.bad_epochs} without gain)"))
                if stop_after_steps is not None and state.step >= stop_after_steps:
                    stop_now = True
                    break
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted: rerun the same command to resume from {outdir / 'last'} "
                      f"(optimizer step {state.step})[/yellow]", highlight=False, soft_wrap=True)
        raise
    finally:
        log.close()
    if stop_now and not state.finished:
        return TrainResult({"stopped_at_step": state.step, "outdir": str(outdir)})
    model = optimizer = None  # free them before best_r1 is loaded for the test split
    summary = _finish(outdir, data, split, settings, spec, head, schedule, state, device, bf16,
                      time.perf_counter() - session_start)
    print_summary(summary, console)
    return TrainResult(summary)


def _finish(outdir: Path, data: TrainingData, split: "Split", settings: TrainSettings,
            spec: "TextModelSpec", head: HeadSettings, schedule: dict[str, Any], state: TrainState,
            device: "torch.device", bf16: bool, session_seconds: float) -> dict[str, Any]:
    """Test metrics of best_r1 (loaded back from disk, as eval-projector does) and the summary."""
    from .textmodel import load_projector

    test = None
    if split.test:
        model, cfg = load_projector(outdir / "best_r1", device=str(device))
        test = evaluate_pairs(model, data, split.test, batch_size=settings.batch_size,
                              eval_batch_size=settings.eval_batch_size,
                              temperature=settings.temperature, seed=settings.seed, device=device,
                              bf16=bf16)
    summary = {
        "format": SUMMARY_FORMAT, "version": VERSION,
        "output": str(outdir),
        "stop_reason": state.stop_reason,
        "epochs_run": state.epoch, "steps": state.step,
        "best_r1": state.best_r1, "best_loss": state.best_loss,
        "test": test, "test_checkpoint": "best_r1" if test else None,
        "checkpoints": {n: str(outdir / n) for n in ("best_r1", "best_loss", "last")},
        "pairs_per_second": state.pairs_seen / state.elapsed if state.elapsed > 0 else 0.0,
        "pairs_seen": state.pairs_seen,
        "elapsed_seconds": state.elapsed,
        "sessions": state.sessions,
        "warmup": {"rule": WARMUP_RULE, "applied": schedule["warmup"], "total_steps": schedule["total"],
                   "configured_warmup_steps": settings.warmup_steps,
                   "warmup_max_fraction": settings.warmup_max_fraction},
        "data": {**join_counts(data.joined), "split": {"train": len(split.train), "val": len(split.val),
                                                       "test": len(split.test)},
                 "vectors": data.source, "captions": data.captions_path},
        "space": {"hash": data.space.hash, "name": data.space.name, "dim": data.space.dim},
        "text_model": asdict(spec), "head": asdict(head), "device": str(device), "bf16": bf16,
    }
    atomic_write_json(outdir / "training_summary.json", summary, indent=1)
    return summary


# --------------------------------------------------------------------------- command line


DEFAULT_GIN = "train/default.gin"


def configure(gin_files: Sequence[str], gin_params: Sequence[str], need_run: bool
              ) -> tuple[Any, "TextModelSpec", HeadSettings, TrainSettings, str]:
    """Parse ``train/default.gin`` + ``gin_files`` + ``gin_params`` and build the run (when
    ``need_run``) and the training settings; ``(run, text spec, head, settings, operative)``.

    ``train/default.gin`` comes first, so the user's files override it (a run's gin file
    and a ``train/*.gin`` are given together, in any order).
    """
    from .. import ginconfig
    from ..plugins import get_manager

    files = [DEFAULT_GIN, *gin_files]
    ginconfig.parse(files, gin_params)
    run = None
    try:
        if need_run:
            from ..runconfig import run_config

            run = run_config()
        spec, head, settings = text_model(), projection_head(), train_settings()
    except (ValueError, TypeError, RuntimeError) as exc:
        # RuntimeError: gin's "Required bindings ... not provided" (e.g. run.source)
        raise ConfigError(ginconfig.explain(exc, get_manager(), files)) from exc
    return run, spec, head, settings, ginconfig.operative_config()


def run_config_only(gin_files: Sequence[str], gin_params: Sequence[str]) -> Any:
    """The run of ``gin_files`` (eval-projector: no training settings)."""
    from .. import ginconfig
    from ..plugins import get_manager
    from ..runconfig import run_config

    ginconfig.parse(gin_files, gin_params)
    try:
        return run_config()
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(ginconfig.explain(exc, get_manager(), gin_files)) from exc
