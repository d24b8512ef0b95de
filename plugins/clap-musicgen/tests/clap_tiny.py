"""Tiny random-weight CLAP-MusicGen checkpoints in the released layout, and a reference.

A checkpoint folder holds what ``yuhuacheng/clap-musicgen`` holds: ``config.json`` (the
upstream CLAPConfig keys, plus the tiny sub-model configs, which the released file lacks)
and ``model.safetensors`` with every tensor of upstream's ``CLAPModel`` under its key
(``audio_encoder.encodec.*``, ``audio_encoder.transformer.*``,
``audio_encoder.projection.projection.N.*``, ``text_encoder.text_encoder.*``,
``text_encoder.projection.projection.N.*``, ``logit_scale_a``, ``logit_scale_t``).
Same architecture, tiny sizes: EnCodec at 32 kHz with 4 codebooks at 50 Hz, a 2-layer
MusicGen decoder, a 2-layer RoBERTa, the same MLP shape (scaled down).

The reference functions compute vectors straight from transformers modules and
``torch.nn.functional`` on the state dict, written apart from the plugin's code path.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

REPO_ID = "yuhuacheng/clap-musicgen"
TOKENIZER_ID = "yuhuacheng/clap-roberta-finetuned"
HIDDEN, DIM = 8, 12  # MLP hidden_dim and projection_dim (released: 512, 1024)

ENCODEC = {
    "audio_channels": 1, "chunk_length_s": None, "codebook_dim": 8, "codebook_size": 2048,
    "compress": 2, "dilation_growth_rate": 2, "hidden_size": 8, "kernel_size": 7,
    "last_kernel_size": 7, "norm_type": "weight_norm", "normalize": False, "num_filters": 4,
    "num_lstm_layers": 1, "num_residual_layers": 1, "overlap": None, "pad_mode": "reflect",
    "residual_kernel_size": 3, "sampling_rate": 32000, "target_bandwidths": [2.2],
    "trim_right_ratio": 1.0, "upsampling_ratios": [8, 5, 4, 4], "use_causal_conv": False,
    "use_conv_shortcut": False,
}
DECODER = {
    "vocab_size": 2048, "max_position_embeddings": 2048, "num_hidden_layers": 2, "ffn_dim": 32,
    "num_attention_heads": 2, "hidden_size": 16, "num_codebooks": 4, "activation_function": "gelu",
    "dropout": 0.1, "scale_embedding": False, "pad_token_id": 2048, "bos_token_id": 2048,
}
CORPUS = [
    "calm piano with rain", "dark metal", "positive jazzy lofi", "fast house edm", "gangsta rap",
    "ambient drone", "rock guitar", "soft acoustic folk", "orchestral classical music",
]


def roberta_config(vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "hidden_size": 16, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 66,
            "type_vocab_size": 1, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "layer_norm_eps": 1e-5}


def write_tokenizer(folder: Path) -> None:
    """A tiny byte-level BPE (RoBERTa's kind) trained on a few tags, saved as a RoBERTa
    tokenizer repo saved by transformers 4.x is: vocab.json, merges.txt,
    tokenizer_config.json, special_tokens_map.json (no tokenizer.json)."""
    from tokenizers import ByteLevelBPETokenizer

    folder.mkdir(parents=True, exist_ok=True)
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
               "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 4, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(folder))
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer", "model_max_length": 512, "errors": "replace",
        "add_prefix_space": False, "trim_offsets": True, **special}))


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def _mlp_state(prefix: str, in_dim: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {}
    for idx, (a, b) in {0: (in_dim, HIDDEN), 3: (HIDDEN, HIDDEN), 6: (HIDDEN, DIM)}.items():
        out[f"{prefix}projection.projection.{idx}.weight"] = torch.randn(b, a, generator=gen) / a ** 0.5
        out[f"{prefix}projection.projection.{idx}.bias"] = torch.randn(b, generator=gen) * 0.1
    for idx in (1, 4):
        out[f"{prefix}projection.projection.{idx}.weight"] = 1 + 0.1 * torch.randn(HIDDEN, generator=gen)
        out[f"{prefix}projection.projection.{idx}.bias"] = 0.1 * torch.randn(HIDDEN, generator=gen)
    return out


def random_state(seed: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """Every tensor of a tiny CLAPModel, random (codebooks spread over the encoder's outputs)."""
    from transformers import EncodecConfig, EncodecModel, MusicgenDecoderConfig, RobertaConfig, RobertaModel
    from transformers.models.musicgen.modeling_musicgen import MusicgenDecoder

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    encodec = EncodecModel(EncodecConfig(**ENCODEC)).eval()
    with torch.no_grad():  # EnCodec initialises its codebooks to zeros: spread them out
        t = torch.arange(32000) / 32000
        probe = torch.sin(2 * torch.pi * 220 * t) * 0.3 + 0.05 * torch.randn(32000, generator=gen)
        emb = encodec.encoder(probe.view(1, 1, -1))
        for layer in encodec.quantizer.layers:
            layer.codebook.embed.copy_(torch.randn(layer.codebook.embed.shape, generator=gen) * emb.std())
    decoder = MusicgenDecoder(MusicgenDecoderConfig(**DECODER))
    roberta = RobertaModel(RobertaConfig(**roberta_config(vocab_size)))
    state: dict[str, torch.Tensor] = {}
    for prefix, module in (("audio_encoder.encodec.", encodec), ("audio_encoder.transformer.", decoder),
                           ("text_encoder.text_encoder.", roberta)):
        state.update({prefix + k: v.detach().clone().contiguous() for k, v in module.state_dict().items()})
    state.update(_mlp_state("audio_encoder.", DECODER["hidden_size"], gen))
    state.update(_mlp_state("text_encoder.", 16, gen))
    state["logit_scale_a"] = torch.tensor(4.6)
    state["logit_scale_t"] = torch.tensor(4.6)
    return state


def config_json(vocab_size: int) -> dict:
    return {
        "architectures": ["CLAPModel"],
        "audio_encoder_config": {
            "encodec_model_name": "model/encodec", "musicgen_decoder_model_name": "model/musicgen_decoder",
            "projection_dim": DIM, "hidden_dim": HIDDEN, "freeze_musicgen": True,
            "encodec_config": ENCODEC, "musicgen_decoder_config": DECODER,
        },
        "text_encoder_config": {"projection_dim": DIM, "hidden_dim": HIDDEN, "freeze_text_encoder": True,
                                "text_model_config": roberta_config(vocab_size)},
        "temp_a": 0.01, "temp_t": 0.01, "torch_dtype": "float32",
    }


def write_checkpoint(folder: Path, state: dict[str, torch.Tensor], vocab_size: int,
                     legacy_weight_norm: bool = False) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if legacy_weight_norm:  # torch's old weight_norm names, as older saves have them
        state = {k.replace(".conv.parametrizations.weight.original0", ".conv.weight_g")
                 .replace(".conv.parametrizations.weight.original1", ".conv.weight_v"): v
                 for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config_json(vocab_size), indent=2))


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --------------------------------------------------------------------------- reference


def _strip(state, prefix):
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _head(state, prefix, x):
    p = lambda i, n: state[f"{prefix}projection.projection.{i}.{n}"]  # noqa: E731
    x = F.relu(F.layer_norm(F.linear(x, p(0, "weight"), p(0, "bias")), (HIDDEN,), p(1, "weight"), p(1, "bias")))
    x = F.relu(F.layer_norm(F.linear(x, p(3, "weight"), p(3, "bias")), (HIDDEN,), p(4, "weight"), p(4, "bias")))
    return F.linear(x, p(6, "weight"), p(6, "bias"))


def head_hidden(state, prefix, x):
    """The MLP head up to its last Linear (for building aligned checkpoints)."""
    p = lambda i, n: state[f"{prefix}projection.projection.{i}.{n}"]  # noqa: E731
    x = F.relu(F.layer_norm(F.linear(x, p(0, "weight"), p(0, "bias")), (HIDDEN,), p(1, "weight"), p(1, "bias")))
    return F.relu(F.layer_norm(F.linear(x, p(3, "weight"), p(3, "bias")), (HIDDEN,), p(4, "weight"), p(4, "bias")))


class Reference:
    """CLAP-MusicGen computed directly from transformers modules on a checkpoint's state."""

    def __init__(self, folder: Path, tokenizer_folder: Path) -> None:
        from transformers import EncodecConfig, EncodecModel, MusicgenDecoderConfig, RobertaConfig, RobertaModel
        from transformers.models.musicgen.modeling_musicgen import MusicgenDecoder

        self.state = read_state(folder)
        cfg = json.loads((folder / "config.json").read_text())
        self.encodec = EncodecModel(EncodecConfig(**cfg["audio_encoder_config"]["encodec_config"])).eval()
        self.encodec.load_state_dict(_strip(self.state, "audio_encoder.encodec."))
        self.decoder = MusicgenDecoder(MusicgenDecoderConfig(**cfg["audio_encoder_config"]["musicgen_decoder_config"])).eval()
        self.decoder.load_state_dict(_strip(self.state, "audio_encoder.transformer."))
        self.roberta = RobertaModel(RobertaConfig(**cfg["text_encoder_config"]["text_model_config"])).eval()
        self.roberta.load_state_dict(_strip(self.state, "text_encoder.text_encoder."))
        self.tok = load_tokenizer(tokenizer_folder)

    @torch.no_grad()
    def audio_hidden(self, wave: torch.Tensor) -> torch.Tensor:
        codes = self.encodec.encode(wave[:, None, :]).audio_codes.squeeze(0)  # [B, K, S]
        x = sum(self.decoder.embed_tokens[k](codes[:, k]) for k in range(codes.shape[1]))
        return self.decoder(inputs_embeds=x).last_hidden_state[:, -1, :]

    @torch.no_grad()
    def audio(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` -> ``[B, DIM]``."""
        y = _head(self.state, "audio_encoder.", self.audio_hidden(wave))
        return y / (y.norm(dim=-1, keepdim=True) + 1e-6)

    @torch.no_grad()
    def text_hidden(self, texts: list[str]) -> torch.Tensor:
        enc = self.tok(texts, return_tensors="pt", padding=True, truncation=True)
        h = self.roberta(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).expand(h.size()).float()
        return (h * m).sum(1) / m.sum(1)

    @torch.no_grad()
    def text(self, texts: list[str]) -> torch.Tensor:
        y = _head(self.state, "text_encoder.", self.text_hidden(texts))
        return y / (y.norm(dim=-1, keepdim=True) + 1e-6)


def aligned_state(ref: Reference, texts: list[str], targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same weights with the text head's last Linear solved (least squares) so that
    ``texts[i]`` maps onto the direction of ``targets[i]``."""
    hid = head_hidden(ref.state, "text_encoder.", ref.text_hidden(texts))  # [N, HIDDEN]
    ones = torch.ones(hid.shape[0], 1)
    sol = (torch.linalg.pinv(torch.cat([hid, ones], 1).double()) @ targets.double()).float()
    state = dict(ref.state)
    state["text_encoder.projection.projection.6.weight"] = sol[:-1].t().contiguous()
    state["text_encoder.projection.projection.6.bias"] = sol[-1].contiguous()
    return state
