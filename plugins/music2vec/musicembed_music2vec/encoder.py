"""Music2Vec (``m-a-p/music2vec-v1``): a data2vec-audio model pre-trained on music.

The released checkpoint is a plain transformers ``Data2VecAudioModel`` (no
remote code): 16 kHz mono in, 50 frames/s out, 13 hidden states of 768 dims
(the transformer's input after the positional convolution, then 12 layers).

Loading is ours rather than ``from_pretrained`` so that it goes through
``musicembed_core.hub`` (repo id + revision, HF cache, offline mode, safetensors
or ``weights_only`` .bin) and so that the released ``config.json`` loads under
today's strict transformers config validation: its ``vocab_size`` holds a file
path from the authors' machine, which ``Data2VecAudioConfig`` now rejects. Only
the keys that shape the encoder are taken from the file (:data:`ARCH_KEYS`).

Nothing here imports torch or transformers at module level: ``musicembed
plugins`` imports this module only to list it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from musicembed_core.hub import (
    Checkpoint,
    ModelLoadError,
    PretrainedEncoder,
    conv_frames,
    hidden_states_module,
    load_into,
    rename_keys,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import Data2VecAudioConfig

log = logging.getLogger(__name__)

MODEL_TYPE = "data2vec-audio"

ARCH_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "feat_extract_activation",
    "conv_dim",
    "conv_stride",
    "conv_kernel",
    "conv_bias",
    "num_conv_pos_embedding_groups",
    "conv_pos_kernel_size",
    "num_conv_pos_embeddings",
    "add_adapter",
    "adapter_kernel_size",
    "adapter_stride",
    "num_adapter_layers",
    "output_hidden_size",
)
"""config.json keys that decide the encoder's architecture. The rest of a
released config (dropouts, SpecAugment masking, CTC/x-vector heads, token ids,
``vocab_size``) does not change hidden states at inference and stays at the
transformers defaults; missing keys fall back to them too (the base-size
data2vec-audio values)."""

PREFIX = "data2vec_audio."
"""Key prefix of checkpoints saved from a task model (``Data2VecAudioForCTC``, ...)."""

LEGACY_RENAMES = {"layer_norm.gamma": "layer_norm.weight", "layer_norm.beta": "layer_norm.bias"}
"""Old LayerNorm parameter names that transformers' own loader still accepts."""

UNUSED_KEYS = ("masked_spec_embed",)
"""The SpecAugment mask vector: only used in training; the model is built without it."""

DEFAULT_PREPROCESSOR = {"do_normalize": True, "sampling_rate": 16000}
"""What the model card's processor (``facebook/data2vec-audio-base-960h``'s
Wav2Vec2FeatureExtractor) does, for checkpoints without a preprocessor_config.json."""


def data2vec_config(checkpoint: Checkpoint) -> Data2VecAudioConfig:
    """The checkpoint's config.json mapped onto ``Data2VecAudioConfig`` (architecture keys only)."""
    from transformers import Data2VecAudioConfig

    where = checkpoint.path / "config.json"
    raw = checkpoint.read_json("config.json")
    model_type = raw.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ModelLoadError(
            f"{where}: model_type is {model_type!r}, but encoders.music2vec loads "
            f"{MODEL_TYPE!r} checkpoints such as m-a-p/music2vec-v1 (MERT checkpoints go to "
            "encoders.mert). Point encoders.music2vec.model at a data2vec-audio checkpoint."
        )
    kwargs = {k: raw[k] for k in ARCH_KEYS if k in raw}
    try:
        # Inference only: no SpecAugment (and so no masked_spec_embed parameter), no layer drop.
        return Data2VecAudioConfig(**kwargs, mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0)
    except Exception as exc:
        raise ModelLoadError(
            f"{where}: not a valid data2vec-audio architecture ({type(exc).__name__}: {exc})"
        ) from exc


def preprocessor(checkpoint: Checkpoint) -> dict[str, Any]:
    """``do_normalize`` and ``sampling_rate`` from preprocessor_config.json (model-card defaults)."""
    raw = checkpoint.read_json("preprocessor_config.json", required=False)
    out = {k: raw.get(k, v) for k, v in DEFAULT_PREPROCESSOR.items()}
    where = checkpoint.path / "preprocessor_config.json"
    if not isinstance(out["do_normalize"], bool):
        raise ModelLoadError(f"{where}: do_normalize must be true or false, got {out['do_normalize']!r}")
    if not isinstance(out["sampling_rate"], int) or out["sampling_rate"] <= 0:
        raise ModelLoadError(
            f"{where}: sampling_rate must be a positive integer, got {out['sampling_rate']!r}"
        )
    return out


def model_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys as ``Data2VecAudioModel`` names them.

    A checkpoint saved from a task model has every encoder key under
    ``data2vec_audio.``; its other keys are task heads (CTC, classifier) and are dropped.
    """
    if any(k.startswith(PREFIX) for k in state):
        heads = sorted(k for k in state if not k.startswith(PREFIX))
        if heads:
            log.debug("music2vec: ignoring task-head tensors %s", heads)
        state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    return rename_keys(state, LEGACY_RENAMES)


class Music2VecEncoder(PretrainedEncoder):
    """Music2Vec frames: every hidden state of a data2vec-audio checkpoint, ``[13, B, F, 768]``.

    The geometry is what the resolved checkpoint's config.json and
    preprocessor_config.json say (16 kHz, 50 frames/s, 13 x 768 for the release).
    ``model``: Hugging Face repo id or local folder; ``revision``: branch, tag or
    commit sha (pin it for reproducible spaces); ``device``: cpu, cuda, cuda:N,
    mps or auto; ``dtype``: float32, bfloat16 or float16.
    """

    name = "music2vec"
    default_model = "m-a-p/music2vec-v1"
    window_seconds = 30.0  # music2vec's pre-training context
    min_seconds = 0.1  # the conv front end needs 400 samples (25 ms) for one frame

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        config = data2vec_config(checkpoint)
        sample_rate = preprocessor(checkpoint)["sampling_rate"]
        return {
            "sample_rate": sample_rate,
            "frame_rate": sample_rate / math.prod(config.conv_stride),
            "num_layers": config.num_hidden_layers + 1,
            "dim": config.hidden_size,
            **conv_frames(config.conv_kernel, config.conv_stride),
        }

    def build_module(self, checkpoint: Checkpoint) -> torch.nn.Module:
        from transformers import Data2VecAudioModel

        config = data2vec_config(checkpoint)
        model = Data2VecAudioModel(config)
        state = model_state(checkpoint.load_state_dict())
        load_into(model, state, where=f"{self.model} ({checkpoint.path})", ignore=UNUSED_KEYS)
        # Equal-length batches only (the pipeline's rule), so no attention mask is
        # passed: and padding would not be exact here anyway (see README).
        return hidden_states_module(model, normalize=preprocessor(checkpoint)["do_normalize"])
