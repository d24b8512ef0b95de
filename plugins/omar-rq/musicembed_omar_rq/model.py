"""OMAR-RQ in plain torch, loading the released ``model.ckpt`` as it is.

Facts from the upstream ``omar-rq`` 0.2.1 package (AGPL-3.0; read for facts, nothing copied):

* Input representation (``input_rep``): single-view checkpoints (base, multicodebook) use
  their ``build_module.representation``, a ``MelSpectrogram`` whose patch is fixed by
  upstream at 96 x 4 (not read from the config); multi-view ones (multifeature*) use
  ``MaskingModel.input_representation`` (a ``Waveform``) with its configured patch.
* ``MelSpectrogram``: torchaudio ``Spectrogram(n_fft=win_len, win_length=win_len, hop)`` --
  periodic hann, centred with reflect padding, ``power`` -- then ``MelScale`` (f 0..sr/2,
  ``mel_scale`` and ``norm`` from the config: slaney/slaney), ``log10(1 + 10000 mel)``,
  ``(x - norm_mean) / norm_std`` when both are set.
* ``Waveform``: ``(x - norm_mean) / norm_std`` when both are set, as one band.
* Patching: non-overlapping patches of ``patch_size[1]`` frames over all bands (a trailing
  partial patch is dropped), flattened band-major, then ``embedding_layer`` (Linear) to
  ``embed_dim``. eps = sr / (hop * patch_size[1]).
* ``Conformer`` block: ``x += r ff1(x)``; ``x = LN(alpha x + attn(x))`` (DeepNorm);
  ``x += conv(x)``; ``x += r ff2(x)``; ``x = LN(x)``. r = ``mlp_residual_factor`` (4.0 in the
  released configs). Feed-forward: LN(eps 6.1e-5) -> Linear(d, int(d mlp_ratio)) -> GELU ->
  Linear. Attention: qkv Linear without bias, rotary embedding (interleaved pairs, learned-
  free ``freqs`` stored in the checkpoint) on q and k, **causal** scaled-dot-product
  attention, output Linear. Conv module: LN(eps 6.1e-5) -> pointwise Conv1d to 2d -> GLU ->
  depthwise Conv1d with kernel **31** ("same" padding; upstream ignores the config's
  ``conv_kernel_size = 5``) -> BatchNorm(eps 6.1e-5) -> GELU -> pointwise Conv1d.
* ``extract_embeddings(audio, layers)``: the outputs of the conformer blocks whose indices
  are in the *set* ``layers`` (negatives allowed), in ascending block order, ``[L, B, N, D]``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicembed_core.frontends import MelSpectrogram
from musicembed_core.hub import ModelLoadError, load_into

from .ginfile import Ref, lookup

UPSTREAM_MEL_PATCH = (96, 4)
"""upstream ``get_patch_size(MelSpectrogram)``: the single-view mel patch, not in the config."""
CONV_KERNEL = 31
"""upstream's ConvBlock sets ``kernel_size = 31`` whatever ``conv_kernel_size`` says."""
LN_EPS_BLOCKS = 6.1e-5
LOADED_PREFIXES = ("net.", "embedding_layer.")
"""What upstream loads from model.ckpt (strictly); the rest (codebook head ``linear.*``,
quantisers, front-end buffers) is training-only and ignored, as upstream does."""


# ---------------------------------------------------------------------------------- config
def omar_sizes(bindings: Mapping[str, Any], where: str) -> dict[str, Any]:
    """What the plugin needs from a checkpoint's config.gin (parsed by :mod:`.ginfile`), checked."""

    def get(name: str, default: Any = KeyError) -> Any:
        try:
            return lookup(dict(bindings), name, default)
        except KeyError:
            raise ModelLoadError(f"{where}: config.gin has no binding for {name}; is this an OMAR-RQ config?") from None

    rep = get("build_module.representation")
    if isinstance(rep, list):
        rep = get("MaskingModel.input_representation")
        single = False
    else:
        single = True
    if not isinstance(rep, Ref):
        raise ModelLoadError(f"{where}: the input representation {rep!r} is not a @reference")
    kind = rep.name
    out: dict[str, Any] = {"input": kind}
    if kind == "MelSpectrogram":
        patch = UPSTREAM_MEL_PATCH if single else tuple(get("MelSpectrogram.patch_size"))
        mean, std = get("MelSpectrogram.norm_mean", None), get("MelSpectrogram.norm_std", None)
        out.update(sample_rate=int(get("MelSpectrogram.sr")), win_len=int(get("MelSpectrogram.win_len")),
                   hop=int(get("MelSpectrogram.hop_len")), power=float(get("MelSpectrogram.power")),
                   n_mels=int(get("MelSpectrogram.n_mel")), norm=get("MelSpectrogram.norm", None),
                   mel_scale=get("MelSpectrogram.mel_scale", "htk"), bands=int(get("MelSpectrogram.n_mel")))
        if out["mel_scale"] not in ("slaney", "htk") or out["norm"] not in (None, "slaney"):
            raise ModelLoadError(f"{where}: MelSpectrogram mel_scale={out['mel_scale']!r}, norm={out['norm']!r}; "
                                 "supported: mel_scale slaney|htk, norm slaney|None")
    elif kind == "Waveform":
        patch = tuple(get("Waveform.patch_size"))
        mean, std = get("Waveform.norm_mean", None), get("Waveform.norm_std", None)
        out.update(sample_rate=int(get("Waveform.sr")), hop=1, bands=1)
    else:
        raise ModelLoadError(f"{where}: input representation {kind} is not supported (only the released "
                             "models' MelSpectrogram and Waveform inputs are)")
    if len(patch) != 2 or int(patch[0]) != out["bands"]:
        raise ModelLoadError(f"{where}: {kind} patch_size={patch} must be ({out['bands']}, frames)")
    out["patch"] = int(patch[1])
    out["mean"] = None if mean is None or std is None else float(mean)
    out["std"] = None if mean is None or std is None else float(std)
    out["eps"] = out["sample_rate"] / (out["hop"] * out["patch"])
    net = get("build_module.net")
    if not isinstance(net, Ref) or net.name != "Conformer":
        raise ModelLoadError(f"{where}: build_module.net={net!r}; only the Conformer is supported")
    out.update(embed_dim=int(get("Conformer.embed_dim")), depth=int(get("Conformer.depth")),
               num_heads=int(get("Conformer.num_heads")), mlp_ratio=float(get("Conformer.mlp_ratio")),
               residual=float(get("Conformer.mlp_residual_factor")),
               alpha=float(get("Conformer.alpha_deepnorm")),
               conv_kernel_size_config=int(get("Conformer.conv_kernel_size", CONV_KERNEL)))
    for flag in ("use_deepnorm", "use_rope"):
        if get(f"Conformer.{flag}") is not True:
            raise ModelLoadError(f"{where}: Conformer.{flag}={get(f'Conformer.{flag}')!r}; only the released "
                                 "models' DeepNorm + rotary conformer (both True) is supported")
    if out["embed_dim"] % out["num_heads"]:
        raise ModelLoadError(f"{where}: Conformer.embed_dim={out['embed_dim']} is not divisible by num_heads")
    return out


def select_layers(layers: Any, depth: int, where: str) -> list[int]:
    """upstream's layer set: indices in ``-depth..depth-1``, as a sorted list of block indices."""
    if isinstance(layers, (int,)) and not isinstance(layers, bool):
        layers = [layers]
    try:
        items = [int(x) for x in layers if not isinstance(x, bool)]
        if len(items) != len(list(layers)):
            raise TypeError
    except TypeError:
        raise ModelLoadError(f"{where}: layers={layers!r} must be a list of ints") from None
    bad = [x for x in items if not -depth <= x < depth]
    if bad or not items:
        raise ModelLoadError(f"{where}: layers={list(layers)!r}: each must be in {-depth}..{depth - 1} "
                             f"(the model has {depth} conformer blocks), at least one")
    return sorted({x % depth for x in items})


# ---------------------------------------------------------------------------------- front ends
class Float32FrontEnd(nn.Module):
    """Front ends stay float32 whatever ``.to(dtype)`` the model gets (CPU FFTs have no bfloat16)."""

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        kept = {n: b for n, b in self.named_buffers()}
        super()._apply(fn, recurse)
        for name, buf in self.named_buffers():
            if buf is not None and buf.dtype != torch.float32:
                owner = self.get_submodule(name.rpartition(".")[0]) if "." in name else self
                owner._buffers[name.rpartition(".")[2]] = kept[name].to(device=buf.device, dtype=torch.float32)
        return self


class MelInput(Float32FrontEnd):
    """Waves ``[B, T]`` -> normalised log-compressed mel ``[B, n_mels, 1 + T // hop]``."""

    def __init__(self, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.mel = MelSpectrogram(sample_rate=s["sample_rate"], n_fft=s["win_len"], win_length=s["win_len"],
                                  hop_length=s["hop"], n_mels=s["n_mels"], power=s["power"], center=True,
                                  pad_mode="reflect", htk=s["mel_scale"] == "htk", norm=s["norm"], window="hann")
        self.mean, self.std = s["mean"], s["std"]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = torch.log10(1.0 + 10000.0 * self.mel(wave.float()))
        return x if self.mean is None else (x - self.mean) / self.std


class WaveInput(Float32FrontEnd):
    """Waves ``[B, T]`` -> ``[B, 1, T]``, z-normalised when the config gives mean and std."""

    def __init__(self, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.mean, self.std = s["mean"], s["std"]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.float().unsqueeze(-2)
        return x if self.mean is None else (x - self.mean) / self.std


# ---------------------------------------------------------------------------------- conformer
class Rotary(nn.Module):
    """Rotary position embedding on adjacent pairs of dims, positions 0..n-1 from the window start."""

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        self.freqs = nn.Parameter(1.0 / 10000 ** (torch.arange(0, head_dim, 2).float() / head_dim),
                                  requires_grad=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(t.shape[-2], device=t.device, dtype=torch.float32)
        angles = (pos[:, None] * self.freqs.float()[None, :]).repeat_interleave(2, dim=-1)
        pairs = t.float().unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return (t.float() * angles.cos() + rotated * angles.sin()).to(t.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.rotary_emb = Rotary(dim // heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.rotary_emb(q), self.rotary_emb(k), v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DeepNorm(nn.Module):
    def __init__(self, dim: int, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.alpha * x + gx)


def _feed_forward(dim: int, ratio: float) -> nn.Module:
    ff = nn.Module()
    ff.module = nn.Sequential(nn.LayerNorm(dim, eps=LN_EPS_BLOCKS), nn.Linear(dim, int(dim * ratio)), nn.GELU(),
                              nn.Identity(), nn.Linear(int(dim * ratio), dim))
    return ff


class ConvModule(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=LN_EPS_BLOCKS)
        self.module = nn.Sequential(
            nn.Conv1d(dim, 2 * dim, 1), nn.GLU(dim=1),
            nn.Conv1d(dim, dim, CONV_KERNEL, padding=CONV_KERNEL // 2, groups=dim),
            nn.BatchNorm1d(dim, eps=LN_EPS_BLOCKS), nn.GELU(), nn.Conv1d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(self.layer_norm(x).transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):
    def __init__(self, s: Mapping[str, Any]) -> None:
        super().__init__()
        d = s["embed_dim"]
        self.residual = s["residual"]
        self.ff1 = _feed_forward(d, s["mlp_ratio"])
        self.attention = Attention(d, s["num_heads"])
        self.conv_block = ConvModule(d)
        self.ff2 = _feed_forward(d, s["mlp_ratio"])
        self.norm1 = DeepNorm(d, s["alpha"])
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.residual * self.ff1.module(x)
        x = self.norm1(x, self.attention(x))
        x = x + self.conv_block(x)
        x = x + self.residual * self.ff2.module(x)
        return self.norm2(x)


class Conformer(nn.Module):
    def __init__(self, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block(s) for _ in range(s["depth"]))


class Core(nn.Module):
    """The tensors upstream loads from model.ckpt, under their names there."""

    def __init__(self, s: Mapping[str, Any]) -> None:
        super().__init__()
        self.embedding_layer = nn.Linear(s["bands"] * s["patch"], s["embed_dim"])
        self.net = Conformer(s)


class OmarRQ(nn.Module):
    """Waves ``[B, T]`` -> ``[L, B, F, D]``: the outputs of the conformer blocks in ``layers``
    (sorted block indices), ``F`` = whole patches of the input representation."""

    def __init__(self, s: Mapping[str, Any], layers: list[int]) -> None:
        super().__init__()
        self.front = MelInput(s) if s["input"] == "MelSpectrogram" else WaveInput(s)
        self.core = Core(s)
        self.patch = int(s["patch"])
        self.layers = list(layers)

    def patches(self, wave: torch.Tensor) -> torch.Tensor:
        rep = self.front(wave)  # [B, R, T']
        b, r, t = rep.shape
        n = t // self.patch
        rep = rep[..., : n * self.patch].reshape(b, r, n, self.patch).permute(0, 2, 1, 3)
        return rep.reshape(b, n, r * self.patch)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.core.embedding_layer(self.patches(wave).to(self.core.embedding_layer.weight.dtype))
        out = []
        for i, block in enumerate(self.core.net.layers[: self.layers[-1] + 1]):
            x = block(x)
            if i in self.layers:
                out.append(x)
        return torch.stack(out, dim=0)


def build_omar_rq(sizes: Mapping[str, Any], layers: list[int], state: Mapping[str, torch.Tensor],
                  where: str) -> OmarRQ:
    module = OmarRQ(sizes, layers)
    kept = {k: v for k, v in state.items() if k.startswith(LOADED_PREFIXES)}
    load_into(module.core, kept, where, built_from="its config.gin")
    return module.eval()
