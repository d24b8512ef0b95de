"""Tiny random-weight music2vec checkpoints in the released file layout (test helpers).

Kept out of conftest.py so test modules can import them (``music2vec_tiny`` is
on sys.path through this folder's conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

REPO_ID = "m-a-p/music2vec-v1"
SR = 16000


TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16, 16, 16, 16, 16, 16, 16],
    "conv_bias": True,  # not the transformers default: proves the key is read from the file
    "num_conv_pos_embedding_groups": 4,
}
"""Small sizes; strides, kernels and the positional conv stack stay as released."""


def released_config(**sizes) -> dict:
    """config.json as the release writes it: every key transformers 4.x saves for a
    ``Data2VecAudioConfig`` (``architectures`` Data2VecAudioModel), with small sizes.

    The released file itself could not be fetched here; this is the key set of
    that transformers generation, plus the release's known quirk: ``vocab_size``
    holds a file path from the authors' machine (today's strict
    ``Data2VecAudioConfig`` rejects it, which is why the plugin maps the keys).
    """
    cfg = {
        "_name_or_path": "/data/music2vec/checkpoints/hf_music2vec",
        "activation_dropout": 0.0,
        "adapter_kernel_size": 3,
        "adapter_stride": 2,
        "add_adapter": False,
        "architectures": ["Data2VecAudioModel"],
        "attention_dropout": 0.1,
        "bos_token_id": 1,
        "classifier_proj_size": 256,
        "conv_bias": False,
        "conv_dim": [512, 512, 512, 512, 512, 512, 512],
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_pos_kernel_size": 19,
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "ctc_loss_reduction": "sum",
        "ctc_zero_infinity": False,
        "eos_token_id": 2,
        "feat_extract_activation": "gelu",
        "feat_proj_dropout": 0.1,
        "final_dropout": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout": 0.1,
        "hidden_size": 768,
        "initializer_range": 0.02,
        "intermediate_size": 3072,
        "layer_norm_eps": 1e-05,
        "layerdrop": 0.05,
        "mask_feature_length": 10,
        "mask_feature_min_masks": 0,
        "mask_feature_prob": 0.0,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_time_prob": 0.65,
        "model_type": "data2vec-audio",
        "num_adapter_layers": 3,
        "num_attention_heads": 12,
        "num_conv_pos_embedding_groups": 16,
        "num_conv_pos_embeddings": 5,
        "num_feat_extract_layers": 7,
        "num_hidden_layers": 12,
        "output_hidden_size": 768,
        "pad_token_id": 0,
        "tdnn_dilation": [1, 2, 3, 1, 1],
        "tdnn_dim": [512, 512, 512, 512, 1500],
        "tdnn_kernel": [5, 3, 3, 1, 1],
        "torch_dtype": "float32",
        "transformers_version": "4.24.0",
        "use_weighted_layer_sum": False,
        "vocab_size": "/data/music2vec/dict.ltr.txt",
        "xvector_output_dim": 512,
    }
    cfg.update(sizes)
    cfg["output_hidden_size"] = cfg["hidden_size"]
    cfg["num_feat_extract_layers"] = len(cfg["conv_dim"])
    return cfg


PREPROCESSOR = {
    "do_normalize": True,
    "feature_extractor_type": "Wav2Vec2FeatureExtractor",
    "feature_size": 1,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 16000,
}
"""The Wav2Vec2FeatureExtractor settings of the model card's processor."""


def random_state(seed: int) -> dict:
    """Weights of a freshly initialised ``Data2VecAudioModel`` (upstream key names)."""
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    torch.manual_seed(seed)
    model = Data2VecAudioModel(Data2VecAudioConfig(**TINY, mask_time_prob=0.65))
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for key, value in state.items():  # LayerNorms away from their init, so a lost one shows
        if "layer_norm" in key:
            value.add_(0.1 * torch.randn_like(value))
    return state


def write_folder(folder: Path, config: dict, state: dict | None = None, weights: str = "safetensors",
                 preprocessor: dict | None = PREPROCESSOR) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    if state is not None:
        if weights == "safetensors":
            save_file(state, str(folder / "model.safetensors"))
        else:
            torch.save(state, folder / "pytorch_model.bin")
    return folder


def waves(batch: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """Music-like test signals: a few partials plus noise, different per row, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    rows = []
    for _ in range(batch):
        f0 = 110.0 * 2 ** (torch.randint(0, 24, (1,), generator=g).item() / 12)
        x = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 5))
        rows.append(0.3 * x + 0.05 * torch.randn(t.shape, generator=g) + 0.1)  # a DC offset too
    return torch.stack(rows).clamp(-1, 1).float()


def reference(folder: Path, wave: torch.Tensor, do_normalize: bool | None = None) -> torch.Tensor:
    """The model card's recipe, done by transformers: feature extractor, model, hidden states stacked."""
    from transformers import Data2VecAudioModel, Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder))
    if do_normalize is not None:
        extractor.do_normalize = do_normalize
    model = Data2VecAudioModel.from_pretrained(str(folder)).eval()
    inputs = extractor(list(wave.numpy()), sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return torch.stack(out.hidden_states)


def frames_for(samples: int) -> int:
    """Output frames of the conv front end (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2)."""
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
        samples = (samples - k) // s + 1
    return samples
