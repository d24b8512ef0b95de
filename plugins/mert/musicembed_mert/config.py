"""MERT's config.json, read without MERT's custom code.

The released MERT checkpoints (``config.json`` with ``model_type: "mert_model"``
and an ``auto_map`` pointing at ``configuration_MERT`` / ``modeling_MERT``)
describe a HuBERT network: with ``feature_extractor_cqt: false`` and
``deepnorm: false``, MERT's model class builds exactly transformers'
``HubertFeatureEncoder``, a ``HubertFeatureProjection``-equivalent projection
(same keys, same maths) and ``HubertEncoder`` (or ``HubertEncoderStableLayerNorm``
when ``do_stable_layer_norm`` is true, as in MERT-v1-330M). This module maps such
a config onto ``HubertConfig`` keyword arguments and refuses the settings that
would need MERT's own code.

``attention_relax`` is accepted whatever its value: MERT reads it only in the
encoder layer it uses with ``deepnorm: true`` (refused here), and even there it
only subtracts each row's maximum before the softmax, which leaves the softmax
unchanged.

Pure Python (no torch): the encoder reads its geometry here before any weights load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from musicembed_core.hub import ModelLoadError, conv_frames

SUPPORTED = "m-a-p/MERT-v0-public, m-a-p/MERT-v1-95M, m-a-p/MERT-v1-330M"


@dataclass(frozen=True)
class Variant:
    """Geometry of a released checkpoint, known before it is downloaded."""

    sample_rate: int
    frame_rate: float
    num_layers: int
    dim: int
    params: str


# Hidden states = the transformer's input + one per layer (13 for 12 layers).
VARIANTS: dict[str, Variant] = {
    "m-a-p/MERT-v0-public": Variant(16000, 50.0, 13, 768, "95M"),
    "m-a-p/MERT-v1-95M": Variant(24000, 75.0, 13, 768, "95M"),
    "m-a-p/MERT-v1-330M": Variant(24000, 75.0, 25, 1024, "330M"),
}

# MERTConfig's defaults (configuration_MERT.py) for the keys that shape the network;
# a config.json that omits one of them means this value.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "conv_dim": [512] * 7,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
}

# Settings of MERT's own code that HubertModel does not have (all off in the releases).
REFUSED_FLAGS = {
    "feature_extractor_cqt": "MERT's CQT front end (nnAudio features concatenated to the conv features)",
    "deepnorm": "MERT's DeepNet encoder (scaled residual connections)",
}

ACCEPTED_MODEL_TYPES = ("mert_model", "hubert")


def unsupported(where: str, detail: str) -> ModelLoadError:
    return ModelLoadError(
        f"{where}: {detail}. encoders.mert supports the released MERT configs only "
        f"({SUPPORTED}: feature_extractor_cqt=false, deepnorm=false), which run as "
        "transformers' HubertModel without trust_remote_code."
    )


def check_supported(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse configs that need MERT's custom model code (or are not MERT at all)."""
    model_type = cfg.get("model_type")
    if model_type is not None and model_type not in ACCEPTED_MODEL_TYPES:
        raise unsupported(
            where,
            f"config.json has model_type={model_type!r}, not a MERT checkpoint "
            f"(expected {' or '.join(map(repr, ACCEPTED_MODEL_TYPES))})",
        )
    for key, what in REFUSED_FLAGS.items():
        if cfg.get(key, False):
            raise unsupported(where, f"config.json sets {key}={cfg[key]!r} ({what})")
    norm = cfg.get("feat_extract_norm", ARCHITECTURE_DEFAULTS["feat_extract_norm"])
    if norm not in ("group", "layer"):
        raise unsupported(where, f"config.json has feat_extract_norm={norm!r} (expected 'group' or 'layer')")
    conv = [cfg.get(k, ARCHITECTURE_DEFAULTS[k]) for k in ("conv_dim", "conv_stride", "conv_kernel")]
    if len({len(c) for c in conv}) != 1:
        raise unsupported(where, "config.json has conv_dim, conv_stride and conv_kernel of different lengths")


def hubert_config_kwargs(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``HubertConfig`` keyword arguments describing the same network as a MERT config.json."""
    check_supported(cfg, where)
    kwargs = {key: cfg.get(key, default) for key, default in ARCHITECTURE_DEFAULTS.items()}
    for key in ("conv_dim", "conv_stride", "conv_kernel"):
        kwargs[key] = [int(v) for v in kwargs[key]]
    # MERT's code never reads conv_pos_batch_norm: its positional conv is always weight-normed.
    kwargs["conv_pos_batch_norm"] = False
    return kwargs


def sample_rate_of(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any], where: str) -> int:
    """Input rate: preprocessor_config.json ``sampling_rate``, else config.json ``sample_rate``."""
    pre, own = preprocessor.get("sampling_rate"), cfg.get("sample_rate")
    if pre is not None and own is not None and int(pre) != int(own):
        raise ModelLoadError(
            f"{where}: preprocessor_config.json says sampling_rate={pre} but config.json says "
            f"sample_rate={own}; fix the checkpoint folder so they agree"
        )
    rate = pre if pre is not None else own
    if rate is None:
        raise ModelLoadError(
            f"{where}: no sample rate (neither preprocessor_config.json 'sampling_rate' nor "
            "config.json 'sample_rate'); add the rate the model was trained at"
        )
    return int(rate)


def hop_of(cfg: Mapping[str, Any]) -> int:
    """Samples per output frame: the product of the conv strides (320 for MERT)."""
    return math.prod(int(s) for s in cfg.get("conv_stride", ARCHITECTURE_DEFAULTS["conv_stride"]))


def receptive_field_of(cfg: Mapping[str, Any]) -> int:
    """Samples the conv front end needs for one output frame (400 for MERT)."""
    strides = cfg.get("conv_stride", ARCHITECTURE_DEFAULTS["conv_stride"])
    kernels = cfg.get("conv_kernel", ARCHITECTURE_DEFAULTS["conv_kernel"])
    return conv_frames(kernels, strides)["receptive_field"]


def do_normalize_of(preprocessor: Mapping[str, Any]) -> bool:
    """Per-clip zero-mean/unit-variance input normalisation, as the checkpoint's feature extractor does.

    ``Wav2Vec2FeatureExtractor`` (MERT's preprocessor class) normalises unless
    ``do_normalize`` is false, so a missing key means true.
    """
    return bool(preprocessor.get("do_normalize", True))
