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
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from .components import Encoder
from .errors import ConfigError, MusicembedError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .geometry import Geometry

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

    def where(self, model: str, file: str | None = None) -> str:
        """How messages name this checkpoint: the folder (or ``file`` in it), after the
        ``model`` the user gave when that was a repo id rather than this very folder."""
        target = self.path / file if file else self.path
        return str(target) if str(self.path) == model else f"{model} ({target})"

    def file(self, name: str) -> Path:
        """One file of the checkpoint, by name (an error names the folder when it is missing)."""
        f = self.path / name
        if not f.is_file():
            raise ModelLoadError(f"{self.path}: no {name} in the checkpoint folder")
        return f

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
    model: str,
    revision: str | None = None,
    cache_dir: str | None = None,
    files: tuple[str, ...] | None = None,
) -> Checkpoint:
    """A local folder, or a Hugging Face repo id fetched (or found in the cache) at ``revision``.

    ``files``: the file names (or glob patterns) the checkpoint needs, for layouts
    other than transformers' (OMAR-RQ: ``config.gin`` + ``model.ckpt``; Music2Latent:
    one pickle). Only those are fetched; every plain name must be there. ``None``:
    config/preprocessor JSON and one weights format (safetensors preferred).
    """
    local = Path(model).expanduser()
    if local.is_dir():
        ckpt = Checkpoint(local.resolve(), _local_revision(local, files))
        if files is not None:
            _check_files(ckpt.path, files, str(local))
        return ckpt
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
        if files is not None:
            path = Path(
                snapshot_download(
                    model,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=offline,
                    allow_patterns=list(files),
                )
            )
        else:
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
    if files is not None:
        _check_files(path, files, where)
    elif not (path / "config.json").is_file():
        raise ModelLoadError(f"{where}: the snapshot has no config.json ({path})")
    return Checkpoint(path, path.name)


def _check_files(folder: Path, files: tuple[str, ...], where: str) -> None:
    """Every plain name of ``files`` exists in ``folder`` (glob patterns may match nothing)."""
    missing = [f for f in files if not any(c in f for c in "*?[") and not (folder / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"{where}: the checkpoint lacks {', '.join(missing)} (in {folder}); this encoder "
            f"needs {', '.join(files)}"
        )


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Files identified by size and edges in a local checkpoint's revision (read whole: the rest)."""


def _local_revision(folder: Path, files: tuple[str, ...] | None = None) -> str:
    """Cheap content identity of a local checkpoint: small files whole, weight files by size and edges."""
    import fnmatch

    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        if files is None:  # the transformers layout: its JSON files and the weights
            if f.name not in CONFIG_FILES and f.suffix not in WEIGHT_SUFFIXES:
                continue
        elif not any(fnmatch.fnmatch(f.name, pat) for pat in files):
            continue
        if f.suffix not in WEIGHT_SUFFIXES:
            h.update(f.name.encode() + f.read_bytes())
        else:
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read())
    return "sha256:" + h.hexdigest()[:16]


def load_pickle(path: str | Path, allowed_globals: tuple[Any, ...] = (), mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of a pickled checkpoint, allowing exactly ``allowed_globals``.

    For checkpoints saved as whole pickles (not plain state dicts) that carry a few
    non-tensor globals, e.g. numpy scalars: list each one (an entry may be
    ``(obj, "module.name")`` for a global pickled under another name, as torch's
    ``safe_globals`` allows). A file that needs any other global is refused, naming
    it, and no code from the file runs. ``mmap``: map the tensors from the file
    instead of reading them (cheap when only shapes or part of the weights are
    needed); files in torch's legacy format are read whole.
    """
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            if mmap:
                try:
                    return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as exc:
                    if "mmap" not in str(exc):
                        raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        import re

        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        needed = f"the global {found.group(1)}" if found else f"something torch refuses ({exc})"
        names = [a[1] if isinstance(a, tuple) else f"{a.__module__}.{a.__qualname__}" for a in allowed_globals]
        raise ModelLoadError(
            f"{path}: refused to load: the pickle needs {needed}, which is not on the "
            f"allowlist ({', '.join(names) or 'nothing but tensors and plain containers'}); no code "
            "from the file was run. Only load files from a source you trust; if this is the "
            "model's official file, the plugin's allowlist needs updating (please report it)."
        ) from exc
    except (OSError, RuntimeError, EOFError) as exc:
        raise ModelLoadError(
            f"{path}: cannot load ({type(exc).__name__}: {exc}). If the file is corrupt, delete it "
            "from the Hugging Face cache and fetch it again."
        ) from exc


def conv_frames(kernels: "Sequence[int]", strides: "Sequence[int]") -> dict[str, Any]:
    """``frame_rate``-free geometry of a stack of unpadded strided convolutions (wav2vec2-style
    feature encoders): ``{"receptive_field": R}`` with ``F = (T - R) // prod(strides) + 1``."""
    if len(kernels) != len(strides) or not kernels:
        raise ModelLoadError(f"conv stack: {len(kernels)} kernels but {len(strides)} strides")
    field, jump = int(kernels[0]), int(strides[0])
    for k, s in zip(kernels[1:], strides[1:]):
        field += (int(k) - 1) * jump
        jump *= int(s)
    return {"receptive_field": field}


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
    try:
        torch.device(device)  # the index part, e.g. 'cpu:0x'
    except RuntimeError as exc:
        raise ModelLoadError(f"device={device!r}: expected cpu, cuda, cuda:N, mps or auto ({exc})") from None
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
              ignore: tuple[str, ...] = (), built_from: str = "its config.json") -> None:
    """Load ``state`` strictly, with an error that lists what does not match.

    ``ignore``: key prefixes in the checkpoint that the model does not use
    (pre-training heads); they are dropped silently. ``built_from``: what the
    architecture was built from, for the error message.
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
            f"{where}: the weights do not fit the architecture built from {built_from} ("
            + "; ".join(parts)
            + "). Is this the right model for this encoder?"
        )
    model.load_state_dict(state, strict=True)


_BASE_PARAMS = ("model", "revision", "device", "dtype", "window_seconds", "hop_seconds", "cache_dir")


class PretrainedEncoder(Encoder):
    """Base of encoders built from a pretrained checkpoint (repo id or folder).

    A model plugin declares only what is its own::

        class MyEncoder(PretrainedEncoder):
            name = "mine"
            default_model = "org/my-model"      # the ``model`` default
            window_seconds = 10.0               # the ``window_seconds`` default
            params = {"normalize": None}        # extra constructor parameters + defaults
            checkpoint_files = None             # or ("config.gin", "model.ckpt") for other layouts

            def configure(self): ...            # optional: check the extra parameters
            def geometry_from_config(self, checkpoint): return {"sample_rate": ..., ...}
            def build_module(self, checkpoint): ...  # nn.Module [B, T] -> [L, B, F, D]

    The constructor (and so gin and ``musicembed plugins -v``) then takes
    ``model, revision, device, dtype, window_seconds, hop_seconds, cache_dir`` plus
    the keys of :attr:`params`, with the class's defaults. This class does
    checkpoint resolution, the geometry (read once from the checkpoint's config,
    never from its weights), device/dtype, eval and inference mode, and the
    signature (commit sha and dtype included).
    """

    default_model: ClassVar[str] = ""
    """Repo id used when ``model`` is not given."""
    params: ClassVar[Mapping[str, Any]] = {}
    """The plugin's own constructor parameters and their defaults (keyword-only)."""
    checkpoint_files: ClassVar[tuple[str, ...] | None] = None
    """Files (names or glob patterns) the checkpoint needs; ``None``: the transformers
    layout (config.json, preprocessor_config.json and safetensors or .bin weights)."""
    runtime_params: ClassVar[frozenset[str]] = Encoder.runtime_params | {"cache_dir"}
    """Where the cache lives changes nothing in the vectors: not in the signature."""

    model: str
    revision: str | None
    device: str
    dtype: str
    cache_dir: str | None

    def __init__(
        self,
        model: str | None = None,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        window_seconds: float | None = None,
        hop_seconds: float | None = None,
        cache_dir: str | None = None,
        **extra: Any,
    ) -> None:
        unknown = sorted(set(extra) - set(self.params))
        if unknown:
            raise TypeError(
                f"encoders.{self.name} got unexpected parameter(s) {', '.join(unknown)}; its "
                f"parameters: {', '.join([*_BASE_PARAMS, *self.params])}"
            )
        self.model = model or self.default_model
        if not self.model:
            raise ConfigError(f"encoders.{self.name}.model is required (a repo id or a folder)")
        self.revision = revision
        self.device = device
        self.dtype = check_dtype(dtype, f"{self.name}.dtype")
        self.cache_dir = cache_dir
        self.window_seconds = float(type(self).window_seconds if window_seconds is None else window_seconds)
        self.hop_seconds = None if hop_seconds is None else float(hop_seconds)
        if self.window_seconds <= 0 or (self.hop_seconds is not None and self.hop_seconds <= 0):
            raise ConfigError(
                f"encoders.{self.name}: window_seconds={window_seconds} and hop_seconds={hop_seconds} "
                "must be positive"
            )
        for key, default in self.params.items():
            setattr(self, key, extra.get(key, default))
        self._checkpoint: Checkpoint | None = None
        self._module: Any = None
        self.configure()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Give each subclass a constructor whose signature is the real one (base
        # parameters with the subclass's defaults + its own params), so that gin
        # and `musicembed plugins -v` see it without the plugin re-declaring it.
        if "__init__" not in cls.__dict__:
            cls.__init__ = _pretrained_init(cls)  # type: ignore[method-assign]
        super().__init_subclass__(**kwargs)

    # -- what subclasses provide --------------------------------------------------

    def configure(self) -> None:
        """Check the plugin's own parameters (called at the end of the constructor)."""

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        """Build the architecture from the checkpoint's config and load its weights."""
        raise NotImplementedError

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        """``sample_rate``, ``frame_rate``, ``num_layers``, ``dim`` (and optionally
        ``min_seconds``, ``receptive_field``) read from the checkpoint's files."""
        raise NotImplementedError

    # -- shared machinery --------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Resolve the checkpoint once (no weights are read)."""
        if self._checkpoint is None:
            self._checkpoint = resolve_checkpoint(
                self.model, self.revision, self.cache_dir, files=self.checkpoint_files
            )
        return self._checkpoint

    def resolve_geometry(self) -> "Geometry":
        from .geometry import Geometry

        found = dict(self.geometry_from_config(self.checkpoint()))
        allowed = {"sample_rate", "frame_rate", "num_layers", "dim", "min_seconds", "receptive_field"}
        odd = sorted(set(found) - allowed)
        if odd:
            raise TypeError(
                f"encoders.{self.name}.geometry_from_config returned unknown keys {odd}; "
                f"allowed: {sorted(allowed)}"
            )
        found.setdefault("min_seconds", type(self).min_seconds)
        found.setdefault("receptive_field", type(self).receptive_field)
        return Geometry(window_seconds=self.window_seconds, hop_seconds=self.hop_seconds, **found)

    # The geometry is the checkpoint's: read-only views for convenience.
    sample_rate = property(lambda self: self.geometry().sample_rate)  # type: ignore[assignment]
    frame_rate = property(lambda self: self.geometry().frame_rate)  # type: ignore[assignment]
    num_layers = property(lambda self: self.geometry().num_layers)  # type: ignore[assignment]
    dim = property(lambda self: self.geometry().dim)  # type: ignore[assignment]

    def signature(self) -> dict[str, Any]:
        ckpt = self.checkpoint()
        sig = super().signature()
        sig.pop("dtype", None)
        sig["weights"] = ckpt.revision
        sig["dtype"] = self.dtype  # reduced precision changes the vectors: part of the space
        return sig

    def load(self) -> None:
        if self._module is not None:
            return
        ckpt = self.checkpoint()
        self.geometry()  # a bad config fails before the weights are read
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


def _pretrained_init(cls: type) -> Any:
    """A constructor for ``cls`` whose ``__signature__`` lists its real parameters."""
    import inspect

    P = inspect.Parameter
    base = inspect.signature(PretrainedEncoder.__init__)
    defaults = {"model": cls.default_model or None, "window_seconds": float(cls.window_seconds)}
    parts = [
        p.replace(default=defaults.get(p.name, p.default))
        for p in base.parameters.values()
        if p.kind != P.VAR_KEYWORD
    ]
    clash = sorted(set(cls.params) & set(_BASE_PARAMS))
    if clash:
        raise TypeError(f"{cls.__qualname__}.params redeclares base parameter(s) {clash}")
    parts += [P(k, P.KEYWORD_ONLY, default=v) for k, v in cls.params.items()]

    def __init__(self: PretrainedEncoder, *args: Any, **kwargs: Any) -> None:
        PretrainedEncoder.__init__(self, *args, **kwargs)

    __init__.__signature__ = base.replace(parameters=parts)  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__doc__ = cls.__init__.__doc__
    return __init__


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
