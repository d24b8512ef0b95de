"""Build transformers' HubertModel from a MERT checkpoint and load its weights.

Imported only when an encoder loads (torch and transformers are heavy).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from musicembed_core.hub import Checkpoint, ModelLoadError, load_into

from .config import hubert_config_kwargs

# Tensors of pre-training that inference never uses: the learned embedding that
# replaces masked frames in MERT's masked-prediction objective.
PRETRAINING_ONLY = ("masked_spec_embed",)

POS_CONV = "encoder.pos_conv_embed.conv."
# torch's two weight-norm layouts of the positional conv: the legacy
# torch.nn.utils.weight_norm (MERT's checkpoints, saved with transformers 4.2x)
# and torch.nn.utils.parametrizations.weight_norm (what HubertModel builds now).
LEGACY_TO_PARAMETRIZED = {
    POS_CONV + "weight_g": POS_CONV + "parametrizations.weight.original0",
    POS_CONV + "weight_v": POS_CONV + "parametrizations.weight.original1",
}


def build_hubert(checkpoint: Checkpoint, where: str) -> torch.nn.Module:
    """transformers' HubertModel (eval mode) holding the checkpoint's weights."""
    from transformers import HubertConfig, HubertModel

    kwargs = hubert_config_kwargs(checkpoint.read_json("config.json"), where)
    try:
        config = HubertConfig(
            **kwargs,
            # Inference only: no SpecAugment masking (so no masked_spec_embed), no dropout.
            apply_spec_augment=False,
            mask_time_prob=0.0,
            mask_feature_prob=0.0,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            feat_proj_dropout=0.0,
            layerdrop=0.0,
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{where}: config.json does not describe a valid network ({exc})") from exc
    # MERT's hidden states are those of transformers 4.2x: with the stable-layer-norm
    # encoder (MERT-v1-330M) the last one is taken *after* the final LayerNorm.
    # transformers 5 returns the last layer's raw output there unless told otherwise.
    config.tie_last_hidden_states = True
    try:
        # Built without initialising (meta, then uninitialised CPU memory): every tensor is
        # overwritten by the strict load below, and random init costs ~10 s for the 330M.
        with torch.device("meta"):
            model = HubertModel(config)
    except (KeyError, ValueError) as exc:  # an unknown activation, heads not dividing the width, ...
        raise ModelLoadError(f"{where}: config.json does not describe a valid network ({exc})") from exc
    model = model.to_empty(device="cpu")
    if set(dict(model.named_buffers())) - set(model.state_dict()):  # a buffer no load would set
        model = HubertModel(config)
    state = to_hubert_keys(checkpoint.load_state_dict(), model.state_dict().keys())
    load_into(model, state, where, ignore=PRETRAINING_ONLY)
    bake_weight_norm(model)
    return model.eval()


def to_hubert_keys(state: Mapping[str, torch.Tensor], expected: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename the positional conv's weight-norm tensors to the layout the built model uses."""
    expected = set(expected)
    renames = dict(LEGACY_TO_PARAMETRIZED)
    if next(iter(renames)) in expected:  # a torch whose HubertModel still uses the legacy layout
        renames = {new: old for old, new in renames.items()}
    return {renames.get(k, k): v for k, v in state.items()}


def bake_weight_norm(model: torch.nn.Module) -> None:
    """Fold g * v / ||v|| into a plain weight once: same outputs, no per-call recomputation,
    and a simpler graph for TorchScript export."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if isinstance(module, torch.nn.Conv1d):
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            elif hasattr(module, "weight_g"):
                torch.nn.utils.remove_weight_norm(module)
