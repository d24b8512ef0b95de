"""MuQ and MuQ-MuLan in plain torch + transformers 5, loading the released weights as they are.

Facts from the upstream ``muq`` package 0.1.0 (MIT), re-implemented here (not copied):

* Front end: 24 kHz mono -> torchaudio ``MelSpectrogram`` defaults with n_fft 2048, hop 240,
  128 mels (HTK scale, no filter normalisation, periodic hann window, centred with reflect
  padding, power 2) -> ``AmplitudeToDB`` defaults (``10 log10(max(x, 1e-10))``, no top_db)
  -> the last frame dropped -> ``(x - mean) / std`` with ``stat.melspec_2048_mean/std`` of
  the checkpoint's config.json. The mel is always computed in float32.
* ``Conv2dSubsampling``: two residual 2-D blocks (3x3 convs with BatchNorm, stride 2 in
  frequency and time, a strided 3x3 conv + BatchNorm on the skip path), then the channels x
  remaining mel bands flattened and a linear layer to ``encoder_dim``: 100 -> 25 frames/s.
* transformers' ``Wav2Vec2ConformerEncoder`` (rotary positions in MuQ-large) built from
  ``w2v2_config`` with ``hidden_size = encoder_dim`` and ``num_hidden_layers = encoder_depth``.
  Under transformers 4.x its ``hidden_states`` were the input of each layer plus, last, the
  output of the final layer *after* the encoder's LayerNorm: 13 states for 12 layers.
  transformers 5 records hidden states through hooks of a PreTrainedModel, which MuQ's bare
  encoder is not, so the layers are run here one by one to collect the same 13 states.
* MuQ-MuLan audio: MuQ hidden state ``use_layer_idx`` (-1) -> Linear -> pre-norm transformer
  (0 layers in MuQ-MuLan-large) -> mean over time -> Linear -> L2, per clip of
  ``clip_secs`` (10 s); clips are cut from the start, the last one completed with audio from
  the track's start, and the clip vectors *averaged after* normalising (not renormalised).
* MuQ-MuLan text: XLM-RoBERTa ``last_hidden_state`` (the batch padded to its longest text,
  attention mask given to XLM-R) -> Linear or identity -> pre-norm transformer (qk-l2-norm
  attention with learned q/k scales and logit scale 8, GEGLU feed-forward, bias-free
  LayerNorms) with *no* padding mask -> mean over *all* tokens -> Linear -> L2.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicembed_core.frontends import MelSpectrogram
from musicembed_core.hub import ModelLoadError, load_into

SAMPLE_RATE = 24000
FRAME_SAMPLES = 960
"""Samples per MuQ frame: hop 240 x 4 (two stride-2 blocks): 25 frames/s at 24 kHz."""

MUQ_TRAINING_ONLY = ("cls_token", "quantizer_", "linear.", "rvq.", "recon_proj.")
"""Keys (below MuQModel) of the parts used only in pre-training: the cls token, the
random-projection quantisers, the codebook head, Mel-RVQ and reconstruction heads."""
MULAN_TRAINING_ONLY = ("contrast.", "audio.aggregator.", "text.model.pooler.",
                       "text.model.embeddings.position_ids", "text.model.embeddings.token_type_ids")
"""Keys (below ``mulan.``) that the MuQ-MuLan forward never uses: the contrastive loss's
temperature, the audio aggregator conv, XLM-R's pooler and its non-weight buffers."""


# ---------------------------------------------------------------------------------- configs
def muq_sizes(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What the plugin needs from a MuQ config.json (``MuQConfig`` fields), checked."""
    try:
        stat = cfg.get("stat") or {}
        out = {
            "hop_length": int(cfg.get("hop_length", 240)),
            "n_mels": int(cfg.get("n_mels", 128)),
            "conv_dim": int(cfg.get("conv_dim", 512)),
            "encoder_dim": int(cfg.get("encoder_dim", 1024)),
            "encoder_depth": int(cfg.get("encoder_depth", 12)),
            "label_rate": int(cfg.get("label_rate", 25)),
            "mean": float(stat["melspec_2048_mean"]),
            "std": float(stat["melspec_2048_std"]),
            "w2v2_config": dict(cfg.get("w2v2_config") or {}),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{where}: config.json is not a MuQ config (needs stat.melspec_2048_mean/std, "
            f"encoder_dim, w2v2_config; {type(exc).__name__}: {exc})"
        ) from exc
    if list(cfg.get("features", ["melspec_2048"])) != ["melspec_2048"]:
        raise ModelLoadError(f"{where}: features={cfg.get('features')!r}; only ['melspec_2048'] is supported")
    if out["hop_length"] != 240 or out["label_rate"] != 25:
        raise ModelLoadError(
            f"{where}: hop_length={out['hop_length']}, label_rate={out['label_rate']}; this plugin "
            "supports MuQ's released layout (hop 240, 25 Hz)"
        )
    if out["n_mels"] % 4:
        raise ModelLoadError(f"{where}: n_mels={out['n_mels']} must be a multiple of 4")
    return out


def mulan_sizes(cfg: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What the plugin needs from a MuQ-MuLan config.json (``MuQMuLanConfig``), checked."""
    try:
        mulan, am, tm = cfg["mulan"], cfg["audio_model"], cfg["text_model"]
        at, tt = cfg["audio_transformer"], cfg["text_transformer"]
        out = {
            "sample_rate": int(mulan.get("sr", SAMPLE_RATE)),
            "clip_secs": float(mulan.get("clip_secs", 10)),
            "dim_latent": int(mulan.get("dim_latent", 512)),
            "audio_model": str(am["name"]),
            "audio_model_dim": int(am.get("model_dim") or 1024),
            "use_layer_idx": int(am.get("use_layer_idx", -1)),
            "text_model": str(tm["name"]),
            "text_model_dim": tm.get("model_dim"),
            "audio_transformer": {k: at[k] for k in ("dim", "tf_depth", "heads", "dim_head", "ff_mult") if k in at},
            "text_transformer": {k: tt[k] for k in ("dim", "tf_depth", "heads", "dim_head", "ff_mult") if k in tt},
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{where}: config.json is not a MuQ-MuLan config (needs mulan, audio_model, text_model, "
            f"audio_transformer, text_transformer; {type(exc).__name__}: {exc})"
        ) from exc
    if out["sample_rate"] != SAMPLE_RATE:
        raise ModelLoadError(f"{where}: mulan.sr={out['sample_rate']}; MuQ runs at {SAMPLE_RATE} Hz")
    if "muq" not in out["audio_model"].lower():
        raise ModelLoadError(
            f"{where}: audio_model.name={out['audio_model']!r} is not a MuQ model; only MuQ-MuLan "
            "(a MuQ audio tower) is supported"
        )
    if "xlm-roberta" not in out["text_model"].lower():
        raise ModelLoadError(
            f"{where}: text_model.name={out['text_model']!r}; only XLM-RoBERTa text towers are supported"
        )
    return out


# ---------------------------------------------------------------------------------- MuQ
class MelFrontEnd(nn.Module):
    """Waves ``[B, T]`` -> normalised log-mel ``[B, n_mels, T // hop]`` in float32."""

    def __init__(self, n_mels: int, hop_length: int, mean: float, std: float) -> None:
        super().__init__()
        self.mel = MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=2048, hop_length=hop_length,
                                  n_mels=n_mels, power=2.0, center=True, pad_mode="reflect",
                                  htk=True, norm=None, window="hann")
        self.mean = float(mean)
        self.std = float(std)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        # ``.to(bfloat16)`` of the whole model must not reach the window and filterbank: the
        # mel is float32 always (as upstream computes it; CPU FFTs have no bfloat16 either).
        kept = dict(self.mel._buffers)
        super()._apply(fn, recurse)
        for name, buf in kept.items():
            moved = self.mel._buffers[name]
            if buf is not None and moved is not None:  # the device follows, the dtype does not
                self.mel._buffers[name] = buf.to(device=moved.device, dtype=torch.float32)
        return self

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        power = self.mel(wave.float())
        db = 10.0 * torch.log10(torch.clamp(power, min=1e-10))  # AmplitudeToDB(power), no top_db
        return (db[..., :-1] - self.mean) / self.std


class Res2d(nn.Module):
    """A residual block of two 3x3 convs with BatchNorm; strided conv + BN on the skip path."""

    def __init__(self, idim: int, odim: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.diff = idim != odim or stride[0] > 1
        if self.diff:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = self.bn3(self.conv3(x)) if self.diff else x
        return F.relu(skip + out)


class Conv2dSubsampling(nn.Module):
    """Log-mel ``[B, M, F]`` -> ``[B, ceil(ceil(F/2)/2), odim]``."""

    def __init__(self, hdim: int, odim: int, n_bands: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(Res2d(1, hdim, (2, 2)), Res2d(hdim, hdim, (2, 2)))
        self.linear = nn.Linear(hdim * (n_bands // 4), odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.unsqueeze(1))  # [B, C, M/4, F/4]
        b, c, m, t = x.shape
        return self.linear(x.permute(0, 3, 1, 2).reshape(b, t, c * m))


class MuQCore(nn.Module):
    """The weights of ``MuQModel`` that feature extraction uses (its state-dict names)."""

    def __init__(self, sizes: Mapping[str, Any]) -> None:
        super().__init__()
        from transformers import Wav2Vec2ConformerConfig
        from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
            Wav2Vec2ConformerEncoder,
        )

        w2v2 = dict(sizes["w2v2_config"])
        for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "model_type"):
            w2v2.pop(key, None)
        w2v2.update(hidden_size=sizes["encoder_dim"], num_hidden_layers=sizes["encoder_depth"])
        config = Wav2Vec2ConformerConfig(**w2v2)
        config._attn_implementation = "eager"  # the 4.x conformer's own attention maths
        self.conv = Conv2dSubsampling(sizes["conv_dim"], sizes["encoder_dim"], sizes["n_mels"])
        self.conformer = Wav2Vec2ConformerEncoder(config)

    def forward(self, mel: torch.Tensor) -> list[torch.Tensor]:
        """Normalised log-mel -> the 13 hidden states (as transformers 4.x returned them)."""
        x = self.conv(mel)
        enc = self.conformer
        pos = enc.embed_positions(x) if enc.embed_positions is not None else None
        states = []
        for layer in enc.layers:
            states.append(x)
            x = layer(x, attention_mask=None, relative_position_embeddings=pos)
        states.append(enc.layer_norm(x))
        return states


def muq_state(state: Mapping[str, torch.Tensor], prefix: str, core: MuQCore) -> dict[str, torch.Tensor]:
    """``prefix``-ed MuQModel keys -> MuQCore keys: training-only parts dropped by name, legacy
    weight-norm names mapped, the rotary ``inv_freq`` buffer filled in when absent."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        if key.startswith(MUQ_TRAINING_ONLY):
            continue
        key = key.replace("pos_conv_embed.conv.weight_g", "pos_conv_embed.conv.parametrizations.weight.original0")
        key = key.replace("pos_conv_embed.conv.weight_v", "pos_conv_embed.conv.parametrizations.weight.original1")
        out[key] = value
    for key, value in core.state_dict().items():
        if key.endswith("embed_positions.inv_freq") and key not in out:
            out[key] = value
    return out


class MuQHiddenStates(nn.Module):
    """Waves ``[B, T]`` at 24 kHz -> ``[L, B, F, D]`` (L = encoder_depth + 1).

    ``whole_frames``: cut the input to whole 40 ms frames first (as MuQ's own fairseq
    wrapper does), so ``F = T // 960`` exactly; without it the last, partial frame is kept
    (``F = ceil(T // 240 / 4)``), as ``MuQ.forward`` does.
    """

    def __init__(self, sizes: Mapping[str, Any], whole_frames: bool = True) -> None:
        super().__init__()
        self.front = MelFrontEnd(sizes["n_mels"], sizes["hop_length"], sizes["mean"], sizes["std"])
        self.model = MuQCore(sizes)
        self.whole_frames = whole_frames

    def states(self, wave: torch.Tensor) -> list[torch.Tensor]:
        if self.whole_frames:
            wave = wave[..., : wave.shape[-1] // FRAME_SAMPLES * FRAME_SAMPLES]
        dtype = self.model.conv.linear.weight.dtype
        return self.model(self.front(wave).to(dtype))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.states(wave), dim=0)


def build_muq(sizes: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str,
              whole_frames: bool = True, prefix: str = "model.") -> MuQHiddenStates:
    module = MuQHiddenStates(sizes, whole_frames=whole_frames)
    load_into(module.model, muq_state(state, prefix, module.model), where,
              built_from="its config.json (MuQConfig)")
    return module.eval()


# ---------------------------------------------------------------------------------- MuLan
class BiaslessLayerNorm(nn.Module):
    """LayerNorm with a learned scale and a fixed zero bias (``learned_gamma``), eps 1e-5."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.learned_gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.learned_gamma, None)


class QKNormAttention(nn.Module):
    """Pre-norm multi-head attention with l2-normalised q and k, learned per-dim q/k scales and a
    fixed logit scale of 8; no mask (MuQ-MuLan never passes one at inference)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm = BiaslessLayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, dim, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        x = self.norm(x)
        q, k, v = self.to_q(x), *self.to_kv(x).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        attn = (torch.matmul(q, k.transpose(-1, -2)) * 8.0).softmax(dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


def feed_forward(dim: int, mult: float) -> nn.Sequential:
    """LayerNorm -> Linear -> GEGLU -> (dropout) -> Linear, hidden ``int(dim * mult * 2 / 3)``."""
    hidden = int(dim * mult * 2 / 3)
    return nn.Sequential(BiaslessLayerNorm(dim), nn.Linear(dim, hidden * 2, bias=False), GEGLU(),
                         nn.Identity(), nn.Linear(hidden, dim, bias=False))


class PreNormTransformer(nn.Module):
    """MuQ-MuLan's ``Transformer``: ``x += attn(x); x += ff(x)`` per layer (no final norm)."""

    def __init__(self, dim: int, tf_depth: int, heads: int = 8, dim_head: int = 64, ff_mult: float = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([QKNormAttention(dim, heads, dim_head), feed_forward(dim, ff_mult)])
            for _ in range(int(tf_depth))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


class _Wrap(nn.Module):
    """Holds ``model`` under the attribute name upstream's state dict uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model


class MulanAudioBranch(nn.Module):
    def __init__(self, muq: MuQHiddenStates, sizes: Mapping[str, Any]) -> None:
        super().__init__()
        at = sizes["audio_transformer"]
        self.model = _Wrap(muq.model)  # upstream: mulan.audio.model (MuQ) .model (MuQModel)
        self.transformer = PreNormTransformer(**at)
        self.proj = nn.Linear(sizes["audio_model_dim"], int(at["dim"]))


class MulanAudioTower(nn.Module):
    """Clips ``[B, T]`` at 24 kHz -> ``[B, dim_latent]`` unit vectors (one per clip)."""

    def __init__(self, muq_sizes_: Mapping[str, Any], sizes: Mapping[str, Any]) -> None:
        super().__init__()
        muq = MuQHiddenStates(muq_sizes_, whole_frames=False)  # upstream keeps the partial frame
        self.front = muq.front
        self.audio = MulanAudioBranch(muq, sizes)
        self.audio_to_latents = nn.Linear(int(sizes["audio_transformer"]["dim"]), sizes["dim_latent"])
        self.layer = sizes["use_layer_idx"]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        core = self.audio.model.model
        states = core(self.front(clips).to(core.conv.linear.weight.dtype))
        x = self.audio.proj(states[self.layer])
        x = self.audio.transformer(x).mean(dim=-2)
        return F.normalize(self.audio_to_latents(x), p=2, dim=-1)


class MulanTextBranch(nn.Module):
    def __init__(self, xlmr_config: Any, sizes: Mapping[str, Any]) -> None:
        super().__init__()
        from transformers import XLMRobertaModel

        tt = sizes["text_transformer"]
        dim = int(tt["dim"])
        self.model = XLMRobertaModel(xlmr_config, add_pooling_layer=False)
        self.transformer = PreNormTransformer(**tt)
        model_dim = sizes["text_model_dim"]
        self.proj = nn.Linear(int(model_dim), dim) if model_dim and int(model_dim) != dim else nn.Identity()


class MulanTextTower(nn.Module):
    """Token ids + attention mask ``[N, S]`` -> ``[N, dim_latent]`` unit vectors.

    The mask reaches XLM-R only: the transformer on top attends to padding and the mean runs
    over all ``S`` positions, as upstream does.
    """

    def __init__(self, xlmr_config: Any, sizes: Mapping[str, Any]) -> None:
        super().__init__()
        self.text = MulanTextBranch(xlmr_config, sizes)
        self.text_to_latents = nn.Linear(int(sizes["text_transformer"]["dim"]), sizes["dim_latent"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.text.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        x = self.text.transformer(self.text.proj(hidden)).mean(dim=-2)
        return F.normalize(self.text_to_latents(x), p=2, dim=-1)


def _mulan_part(state: Mapping[str, torch.Tensor], keep: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if not key.startswith("mulan."):
            continue
        key = key[len("mulan."):]
        if key.startswith(MULAN_TRAINING_ONLY) or not key.startswith(keep):
            continue
        out[key] = value
    return out


def build_mulan_audio(muq_sizes_: Mapping[str, Any], sizes: Mapping[str, Any],
                      state: Mapping[str, torch.Tensor], where: str) -> MulanAudioTower:
    tower = MulanAudioTower(muq_sizes_, sizes)
    part = _mulan_part(state, ("audio.", "audio_to_latents."))
    muq_keys = muq_state(part, "audio.model.model.", tower.audio.model.model)
    part = {k: v for k, v in part.items() if not k.startswith("audio.model.model.")}
    part.update({f"audio.model.model.{k}": v for k, v in muq_keys.items()})
    load_into(_Without(tower, "front"), part, where,
              built_from="its config.json and the MuQ config it names")
    return tower.eval()


def build_mulan_text(xlmr_config: Any, sizes: Mapping[str, Any],
                     state: Mapping[str, torch.Tensor], where: str) -> MulanTextTower:
    tower = MulanTextTower(xlmr_config, sizes)
    load_into(tower, _mulan_part(state, ("text.", "text_to_latents.")), where,
              built_from="its config.json and the XLM-RoBERTa config it names")
    return tower.eval()


class _Without(nn.Module):
    """A view of ``module`` without child ``skip`` (for strict loading of checkpoint weights)."""

    def __init__(self, module: nn.Module, skip: str) -> None:
        super().__init__()
        for name, child in module.named_children():
            if name != skip:
                self.add_module(name, child)


class ClipVectors(nn.Module):
    """Windows ``[B, T]`` -> ``[1, B, 1, dim_latent]``: one MuQ-MuLan vector per window, a short
    window first completed by :func:`wrap_short`."""

    def __init__(self, tower: MulanAudioTower, window: int) -> None:
        super().__init__()
        self.tower = tower
        self.window = int(window)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.tower(wrap_short(wave, self.window))[None, :, None, :]


def upstream_clips(track: torch.Tensor, clip: int) -> torch.Tensor:
    """MuQ-MuLan's clips of one track ``[T]`` -> ``[n, clip]`` (the last completed with audio from
    the track's start; a track shorter than a clip is concatenated with itself once, so it gives
    one clip of ``min(2 T, clip)`` samples)."""
    n = track.shape[-1]
    clips = [track[s:s + clip] for s in range(0, n - clip + 1, clip)]
    done = len(clips) * clip
    if done < n:
        clips.append(torch.cat([track[done:], track[: clip - (n - done)]]))
    return torch.stack(clips)


def wrap_short(chunks: torch.Tensor, clip: int) -> torch.Tensor:
    """Chunks ``[B, T]`` with ``T < clip``: each followed by its own first ``clip - T`` samples
    (upstream's rule for a track shorter than a clip; at most doubles the chunk)."""
    t = chunks.shape[-1]
    if t >= clip:
        return chunks
    return torch.cat([chunks, chunks[:, : clip - t]], dim=-1)

