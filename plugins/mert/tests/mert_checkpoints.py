"""Tiny random-weight MERT checkpoints in the released hub layout, and their references.

Each checkpoint folder holds what the m-a-p repos hold for loading:

* ``config.json`` with the released keys (``model_type: "mert_model"``,
  ``architectures: ["MERTModel"]``, ``auto_map``, ``feature_extractor_cqt``,
  ``deepnorm``, ``attention_relax``, ``sample_rate``, ...), only the sizes shrunk;
* ``preprocessor_config.json`` (Wav2Vec2FeatureExtractor);
* ``pytorch_model.bin`` with MERTModel's key names: no prefix, the positional
  conv in torch's legacy weight-norm layout (``weight_g`` / ``weight_v``, made by
  ``torch.nn.utils.weight_norm`` itself) and the pre-training ``masked_spec_embed``.

The reference for each is a transformers ``HubertModel`` built here from its own
``HubertConfig`` (not through the plugin's config mapping) and holding the same
weights.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

AUTO_MAP = {"AutoConfig": "configuration_MERT.MERTConfig", "AutoModel": "modeling_MERT.MERTModel"}
CONV = {"conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2]}

# config.json of m-a-p/MERT-v1-95M as released (key for key).
RELEASED_V1_95M: dict[str, Any] = {
    "_name_or_path": "m-a-p/MERT-v1-95M", "activation_dropout": 0.0, "apply_spec_augment": True,
    "architectures": ["MERTModel"], "attention_dropout": 0.1, "attention_relax": -1.0, "auto_map": AUTO_MAP,
    "bos_token_id": 1, "classifier_proj_size": 256, "conv_bias": False, **CONV,
    "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "deepnorm": False, "do_stable_layer_norm": False,
    "eos_token_id": 2, "feat_extract_activation": "gelu", "feat_extract_dropout": 0.0, "feat_extract_norm": "group",
    "feat_proj_dropout": 0.1, "feat_proj_layer_norm": True, "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336, "final_dropout": 0.1, "gradient_checkpointing": False, "hidden_act": "gelu",
    "hidden_dropout": 0.1, "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "layer_norm_eps": 1e-05, "layerdrop": 0.05, "mask_feature_length": 10,
    "mask_feature_min_masks": 0, "mask_feature_prob": 0.0, "mask_time_length": 10, "mask_time_min_masks": 2,
    "mask_time_prob": 0.05, "model_type": "mert_model", "num_attention_heads": 12,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 12, "pad_token_id": 0, "sample_rate": 24000, "tokenizer_class": "Wav2Vec2CTCTokenizer",
    "torch_dtype": "float32", "transformers_version": "4.24.0", "use_weighted_layer_sum": False, "vocab_size": 32,
}

# config.json of m-a-p/MERT-v1-330M as released: stable layer norm, attention_relax 32.
RELEASED_V1_330M: dict[str, Any] = {
    "_name_or_path": "m-a-p/MERT-v1-330M", "activation_dropout": 0.0, "apply_spec_augment": True,
    "architectures": ["MERTModel"], "attention_dropout": 0.0, "attention_relax": 32.0, "auto_map": AUTO_MAP,
    "bos_token_id": 1, "classifier_proj_size": 256, "conv_bias": False, **CONV,
    "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "deepnorm": False, "do_stable_layer_norm": True,
    "eos_token_id": 2, "feat_extract_activation": "gelu", "feat_extract_dropout": 0.0, "feat_extract_norm": "group",
    "feat_proj_dropout": 0.0, "feat_proj_layer_norm": True, "feature_extractor_cqt": False,
    "feature_extractor_cqt_bins": 336, "final_dropout": 0.0, "gradient_checkpointing": False, "hidden_act": "gelu",
    "hidden_dropout": 0.0, "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 4096,
    "layer_norm_eps": 1e-05, "layerdrop": 0.0, "mask_channel_length": 10, "mask_channel_min_space": 1,
    "mask_channel_other": 0.0, "mask_channel_prob": 0.0, "mask_channel_selection": "static",
    "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0, "mask_time_length": 10,
    "mask_time_min_masks": 2, "mask_time_min_space": 1, "mask_time_other": 0.0, "mask_time_prob": 0.075,
    "mask_time_selection": "static", "model_type": "mert_model", "num_attention_heads": 16,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 24, "pad_token_id": 0, "sample_rate": 24000, "tokenizer_class": "Wav2Vec2CTCTokenizer",
    "torch_dtype": "float32", "transformers_version": "4.24.0", "use_weighted_layer_sum": False, "vocab_size": 32,
}

# config.json of m-a-p/MERT-v0-public: 16 kHz, group norm, the older MusicHubert keys plus
# model_type / auto_map / attention_relax.
RELEASED_V0_PUBLIC: dict[str, Any] = {
    "_name_or_path": "m-a-p/MERT-v0-public", "activation_dropout": 0.1, "apply_spec_augment": True,
    "architectures": ["MERTModel"], "attention_relax": -1.0, "auto_map": AUTO_MAP, "model_type": "mert_model",
    "attention_dropout": 0.1, "bos_token_id": 1, "classifier_proj_size": 256, "conv_bias": False, **CONV,
    "ctc_loss_reduction": "sum", "ctc_zero_infinity": False, "do_stable_layer_norm": False, "eos_token_id": 2,
    "feat_extract_activation": "gelu", "feat_extract_dropout": 0.0, "feat_extract_norm": "group",
    "feat_proj_dropout": 0.1, "feat_proj_layer_norm": True, "final_dropout": 0.1, "gradient_checkpointing": False,
    "hidden_act": "gelu", "hidden_dropout": 0.1, "hidden_dropout_prob": 0.1, "hidden_size": 768,
    "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "layerdrop": 0.1,
    "mask_feature_length": 10, "mask_feature_min_masks": 0, "mask_feature_prob": 0.0, "mask_time_length": 10,
    "mask_time_min_masks": 2, "mask_time_prob": 0.05, "num_attention_heads": 12,
    "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128, "num_feat_extract_layers": 7,
    "num_hidden_layers": 12, "pad_token_id": 0, "sample_rate": 16000, "tokenizer_class": "Wav2Vec2CTCTokenizer",
    "torch_dtype": "float32", "transformers_version": "4.24.0", "use_weighted_layer_sum": False, "vocab_size": 32,
}


def preprocessor(sampling_rate: int, do_normalize: bool) -> dict[str, Any]:
    """preprocessor_config.json in the released layout (Wav2Vec2FeatureExtractor)."""
    return {
        "do_normalize": do_normalize, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0, "return_attention_mask": True, "sampling_rate": sampling_rate,
    }


@dataclass
class Tiny:
    """One tiny checkpoint: where it lies, under which repo id, and its reference model."""

    repo_id: str
    folder: Path
    config: dict[str, Any]
    preprocessor: dict[str, Any]
    reference: HubertModel
    revision: str = ""

    @property
    def sample_rate(self) -> int:
        return int(self.preprocessor["sampling_rate"])

    @property
    def layers(self) -> int:
        return int(self.config["num_hidden_layers"]) + 1

    @property
    def dim(self) -> int:
        return int(self.config["hidden_size"])

    def reference_states(self, wave: torch.Tensor, normalize: bool | None = None) -> torch.Tensor:
        """``[L, B, F, D]`` from the reference: transformers' feature extractor, then HubertModel.

        MERT's hidden states (transformers 4.2x semantics): the transformer's input,
        then each layer's output; with the stable-layer-norm encoder the last entry
        is after the encoder's final LayerNorm, i.e. ``last_hidden_state``.
        """
        pre = dict(self.preprocessor)
        if normalize is not None:
            pre["do_normalize"] = normalize
        fe = Wav2Vec2FeatureExtractor(**{k: v for k, v in pre.items() if k != "feature_extractor_type"})
        inputs = fe([w.numpy() for w in wave], sampling_rate=self.sample_rate, return_tensors="pt")
        with torch.no_grad():
            out = self.reference(inputs.input_values, output_hidden_states=True)
        states = list(out.hidden_states)
        states[-1] = out.last_hidden_state
        return torch.stack(states)


def reference_config(cfg: dict[str, Any]) -> HubertConfig:
    """The HubertConfig a reader of MERT's modeling code writes for this config.json."""
    return HubertConfig(
        hidden_size=cfg["hidden_size"], num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"], intermediate_size=cfg["intermediate_size"],
        conv_dim=cfg["conv_dim"], conv_stride=cfg["conv_stride"], conv_kernel=cfg["conv_kernel"],
        conv_bias=cfg["conv_bias"], feat_extract_norm=cfg["feat_extract_norm"],
        do_stable_layer_norm=cfg["do_stable_layer_norm"], num_conv_pos_embeddings=cfg["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=cfg["num_conv_pos_embedding_groups"], layer_norm_eps=cfg["layer_norm_eps"],
        feat_proj_layer_norm=cfg["feat_proj_layer_norm"], mask_time_prob=0.0,
    )


def shrink(released: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The released config with small sizes (same keys, same architecture family)."""
    cfg = copy.deepcopy(released)
    cfg.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
               conv_dim=[16] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    cfg.update(overrides)
    return cfg


def legacy_mert_state(model: HubertModel, hidden_size: int) -> dict[str, torch.Tensor]:
    """The model's weights as MERT's pytorch_model.bin stores them."""
    state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("encoder.pos_conv_embed.conv.")}
    conv = model.encoder.pos_conv_embed.conv
    legacy = torch.nn.Conv1d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                             groups=conv.groups)
    with torch.no_grad():
        legacy.weight.copy_(conv.weight)
        legacy.bias.copy_(conv.bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.nn.utils.weight_norm(legacy, name="weight", dim=2)  # -> weight_g, weight_v
    state.update({f"encoder.pos_conv_embed.conv.{k}": v.detach().clone() for k, v in legacy.state_dict().items()})
    state["masked_spec_embed"] = torch.rand(hidden_size)
    return state


def make_checkpoint(folder: Path, repo_id: str, cfg: dict[str, Any], pre: dict[str, Any], seed: int) -> Tiny:
    """Write a tiny checkpoint folder; return it with its reference model."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    reference = HubertModel(reference_config(cfg)).eval()
    with torch.no_grad():  # non-trivial norm affines, so a wrong norm placement shows
        for name, p in reference.named_parameters():
            if "norm" in name and p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    torch.save(legacy_mert_state(reference, cfg["hidden_size"]), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
    return Tiny(repo_id, folder, cfg, pre, reference)


def released_configs_cache(tmp_path, monkeypatch):
    """The released config.json + preprocessor_config.json of each MERT variant (no weights)
    in an offline hub cache under their real repo ids: geometry needs only these files.
    Used by the tests that check released geometries without any weights."""
    import json

    from musicembed_core.testing import save_to_hub_cache

    for repo, cfg, rate in (
        ("m-a-p/MERT-v1-95M", RELEASED_V1_95M, 24000),
        ("m-a-p/MERT-v1-330M", RELEASED_V1_330M, 24000),
        ("m-a-p/MERT-v0-public", RELEASED_V0_PUBLIC, 16000),
    ):
        folder = tmp_path / repo.replace("/", "_")
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor(rate, True)))
        save_to_hub_cache(tmp_path / "hub", repo, folder)
    # music2vec-v1 (for the runs that pair it with MERT): a data2vec-audio base config.
    folder = tmp_path / "music2vec"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "data2vec-audio", "hidden_size": 768, "num_hidden_layers": 12}))
    save_to_hub_cache(tmp_path / "hub", "m-a-p/music2vec-v1", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
