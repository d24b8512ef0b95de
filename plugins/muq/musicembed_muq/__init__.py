"""musicembed-muq: MuQ frame embeddings and the MuQ-MuLan joint audio + text space.

* ``encoders.muq``: every hidden state of MuQ (``OpenMuQ/MuQ-large-msd-iter``),
  ``[13, B, F, 1024]`` at 25 frames/s from 24 kHz mono.
* ``encoders.mulan``: MuQ-MuLan's audio tower (``OpenMuQ/MuQ-MuLan-large``), one 512-d unit
  vector per 10 s clip, ``[1, B, 1, 512]``.
* ``projectors.mulan``: MuQ-MuLan's text tower (XLM-RoBERTa + transformer), text into the
  same 512-d space, so ``musicembed search --text`` works against a MuLan run.

Built natively (plain torch front end, transformers 5 conformer layers) from facts read in
the upstream ``muq`` package, which cannot run here (torchaudio; transformers 4 only); see
:mod:`.model` and the README. Nothing heavy is imported here: ``musicembed plugins``
imports this module only to list the components.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicembed_core import ConfigError, Geometry, TextProjector, hookimpl
from musicembed_core.hub import (
    Checkpoint,
    ModelLoadError,
    PretrainedEncoder,
    check_dtype,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__version__ = "0.1.0"

MUQ_MODEL = "OpenMuQ/MuQ-large-msd-iter"
MULAN_MODEL = "OpenMuQ/MuQ-MuLan-large"
TEXT_FILES = ("config.json", "tokenizer*.json", "special_tokens_map*.json", "sentencepiece*.model")
"""What the text model repo must hold (config.json) and may hold (tokenizer files); its weights
are not fetched: MuQ-MuLan's checkpoint carries the fine-tuned XLM-RoBERTa."""
SHIPPED_CHAIN = ("layers", "mean", "flatten", "l2_normalize")
"""The chain of gin/runs/mulan.gin (``enrichers/mean.gin``): the mean of the clip vectors,
re-normalised."""
TEXT_BATCHING = ("upstream", "single")
LEGACY_NAMES = {"xlm-roberta-base": "FacebookAI/xlm-roberta-base",
                "xlm-roberta-large": "FacebookAI/xlm-roberta-large"}
"""Hub names in MuQ-MuLan's config.json that predate the hub's organisations."""


def _repo(name: str) -> str:
    return LEGACY_NAMES.get(name, name)


class _Float32Audio:
    """``encode`` that hands the module float32 audio whatever ``dtype`` is: the mel front end
    runs in float32 and only the network in ``dtype`` (audio rounded to bfloat16 first would
    lose the quiet mel bands: cosine 0.8 instead of 0.999 on MuQ's layer 0)."""

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        import torch

        self.load()  # type: ignore[attr-defined]
        with torch.inference_mode():
            x = torch.as_tensor(wave, device=self._device).float()  # type: ignore[attr-defined]
            if x.dim() == 1:
                x = x.unsqueeze(0)
            if x.dim() != 2:
                raise ValueError(f"{self.name}: expected waves [B, T], got shape {tuple(x.shape)}")  # type: ignore[attr-defined]
            return self._module(x).float()  # type: ignore[attr-defined]


class MuQEncoder(_Float32Audio, PretrainedEncoder):
    """MuQ hidden states of 24 kHz mono waves: ``[L, B, F, D]``, L = conformer layers + 1.

    Layer 0 is the conv front end's output, layers 1..L-2 the conformer layers' outputs, and
    the last one the last layer's output after the encoder's final LayerNorm (what MuQ's
    ``hidden_states[-1]`` / ``last_hidden_state`` meant under transformers 4.x).

    A chunk is cut to whole 40 ms frames (``F = T // 960``), as MuQ's own fairseq wrapper
    does. Default window 30 s, MuQ's pre-training crop length; frames depend on the whole
    window (global attention), so another window is another embedding space.
    """

    name = "muq"
    default_model = MUQ_MODEL
    window_seconds = 30.0
    min_seconds = 0.1

    def _sizes(self, checkpoint: Checkpoint) -> dict[str, Any]:
        from .model import muq_sizes

        return muq_sizes(checkpoint.read_json("config.json"), checkpoint.where(self.model))

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        sizes = self._sizes(checkpoint)
        return {"sample_rate": 24000, "frame_rate": 25.0, "num_layers": sizes["encoder_depth"] + 1,
                "dim": sizes["encoder_dim"], "min_seconds": self.min_seconds}

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        from .model import build_muq

        return build_muq(self._sizes(checkpoint), checkpoint.load_state_dict(),
                         checkpoint.where(self.model))


class _MulanConfig:
    """MuQ-MuLan's config.json and the MuQ config.json it names (read once, no weights)."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self._sizes: dict[str, Any] | None = None
        self._muq: dict[str, Any] | None = None

    def sizes(self) -> dict[str, Any]:
        if self._sizes is None:
            from .model import mulan_sizes

            ckpt = self.owner.checkpoint()
            self._sizes = mulan_sizes(ckpt.read_json("config.json"), ckpt.where(self.owner.model))
        return self._sizes

    def muq(self) -> dict[str, Any]:
        if self._muq is None:
            from .model import muq_sizes

            name = self.owner.muq_config or _repo(self.sizes()["audio_model"])
            try:
                ckpt = resolve_checkpoint(name, None, self.owner.cache_dir, files=("config.json",))
            except ModelLoadError as exc:
                raise ModelLoadError(
                    f"{self.owner.model}: its audio tower is built from the MuQ config of {name!r}, "
                    f"which could not be read ({exc}); set muq_config to a folder or repo id holding "
                    "that MuQ config.json"
                ) from exc
            self._muq = muq_sizes(ckpt.read_json("config.json"), ckpt.where(name))
            if self._muq["encoder_dim"] != self.sizes()["audio_model_dim"]:
                raise ModelLoadError(
                    f"{self.owner.model}: audio_model.model_dim={self.sizes()['audio_model_dim']} but the "
                    f"MuQ config of {name!r} has encoder_dim={self._muq['encoder_dim']}"
                )
        return self._muq


class MulanEncoder(_Float32Audio, PretrainedEncoder):
    """MuQ-MuLan audio tower: waves ``[B, T]`` at 24 kHz -> ``[1, B, 1, 512]`` unit vectors.

    One vector per window (10 s, the clip length MuQ-MuLan was trained and is used with).
    A chunk shorter than the window is followed by its own first samples up to the window
    (at most doubled), upstream's rule for a track shorter than a clip: a track up to one
    window long gives exactly upstream's vector. Upstream completes the *last clip of a
    longer track* with audio from the track's start; the pipeline sees chunks, so here the
    tail chunk is completed with its own start instead (see README). :meth:`embed_tracks`
    does upstream's whole-track procedure exactly. Tails shorter than ``min_seconds`` (1 s)
    after a full window are dropped.

    ``muq_config``: where the MuQ config.json named by the checkpoint's
    ``audio_model.name`` is read from (default: that name); only its sizes and mel
    statistics are read, the weights come from the MuQ-MuLan checkpoint.
    """

    name = "mulan"
    default_model = MULAN_MODEL
    window_seconds = 10.0
    min_seconds = 1.0
    params = {"muq_config": None}

    muq_config: str | None

    def configure(self) -> None:
        self._config = _MulanConfig(self)

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        sizes = self._config.sizes()
        return {"sample_rate": sizes["sample_rate"], "num_layers": 1, "dim": sizes["dim_latent"]}

    def resolve_geometry(self) -> Geometry:
        found = self.geometry_from_config(self.checkpoint())
        rate = found["sample_rate"]
        window = int(round(self.window_seconds * rate))
        draft = Geometry(window_seconds=self.window_seconds, hop_seconds=self.hop_seconds,
                         frame_rate=rate / max(window, 1), min_seconds=min(self.min_seconds, self.window_seconds),
                         **found)
        geo = dataclasses.replace(draft, receptive_field=draft.min_samples)
        if geo.overlap_frames:
            raise ConfigError(
                f"encoders.mulan.hop_seconds={self.hop_seconds} overlaps windows by more than half a "
                f"window ({self.window_seconds} s): each window gives one vector, so use "
                f"hop_seconds >= {self.window_seconds / 2}"
            )
        return geo

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["clip_secs"] = self._config.sizes()["clip_secs"]
        return sig

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        from .model import ClipVectors, build_mulan_audio

        tower = build_mulan_audio(self._config.muq(), self._config.sizes(), checkpoint.load_state_dict(),
                                  checkpoint.where(self.model))
        return ClipVectors(tower, self.geometry().window_samples)

    def embed_tracks(self, tracks: "list[torch.Tensor]") -> "torch.Tensor":
        """Upstream's ``MuQMuLan(wavs=...)`` on whole tracks ``[T]`` at 24 kHz -> ``[N, 512]``:
        clips of the checkpoint's ``clip_secs``, the last completed with the track's start, clip
        vectors averaged (not re-normalised)."""
        import torch

        from .model import upstream_clips

        module = self.module()
        clip = int(round(self._config.sizes()["clip_secs"] * self.geometry().sample_rate))
        out = []
        with torch.inference_mode():
            for track in tracks:
                x = torch.as_tensor(track, device=self._device).float()
                if x.dim() != 1:
                    raise ValueError(f"mulan.embed_tracks: expected 1-D tracks, got shape {tuple(x.shape)}")
                clips = upstream_clips(x, clip)
                vecs = torch.cat([module.tower(c[None]) for c in clips])
                out.append(vecs.float().mean(dim=0))
        return torch.stack(out).cpu()


class MulanProjector(TextProjector):
    """MuQ-MuLan text tower: strings -> ``[N, 512]`` unit vectors in ``encoders.mulan``'s space.

    ``text_batching``:

    * ``"upstream"`` (default): up to ``batch_size`` texts are padded to the longest and
      embedded together, as upstream's ``MuQMuLan(texts=...)`` does; bit-compatible with it
      for the same batch. Upstream applies no padding mask after XLM-R and averages over
      padding too, so a short text's vector depends on the longest text in its batch.
    * ``"single"``: each text embedded on its own (upstream called with one text): vectors
      independent of the batch, slower for many texts.

    Texts longer than XLM-R's 512 positions are truncated (upstream would fail on them).
    ``text_model``: where XLM-RoBERTa's config.json and tokenizer come from (default: the
    checkpoint's ``text_model.name``, ``xlm-roberta-base`` meaning
    ``FacebookAI/xlm-roberta-base``).
    """

    name = "mulan"
    runtime_params = TextProjector.runtime_params | {"cache_dir", "batch_size"}

    def __init__(
        self,
        model: str = MULAN_MODEL,
        revision: str | None = None,
        text_model: str | None = None,
        text_model_revision: str | None = None,
        text_batching: str = "upstream",
        device: str = "cpu",
        dtype: str = "float32",
        cache_dir: str | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.revision = revision
        self.text_model = text_model
        self.text_model_revision = text_model_revision
        if text_batching not in TEXT_BATCHING:
            raise ConfigError(
                f"projectors.mulan.text_batching={text_batching!r}: must be one of {', '.join(TEXT_BATCHING)}"
            )
        self.text_batching = text_batching
        self.device = device
        self.dtype = check_dtype(dtype, "projectors.mulan.dtype")
        self.cache_dir = cache_dir
        self.batch_size = self.checked_batch_size(batch_size)
        self._encoder = MulanEncoder(model=model, revision=revision, cache_dir=cache_dir)
        self._tower: Any = None
        self._tok: Any = None

    @property  # type: ignore[override]
    def dim(self) -> int:
        return self._encoder._config.sizes()["dim_latent"]

    def target(self) -> dict[str, Any]:
        return self.tied_to(self._encoder, SHIPPED_CHAIN)

    def load(self) -> None:
        if self._tower is not None:
            return
        from transformers import AutoTokenizer, XLMRobertaConfig

        from .model import build_mulan_text

        ckpt = self._encoder.checkpoint()
        sizes = self._encoder._config.sizes()
        name = self.text_model or _repo(sizes["text_model"])
        text = resolve_checkpoint(name, self.text_model_revision, self.cache_dir, files=TEXT_FILES)
        where = text.where(name)
        try:
            xcfg = XLMRobertaConfig.from_pretrained(str(text.path))
            tok = AutoTokenizer.from_pretrained(str(text.path))
        except Exception as exc:  # noqa: BLE001 - name the folder and what was expected
            raise ModelLoadError(
                f"{where}: cannot read the XLM-RoBERTa config/tokenizer ({type(exc).__name__}: {exc}); "
                "projectors.mulan.text_model must hold config.json and tokenizer files"
            ) from exc
        device = resolve_device(self.device)
        tower = build_mulan_text(xcfg, sizes, ckpt.load_state_dict(), ckpt.where(self.model))
        self._tower = tower.to(device=device, dtype=resolve_dtype(self.dtype)).eval().requires_grad_(False)
        self._tok = tok
        self._max_len = int(xcfg.max_position_embeddings) - int(xcfg.pad_token_id or 0) - 1
        self._device = device

    def embed_text(self, texts: list[str]) -> "torch.Tensor":
        step = 1 if self.text_batching == "single" else self.batch_size
        return self.embed_batched(texts, step, self._embed_batch)

    def _embed_batch(self, texts: list[str]) -> "torch.Tensor":
        batch = self._tok(texts, padding=True, truncation=True, max_length=self._max_len,
                          return_tensors="pt")
        return self._tower(batch["input_ids"].to(self._device), batch["attention_mask"].to(self._device))


@hookimpl
def register_encoders(register):
    register(MuQEncoder)
    register(MulanEncoder)


@hookimpl
def register_text_projectors(register):
    register(MulanProjector)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
