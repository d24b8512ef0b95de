"""Pretrained checkpoints: find them (Hugging Face repo id + revision, or a local
folder), read their JSON files, load their weights safely, and the base class
that the transformers-based encoder plugins share.

Everything that two model plugins would otherwise each write lives here: the
plugins only say which config class, which model class and which key renames
their checkpoints need.

* A repo id goes through ``huggingface_hub.snapshot_download``: the usual cache
  (``HF_HOME`` / ``HF_HUB_CACHE``), ``HF_HUB_OFFLINE=1`` and tokens all work as
  in any Hugging Face tool. Only config/preprocessor JSON and one weights format
  are fetched: safetensors when the repo has them, else ``.bin``.
* ``.bin`` files are read with ``torch.load(weights_only=True)``: no pickled
  code runs.
* The resolved snapshot (the commit sha) is part of the encoder's signature, so
  an upstream update of ``main`` yields a new embedding space instead of silently
  mixing two sets of weights in one index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from .components import Encoder
from .errors import ConfigError, MusicembedError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

CONFIG_FILES = ("config.json", "preprocessor_config.json")
SAFETENSORS_PATTERNS = ("*.safetensors", "*.safetensors.index.json")
BIN_PATTERNS = ("*.bin", "*.bin.index.json")
DTYPES = ("float32", "bfloat16", "float16")


class ModelLoadError(MusicembedError):
    """A checkpoint that cannot be found, read or matched to its architecture."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on local disk."""

    path: Path
    """Folder with config.json and the weights."""
    revision: str
    """What identifies these weights: the commit sha for a hub snapshot,
    ``sha256:<...>`` of the weight files for a local folder."""

    def read_json(self, name: str, required: bool = True) -> dict[str, Any]:
        """A JSON file of the checkpoint (``config.json``, ``preprocessor_config.json``)."""
        f = self.path / name
        if not f.is_file():
            if required:
                raise ModelLoadError(f"{self.path}: no {name} in the checkpoint folder")
            return {}
        try:
            return json.loads(f.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{f}: cannot read JSON ({exc})") from exc

    def weight_files(self) -> list[Path]:
        """The weight files to load, safetensors preferred; shards in index order."""
        for index_name, single in (
            ("model.safetensors.index.json", "model.safetensors"),
            ("pytorch_model.bin.index.json", "pytorch_model.bin"),
        ):
            index = self.path / index_name
            if index.is_file():
                shards = sorted(set(self.read_json(index_name).get("weight_map", {}).values()))
                missing = [s for s in shards if not (self.path / s).is_file()]
                if missing:
                    raise ModelLoadError(f"{index}: shard files missing: {missing}")
                return [self.path / s for s in shards]
            if (self.path / single).is_file():
                return [self.path / single]
        for pattern in ("*.safetensors", "*.bin"):
            found = sorted(self.path.glob(pattern))
            if found:
                return found
        raise ModelLoadError(
            f"{self.path}: no weights found (expected model.safetensors or pytorch_model.bin)"
        )

    def load_state_dict(self) -> dict[str, "torch.Tensor"]:
        """All tensors of the checkpoint, on CPU."""
        import torch

        state: dict[str, torch.Tensor] = {}
        for f in self.weight_files():
            try:
                if f.suffix == ".safetensors":
                    from safetensors.torch import load_file

                    state.update(load_file(str(f), device="cpu"))
                else:
                    loaded = torch.load(str(f), map_location="cpu", weights_only=True)
                    if not isinstance(loaded, Mapping):
                        raise ModelLoadError(f"{f}: expected a state dict, got {type(loaded).__name__}")
                    state.update(loaded)
            except ModelLoadError:
                raise
            except Exception as exc:  # noqa: BLE001 - corrupt or unsafe file: say which
                raise ModelLoadError(
                    f"{f}: cannot load weights ({type(exc).__name__}: {exc}). If the file is "
                    "corrupt, delete it from the Hugging Face cache and fetch it again."
                ) from exc
        return state


def _is_repo_id(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~", "/"))


def resolve_checkpoint(
    model: str, revision: str | None = None, cache_dir: str | None = None
) -> Checkpoint:
    """A local folder, or a Hugging Face repo id fetched (or found in the cache) at ``revision``."""
    local = Path(model).expanduser()
    if local.is_dir():
        return Checkpoint(local.resolve(), _local_revision(local))
    if not _is_repo_id(model):
        raise ModelLoadError(
            f"model {model!r} is neither an existing folder nor a Hugging Face repo id "
            "like 'm-a-p/MERT-v1-95M'"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Read the environment at call time (huggingface_hub reads it once, at import).
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if cache_dir is None:
        cache_dir = os.environ.get("HF_HUB_CACHE") or (
            os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
        )
    where = f"{model!r} at revision {revision or 'main'!r}"

    def fetch(patterns: tuple[str, ...]) -> Path:
        return Path(
            snapshot_download(
                model,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=offline,
                allow_patterns=[*CONFIG_FILES, *patterns],
            )
        )

    try:
        path = fetch(SAFETENSORS_PATTERNS)
        if not any(path.glob("*.safetensors")):
            path = fetch(BIN_PATTERNS)
    except RevisionNotFoundError as exc:
        raise ModelLoadError(f"{where}: no such revision on the hub ({exc})") from exc
    except RepositoryNotFoundError as exc:
        raise ModelLoadError(
            f"{where}: repository not found (check the name; gated repos need `hf auth login`)"
        ) from exc
    except LocalEntryNotFoundError as exc:
        hint = (
            "HF_HUB_OFFLINE is set and the model is not in the cache: unset it once to download, "
            "or pass a local folder as the model"
            if offline
            else "the hub could not be reached and the model is not in the cache: check the "
            "network, set HF_HUB_CACHE to a cache that has it, or pass a local folder as the model"
        )
        raise ModelLoadError(f"{where}: {hint}") from exc
    except Exception as exc:  # noqa: BLE001 - network and validation errors of all kinds
        raise ModelLoadError(f"{where}: cannot fetch ({type(exc).__name__}: {exc})") from exc
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{where}: the snapshot has no config.json ({path})")
    return Checkpoint(path, path.name)


def _local_revision(folder: Path) -> str:
    """Cheap content identity of a local checkpoint: config + each weight file's size and edges."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.name in CONFIG_FILES:
            h.update(f.name.encode() + f.read_bytes())
        elif f.suffix in (".safetensors", ".bin"):
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return "sha256:" + h.hexdigest()[:16]


def resolve_device(device: str) -> str:
    """``auto`` -> cuda, mps or cpu, whichever is there; anything else is checked."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device={device!r}: CUDA is not available here; use 'cpu' or 'auto'")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError(f"device={device!r}: MPS is not available here; use 'cpu' or 'auto'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"device={device!r}: expected cpu, cuda, cuda:N, mps or auto")
    return device


def check_dtype(dtype: str, where: str = "dtype") -> str:
    """``dtype`` if it is one of :data:`DTYPES` (no torch import), else a ModelLoadError."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"{where}={dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype


def resolve_dtype(dtype: str) -> "torch.dtype":
    import torch

    return getattr(torch, check_dtype(dtype))


def rename_keys(
    state: Mapping[str, "torch.Tensor"], renames: Mapping[str, str]
) -> dict[str, "torch.Tensor"]:
    """Apply substring renames to checkpoint keys (legacy names, dropped prefixes)."""
    out = {}
    for key, value in state.items():
        for old, new in renames.items():
            key = key.replace(old, new)
        out[key] = value
    return out


def load_into(model: "torch.nn.Module", state: Mapping[str, "torch.Tensor"], where: str,
              ignore: tuple[str, ...] = ()) -> None:
    """Load ``state`` strictly, with an error that lists what does not match.

    ``ignore``: key prefixes in the checkpoint that the model does not use
    (pre-training heads); they are dropped silently.
    """
    state = {k: v for k, v in state.items() if not k.startswith(ignore)} if ignore else dict(state)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or wrong:
        def head(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors: {head(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors: {head(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch: {head(wrong)}")
        raise ModelLoadError(
            f"{where}: the weights do not fit the architecture built from its config.json ("
            + "; ".join(parts)
            + "). Is this the right model for this encoder?"
        )
    model.load_state_dict(state, strict=True)


class PretrainedEncoder(Encoder):
    """Base of encoders built from a pretrained checkpoint (repo id or folder).

    Subclasses implement :meth:`build_module` (config dicts -> ``nn.Module``
    mapping raw ``[B, T]`` waves to ``[L, B, F, D]``, weights loaded) and set the
    geometry; this class does resolution, device/dtype, eval mode, inference
    mode and the signature.
    """

    default_model: ClassVar[str] = ""
    """Repo id used when ``model`` is not given."""

    model: str
    revision: str | None
    device: str
    dtype: str
    cache_dir: str | None

    def __init__(
        self,
        model: str = "",
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        cache_dir: str | None = None,
    ) -> None:
        self.model = model or self.default_model
        self.revision = revision
        self.device = device
        self.dtype = check_dtype(dtype, f"{self.name}.dtype")
        self.cache_dir = cache_dir
        if window_seconds is not None:
            self.window_seconds = float(window_seconds)
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        if self.window_seconds <= 0 or (self.hop_seconds is not None and self.hop_seconds <= 0):
            raise ConfigError(
                f"encoders.{self.name}: window_seconds={window_seconds} and hop_seconds={hop_seconds} "
                "must be positive"
            )
        self._checkpoint: Checkpoint | None = None
        self._module: Any = None

    # -- what subclasses provide --------------------------------------------------

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        """Build the architecture from the checkpoint's config and load its weights."""
        raise NotImplementedError

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """sample_rate / frame_rate / num_layers / dim read from the checkpoint's files."""
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Resolve the checkpoint once (no weights are read) and adopt its geometry."""
        if self._checkpoint is None:
            ckpt = resolve_checkpoint(self.model, self.revision, self.cache_dir)
            for key, value in self.geometry_from_config(ckpt).items():
                setattr(self, key, value)
            self._checkpoint = ckpt
        return self._checkpoint

    def signature(self) -> dict[str, Any]:
        ckpt = self.checkpoint()
        sig = super().signature()
        sig.pop("cache_dir", None)
        sig.pop("dtype", None)
        sig["weights"] = ckpt.revision
        sig["dtype"] = self.dtype  # reduced precision changes the vectors: part of the space
        return sig

    def load(self) -> None:
        if self._module is not None:
            return
        ckpt = self.checkpoint()
        device = resolve_device(self.device)
        module = self.build_module(ckpt)
        for sub in module.modules():  # never trade speed for memory at inference
            if hasattr(sub, "gradient_checkpointing"):
                sub.gradient_checkpointing = False
        module = module.to(device=device, dtype=resolve_dtype(self.dtype)).eval()
        module.requires_grad_(False)
        self._device = device
        self._module = module
        log.info("%s: loaded %s (%s) on %s as %s", self.name, self.model, ckpt.revision, device, self.dtype)

    def module(self) -> "torch.nn.Module":
        self.load()
        return self._module

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        import torch

        self.load()
        with torch.inference_mode():
            x = torch.as_tensor(wave, device=self._device).to(resolve_dtype(self.dtype))
            if x.dim() == 1:
                x = x.unsqueeze(0)
            if x.dim() != 2:
                raise ValueError(f"{self.name}: expected waves [B, T], got shape {tuple(x.shape)}")
            return self._module(x).float()


def hidden_states_module(model: "torch.nn.Module", normalize: bool) -> "torch.nn.Module":
    """Wrap a transformers speech model as ``[B, T]`` waves -> ``[L, B, F, D]`` hidden states.

    ``normalize``: zero mean, unit variance per clip first, as Wav2Vec2-style
    feature extractors do when their ``do_normalize`` is true (``(x - mean) /
    sqrt(var + 1e-7)``, population variance). Kept inside the module so an
    exported model needs no preprocessing on the caller's side.
    """
    import torch

    class HiddenStates(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, normalize: bool) -> None:
            super().__init__()
            self.model = inner
            self.normalize = normalize

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            if self.normalize:
                mean = wave.mean(dim=-1, keepdim=True)
                var = wave.var(dim=-1, unbiased=False, keepdim=True)
                wave = (wave - mean) / torch.sqrt(var + 1e-7)
            out = self.model(wave, output_hidden_states=True, return_dict=True)
            return torch.stack(out.hidden_states, dim=0)

    return HiddenStates(model, normalize)
