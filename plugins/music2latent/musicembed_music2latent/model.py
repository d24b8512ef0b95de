"""Music2Latent's encoder and decoder from the ``music2latent`` package's own classes.

The package (Sony CSL Paris, CC BY-NC 4.0) provides the architecture
(``music2latent.models.Encoder`` / ``UNet``), the STFT front end
(``music2latent.audio``) and the consistency decoding loop
(``music2latent.inference.decode_latent_inference``). Its *loading* code is not
used: ``EncoderDecoder()`` downloads into site-packages and unpickles with
``weights_only=False``. Here the checkpoint comes through
:mod:`musicembed_core.hub` and is unpickled with ``weights_only=True`` plus an
allowlist of the exact numpy globals the released file needs.

Sizes are read from the weights, not assumed: the package keeps its
hyperparameters as module globals, so a checkpoint with other channel counts
(the tests' tiny ones) is built by setting those globals while its modules are
constructed (:func:`package_sizes`). Only sizes that the weights pin down are
read (channels, number of bottleneck blocks); everything else is the package's.

Framing (the package's own rule, checked in the tests): a wave of ``T`` samples
is cropped to ``8 * hop * F + 3 * hop`` samples with
``F = (T - 3 * hop) // (8 * hop)`` latent frames (hop = 512, so one frame per
4096 samples: 10.77 frames/s at 44.1 kHz, 11.72 at 48 kHz); the STFT
(n_fft 2048, hop 512, no padding) then has exactly ``8 F`` frames and the
encoder downsamples time by 8.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from musicembed_core.hub import ModelLoadError, load_into, load_pickle

if TYPE_CHECKING:  # pragma: no cover
    import torch

CHECKPOINT_FILE = "music2latent.pt"
"""The one file of the hub repo ``SonyCSLParis/music2latent``."""

STFT_HOP = 512
"""``music2latent.hparams.hop``: the STFT hop (n_fft is 4 hops)."""
TIME_DOWNSAMPLING = 8
"""``2 ** freq_downsample_list.count(0)``: STFT frames per latent frame."""
FRAME_SAMPLES = STFT_HOP * TIME_DOWNSAMPLING
"""Samples per latent frame (4096)."""
LEAD_SAMPLES = 3 * STFT_HOP
"""Samples a crop keeps beyond whole frames (1536): the STFT window is 4 hops."""
RECEPTIVE_SAMPLES = FRAME_SAMPLES + LEAD_SAMPLES
"""Shortest input giving one frame (5632 samples): ``F = (T - 5632) // 4096 + 1``."""
SUPPORTED_RATES = (44100, 48000)
"""Rates the released model was trained on (its README: 44.1 kHz, 48 kHz also works)."""


def frames_for(num_samples: int) -> int:
    """Latent frames the package's ``encode`` returns for a mono wave of ``num_samples``."""
    return max(0, (int(num_samples) - LEAD_SAMPLES) // FRAME_SAMPLES)


def _numpy_globals() -> list[Any]:
    """The globals a pickled numpy float64 needs (the released checkpoint stores its FAD
    score as one): the scalar constructor under both of numpy's module names (pickles
    written by numpy 1.x say ``numpy.core.multiarray``, by numpy 2.x
    ``numpy._core.multiarray``), ``numpy.dtype`` and the float64 dtype class."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    scalar = core.multiarray.scalar
    allowed: list[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    float64_dtype = getattr(getattr(np, "dtypes", None), "Float64DType", None)
    if float64_dtype is not None:
        allowed.append(float64_dtype)
    return allowed


def read_checkpoint(path: Path) -> dict[str, "torch.Tensor"]:
    """``gen_state_dict`` of a Music2Latent checkpoint, unpickled safely.

    The released file is a training checkpoint: ``gen_state_dict`` plus bookkeeping
    (iteration, epoch, FAD score as a numpy float64). Nothing but tensors, plain
    containers and the numpy globals of :func:`_numpy_globals` is accepted.
    """
    obj = load_pickle(path, tuple(_numpy_globals()), mmap=True)
    if not isinstance(obj, dict) or not isinstance(obj.get("gen_state_dict"), dict):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ModelLoadError(
            f"{path}: not a Music2Latent checkpoint (expected a dict with 'gen_state_dict', "
            f"found {keys})"
        )
    return obj["gen_state_dict"]


# --------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Sizes:
    """The package hyperparameters a checkpoint's weights determine."""

    base_channels: int
    bottleneck_base_channels: int
    num_bottleneck_layers: int
    bottleneck_channels: int
    cond_channels: int | None

    @property
    def feature_dim(self) -> int:
        """Channels of the pre-bottleneck features (8192 for the released model)."""
        from music2latent import hparams as hp

        freq = (hp.hop * 2) // (4 ** hp.freq_downsample_list.count(1))
        freq //= 2 ** hp.freq_downsample_list.count(0)
        return self.base_channels * hp.multipliers_list[-1] * freq

    def globals(self, decoder: bool) -> dict[str, int]:
        out = {
            "base_channels": self.base_channels,
            "bottleneck_base_channels": self.bottleneck_base_channels,
            "num_bottleneck_layers": self.num_bottleneck_layers,
            "bottleneck_channels": self.bottleneck_channels,
        }
        if decoder and self.cond_channels is not None:
            out["cond_channels"] = self.cond_channels
        return out


def sizes_of(state: dict[str, "torch.Tensor"], where: str) -> Sizes:
    """Read :class:`Sizes` from the shapes in ``gen_state_dict``."""
    from music2latent import hparams as hp

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ModelLoadError(
                f"{where}: 'gen_state_dict' has no {key!r}; is this a Music2Latent checkpoint?"
            )
        return tuple(state[key].shape)

    blocks = {k.split(".")[2] for k in state if k.startswith("encoder.bottleneck_layers.")}
    emb = state.get("emb_proj.0.weight")
    return Sizes(
        base_channels=shape("encoder.conv_inp.weight")[0] // hp.multipliers_list[0],
        bottleneck_base_channels=shape("encoder.bottleneck_layers.0.weight")[0],
        num_bottleneck_layers=len(blocks) - 1,  # block 0 is the 1x1 input conv
        bottleneck_channels=shape("encoder.conv_out.weight")[0],
        cond_channels=None if emb is None else int(emb.shape[0]),
    )


_PACKAGE_LOCK = threading.Lock()


@contextlib.contextmanager
def package_sizes(sizes: Sizes, decoder: bool = False) -> Iterator[Any]:
    """Set the package's size globals to ``sizes`` while modules are constructed.

    ``music2latent.models`` reads its hyperparameters from module globals (star
    imports of ``hparams``) in the constructors; forward passes read only the ones
    left untouched here.
    """
    import music2latent.models as models

    values = sizes.globals(decoder)
    with _PACKAGE_LOCK:
        saved = {k: getattr(models, k) for k in values}
        try:
            for k, v in values.items():
                setattr(models, k, v)
            yield models
        finally:
            for k, v in saved.items():
                setattr(models, k, v)


def _prefixed(state: dict[str, "torch.Tensor"], prefix: str) -> dict[str, "torch.Tensor"]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def build_encoder(state: dict[str, "torch.Tensor"], where: str) -> "torch.nn.Module":
    """The package's ``Encoder`` with the checkpoint's ``encoder.*`` weights, loaded strictly."""
    sizes = sizes_of(state, where)
    with package_sizes(sizes) as models:
        enc = models.Encoder()
    load_into(enc, _prefixed(state, "encoder."), where, built_from="the music2latent package's Encoder")
    return enc


def build_generator(state: dict[str, "torch.Tensor"], where: str) -> "torch.nn.Module":
    """The whole consistency model (``UNet``: encoder, decoder, generator), loaded strictly."""
    sizes = sizes_of(state, where)
    with package_sizes(sizes, decoder=True) as models:
        gen = models.UNet()
    load_into(gen, state, where, built_from="the music2latent package's UNet")
    return gen.eval()


# --------------------------------------------------------------------------- encoding


def _clamp_min(x: Any, low: int) -> Any:
    """``max(x, low)`` for a Python int (eager) or a traced size (torch.jit.trace)."""
    import torch

    return torch.clamp(x, min=low) if isinstance(x, torch.Tensor) else max(x, low)


def _encode_module(encoder: "torch.nn.Module", features: bool, dim: int) -> "torch.nn.Module":
    import torch
    from music2latent import audio as m2l_audio
    from music2latent import hparams_inference

    scale = 1.0 if features else 1.0 / float(hparams_inference.sigma_rescale)

    class Music2LatentFrames(torch.nn.Module):
        """Waves ``[B, T]`` -> ``[1, B, F, D]``: the package's crop, STFT and encoder.

        ``latents``: the tanh bottleneck divided by ``sigma_rescale`` (0.06), as
        ``EncoderDecoder.encode`` returns it; ``features``: the pre-bottleneck
        features (``extract_features=True``), unscaled.
        """

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.features = features
            self.scale = scale
            self.dim = dim

        def forward(self, wave: torch.Tensor) -> torch.Tensor:
            # Sizes stay symbolic under torch.jit.trace (no int(), no branch on a size), so
            # the TorchScript export generalises to every input length.
            f = _clamp_min((wave.shape[1] - LEAD_SAMPLES) // FRAME_SAMPLES, 0)
            dtype = next(self.encoder.parameters()).dtype
            # A wave too short for one frame is encoded zero-padded to one frame and that
            # frame dropped again (out[..., :0]): no frame, as the package. Longer waves are
            # cropped to whole frames; the padding is never read.
            pad = wave.new_zeros((wave.shape[0], RECEPTIVE_SAMPLES))
            keep = _clamp_min(f, 1) * FRAME_SAMPLES + LEAD_SAMPLES
            wave = torch.cat([wave, pad], dim=1)[:, :keep].float()  # STFT in float32
            spec = m2l_audio.to_representation_encoder(wave).to(dtype)
            out = self.encoder(spec, extract_features=self.features)[:, :, :f]  # [B, C, F]
            if self.scale != 1.0:
                out = out * self.scale
            return out.transpose(1, 2).unsqueeze(0)

    return Music2LatentFrames()


def build_frames_module(state: dict[str, "torch.Tensor"], where: str, variant: str) -> "torch.nn.Module":
    sizes = sizes_of(state, where)
    dim = sizes.feature_dim if variant == "features" else sizes.bottleneck_channels
    return _encode_module(build_encoder(state, where), variant == "features", dim)


# --------------------------------------------------------------------------- decoding


def decode_latents(
    generator: "torch.nn.Module",
    latents: "torch.Tensor",
    denoising_steps: int = 1,
    device: str = "cpu",
    max_seconds: float = 60.0,
    sample_rate: int = 44100,
) -> "torch.Tensor":
    """Latents ``[F, 64]`` (as ``encode`` returns them, i.e. divided by ``sigma_rescale``)
    -> mono wave ``[samples]`` through the package's consistency decoding loop.

    Long inputs are decoded in chunks of ``max_seconds`` (the package's own chunking
    for ``decode``); random noise comes from torch's global generator: seed it for
    reproducible audio.
    """
    import torch
    from music2latent.inference import decode_latent_inference

    lat = torch.as_tensor(latents, dtype=torch.float32).t().unsqueeze(0).contiguous()  # [1, 64, F]

    class _Holder:  # decode_latent_inference reads the model from `.gen`
        gen = generator

    with torch.inference_mode(), warnings.catch_warnings():
        # The package asks for CUDA autocast unconditionally; on CPU torch warns and disables it.
        warnings.filterwarnings("ignore", message="CUDA is not available")
        wave = decode_latent_inference(
            lat, _Holder, int(max_seconds * sample_rate), 1, diffusion_steps=int(denoising_steps),
            device=device,
        )
    return wave[0].float().cpu()
