"""CLAP-MusicGen's two towers, built natively from transformers parts.

The released checkpoint (hub repo ``yuhuacheng/clap-musicgen``) is one
``config.json`` + one weights file holding the whole upstream ``CLAPModel``:

* ``audio_encoder.encodec.*``: an ``EncodecModel`` (MusicGen's 32 kHz tokenizer);
* ``audio_encoder.transformer.*``: a ``MusicgenDecoder`` (MusicGen small: hidden 1024);
* ``audio_encoder.projection.projection.{0,1,3,4,6}.*``: the audio MLP head;
* ``text_encoder.text_encoder.*``: a ``RobertaModel`` (pooler included, unused);
* ``text_encoder.projection.projection.{0,1,3,4,6}.*``: the text MLP head;
* ``logit_scale_a``, ``logit_scale_t``: training temperatures (unused here).

Its ``config.json`` names the sub-models by the *local folders* upstream loaded
them from (``model/encodec``, ``model/musicgen_decoder``), so their configs are
not in the repo: the ones below are those of ``facebook/encodec_32khz``,
``facebook/musicgen-small``'s decoder and ``roberta-base`` (see the README for
what was verified and what assumed). A checkpoint may carry its own sub-model
configs (``audio_encoder_config.encodec_config``,
``audio_encoder_config.musicgen_decoder_config``,
``text_encoder_config.text_model_config``): re-trained variants and the tests'
tiny checkpoints use that. Every tensor is then loaded strictly: a size the
configs get wrong is reported by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from musicembed_core.hub import Checkpoint, ModelLoadError, load_into, rename_keys

if TYPE_CHECKING:  # pragma: no cover
    import torch

AUDIO_PREFIX = "audio_encoder."
TEXT_PREFIX = "text_encoder."
UNUSED_KEYS = ("logit_scale_a", "logit_scale_t")
"""Top-level tensors of the checkpoint no tower uses (the contrastive temperatures)."""

ENCODEC_32KHZ: dict[str, Any] = {
    # facebook/encodec_32khz config.json (main): 4 codebooks of 2048 at 50 Hz (2.2 kbps).
    "audio_channels": 1, "chunk_length_s": None, "codebook_dim": 128, "codebook_size": 2048,
    "compress": 2, "dilation_growth_rate": 2, "hidden_size": 128, "kernel_size": 7,
    "last_kernel_size": 7, "norm_type": "weight_norm", "normalize": False, "num_filters": 64,
    "num_lstm_layers": 2, "num_residual_layers": 1, "overlap": None, "pad_mode": "reflect",
    "residual_kernel_size": 3, "sampling_rate": 32000, "target_bandwidths": [2.2],
    "trim_right_ratio": 1.0, "upsampling_ratios": [8, 5, 4, 4], "use_causal_conv": False,
    "use_conv_shortcut": False,
}
MUSICGEN_SMALL_DECODER: dict[str, Any] = {
    # facebook/musicgen-small's decoder: 24 layers, hidden 1024, 16 heads, FFN 4096.
    "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 24, "ffn_dim": 4096,
    "num_attention_heads": 16, "layerdrop": 0.0, "use_cache": False, "activation_function": "gelu",
    "hidden_size": 1024, "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
    "initializer_factor": 0.02, "scale_embedding": False, "num_codebooks": 4, "audio_channels": 1,
    "pad_token_id": 2048, "bos_token_id": 2048, "tie_word_embeddings": False,
}
ROBERTA_BASE: dict[str, Any] = {
    # roberta-base, which yuhuacheng/clap-roberta-finetuned fine-tunes (MLM on style tags).
    "vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 514, "type_vocab_size": 1,
    "initializer_range": 0.02, "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 2,
}

WEIGHT_NORM_RENAMES = {
    # EnCodec convolutions saved with torch's legacy weight_norm (weight_g / weight_v) load
    # into the parametrization transformers builds now (original0 / original1).
    ".conv.weight_g": ".conv.parametrizations.weight.original0",
    ".conv.weight_v": ".conv.parametrizations.weight.original1",
}
LEGACY_BUFFERS = ("text_encoder.embeddings.position_ids", "text_encoder.embeddings.token_type_ids")
"""Non-learned buffers older transformers versions saved with RoBERTa."""


# --------------------------------------------------------------------------- configs


def clap_config(ckpt: Checkpoint) -> dict[str, Any]:
    """The checkpoint's ``config.json``, checked to be a CLAP-MusicGen one."""
    cfg = ckpt.read_json("config.json")
    for key in ("audio_encoder_config", "text_encoder_config"):
        if not isinstance(cfg.get(key), dict):
            raise ModelLoadError(
                f"{ckpt.path / 'config.json'}: no {key!r}; this is not a CLAP-MusicGen checkpoint "
                "(expected the config of yuhuacheng/clap-musicgen's CLAPModel)"
            )
    return cfg


def projection_sizes(part: Mapping[str, Any]) -> tuple[int, int]:
    """``(hidden_dim, projection_dim)`` of a tower's MLP head (upstream's defaults: 512, 1024)."""
    return int(part.get("hidden_dim") or 512), int(part.get("projection_dim") or 1024)


def encodec_config(cfg: Mapping[str, Any]) -> Any:
    from transformers import EncodecConfig

    return EncodecConfig(**(cfg["audio_encoder_config"].get("encodec_config") or ENCODEC_32KHZ))


def decoder_config(cfg: Mapping[str, Any]) -> Any:
    from transformers import MusicgenDecoderConfig

    return MusicgenDecoderConfig(
        **(cfg["audio_encoder_config"].get("musicgen_decoder_config") or MUSICGEN_SMALL_DECODER)
    )


def text_model_config(cfg: Mapping[str, Any]) -> Any:
    from transformers import RobertaConfig

    return RobertaConfig(**(cfg["text_encoder_config"].get("text_model_config") or ROBERTA_BASE))


def sample_rate_of(cfg: Mapping[str, Any]) -> int:
    sub = cfg["audio_encoder_config"].get("encodec_config") or ENCODEC_32KHZ
    return int(sub.get("sampling_rate", 32000))


def text_limits(cfg: Mapping[str, Any]) -> int:
    """Longest token sequence the text model takes (RoBERTa: positions - padding offset - 1)."""
    sub = cfg["text_encoder_config"].get("text_model_config") or ROBERTA_BASE
    return int(sub.get("max_position_embeddings", 514)) - int(sub.get("pad_token_id", 1)) - 1


# --------------------------------------------------------------------------- weights


def read_weights(ckpt: Checkpoint, prefix: str, where: str) -> dict[str, "torch.Tensor"]:
    """The tensors under ``prefix`` (prefix removed), reading nothing else from safetensors.

    Every top-level name must be one of the towers' or :data:`UNUSED_KEYS`, so a file of
    another model is refused by name rather than half-loaded.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    strays: list[str] = []

    def take(key: str, get: Any) -> None:
        if key.startswith(prefix):
            out[key[len(prefix):]] = get()
        elif not key.startswith((AUDIO_PREFIX, TEXT_PREFIX)) and key not in UNUSED_KEYS:
            strays.append(key)

    for f in ckpt.weight_files():
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(f), framework="pt", device="cpu") as fh:
                    for key in fh.keys():
                        take(key, lambda key=key: fh.get_tensor(key))
            except Exception as exc:  # noqa: BLE001 - corrupt file: say which
                raise ModelLoadError(
                    f"{f}: cannot read weights ({type(exc).__name__}: {exc}). If the file is corrupt, "
                    "delete it from the Hugging Face cache and fetch it again."
                ) from exc
        else:
            try:
                loaded = torch.load(str(f), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - corrupt or unsafe file: say which
                raise ModelLoadError(f"{f}: cannot load weights ({type(exc).__name__}: {exc})") from exc
            if not isinstance(loaded, Mapping):
                raise ModelLoadError(f"{f}: expected a state dict, got {type(loaded).__name__}")
            for key, value in loaded.items():
                take(key, lambda value=value: value)
    if strays:
        raise ModelLoadError(
            f"{where}: tensors that are not CLAP-MusicGen's ({len(strays)}, e.g. "
            f"{', '.join(sorted(strays)[:4])}); expected only {AUDIO_PREFIX}*, {TEXT_PREFIX}* and "
            f"{', '.join(UNUSED_KEYS)}"
        )
    if not out:
        raise ModelLoadError(f"{where}: the weights hold no {prefix}* tensors; is this CLAP-MusicGen?")
    return out


# --------------------------------------------------------------------------- modules


def _projection(in_dim: int, hidden: int, out_dim: int) -> "torch.nn.Module":
    import torch
    from torch import nn

    class Projection(nn.Module):
        """Upstream's MLP head: two Linear+LayerNorm+ReLU blocks, a Linear, x / (||x|| + 1e-6).

        Kept as ``.projection`` (a Sequential) so the checkpoint's keys load as they are.
        """

        def __init__(self) -> None:
            super().__init__()
            self.projection = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                nn.Linear(hidden, out_dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.projection(x)
            return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + 1e-6)

    return Projection()


def build_audio_tower(ckpt: Checkpoint, where: str) -> "torch.nn.Module":
    """Waves ``[B, T]`` at 32 kHz -> ``[1, B, 1, D]``: one unit vector per window."""
    import torch
    from torch import nn
    from transformers import EncodecModel
    from transformers.models.musicgen.modeling_musicgen import MusicgenDecoder

    cfg = clap_config(ckpt)
    hidden, out_dim = projection_sizes(cfg["audio_encoder_config"])
    enc_cfg, dec_cfg = encodec_config(cfg), decoder_config(cfg)
    if enc_cfg.num_quantizers != dec_cfg.num_codebooks:
        raise ModelLoadError(
            f"{where}: EnCodec gives {enc_cfg.num_quantizers} codebooks at "
            f"{enc_cfg.target_bandwidths[0]} kbps but the MusicGen decoder embeds "
            f"{dec_cfg.num_codebooks}; the sub-model configs do not belong together"
        )

    class AudioTower(nn.Module):
        """EnCodec codes -> summed codebook embeddings (no delay pattern, no BOS) ->
        MusicGen decoder -> last step of its last hidden state (after the final LayerNorm)
        -> MLP head -> unit vector."""

        def __init__(self) -> None:
            super().__init__()
            self.encodec = EncodecModel(enc_cfg)
            self.transformer = MusicgenDecoder(dec_cfg)
            self.projection = _projection(dec_cfg.hidden_size, hidden, out_dim)

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            # chunk_length_s is None: one EnCodec frame over the whole window, codes
            # [1, B, K, S] at the smallest (and only) bandwidth.
            codes = self.encodec.encode(wave.unsqueeze(1), return_dict=True).audio_codes[0]
            x = self.transformer.embed_tokens[0](codes[:, 0])
            for k in range(1, codes.shape[1]):
                x = x + self.transformer.embed_tokens[k](codes[:, k])
            last = self.transformer(inputs_embeds=x, use_cache=False).last_hidden_state[:, -1]
            return self.projection(last)[None, :, None, :]

    tower = AudioTower()
    state = rename_keys(read_weights(ckpt, AUDIO_PREFIX, where), WEIGHT_NORM_RENAMES)
    load_into(tower, state, where, built_from=_built_from(cfg, "audio"))
    return tower.eval()


def build_text_tower(ckpt: Checkpoint, where: str) -> "torch.nn.Module":
    """Token ids + attention mask ``[N, S]`` -> ``[N, D]`` unit vectors."""
    import torch
    from torch import nn
    from transformers import RobertaModel

    cfg = clap_config(ckpt)
    hidden, out_dim = projection_sizes(cfg["text_encoder_config"])
    txt_cfg = text_model_config(cfg)

    class TextTower(nn.Module):
        """RoBERTa -> mean of the last hidden state over real tokens -> MLP head -> unit vector."""

        def __init__(self) -> None:
            super().__init__()
            self.text_encoder = RobertaModel(txt_cfg)  # pooler kept: it is in the checkpoint
            self.projection = _projection(txt_cfg.hidden_size, hidden, out_dim)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            states = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1)
            return self.projection(pooled)

    tower = TextTower()
    state = read_weights(ckpt, TEXT_PREFIX, where)
    load_into(tower, state, where, ignore=LEGACY_BUFFERS, built_from=_built_from(cfg, "text"))
    return tower.eval()


def _built_from(cfg: Mapping[str, Any], tower: str) -> str:
    if tower == "audio":
        own = [k for k in ("encodec_config", "musicgen_decoder_config") if cfg["audio_encoder_config"].get(k)]
        default = "facebook/encodec_32khz + facebook/musicgen-small's decoder"
    else:
        own = ["text_model_config"] if cfg["text_encoder_config"].get("text_model_config") else []
        default = "roberta-base"
    return (f"the checkpoint's {', '.join(own)}" if own else
            f"the configs of {default} (the released model's sub-models)")


def tokenizer_from(folder: Path, where: str) -> Any:
    """RoBERTa's byte-level BPE tokenizer from a folder with vocab.json + merges.txt."""
    from transformers import AutoTokenizer, RobertaTokenizer

    try:
        if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(str(folder))
        return RobertaTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - any tokenizer load failure: name the folder
        raise ModelLoadError(f"{where}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from exc
