"""Tiny random-weight Music2Latent checkpoints in the released file layout, and the package's
own encode/decode on them (the reference).

``music2latent.pt`` as released is a training checkpoint saved with ``torch.save``:
``gen_state_dict`` (the whole consistency model, ``UNet``) plus bookkeeping -- the
iteration, the epoch and the FAD score as a numpy float64 (the reason loading it with
``weights_only=True`` needs numpy globals on an allowlist). The tiny ones here hold the
same top-level keys; the model is the package's own ``UNet`` built with smaller channel
counts (``package_sizes``), every other hyperparameter the package's.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from musicembed_music2latent.model import CHECKPOINT_FILE, Sizes, package_sizes

REPO_ID = "SonyCSLParis/music2latent"
TINY = Sizes(base_channels=8, bottleneck_base_channels=32, num_bottleneck_layers=1,
             bottleneck_channels=64, cond_channels=32)
"""Features: 8 x 4 x 32 = 1024 dims; latents: 64 as released."""


def random_generator(seed: int, sizes: Sizes = TINY) -> torch.nn.Module:
    """The package's UNet at ``sizes``, every weight random (the package zero-initialises the
    last conv of each residual branch and attention output; random weights here make every
    block matter in the comparisons)."""
    torch.manual_seed(seed)
    with package_sizes(sizes, decoder=True) as models:
        gen = models.UNet()
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if not bool(p.any()):
                p.normal_(0.0, 0.05)
    return gen.eval()


def checkpoint_dict(gen: torch.nn.Module) -> dict:
    """The released file's top-level layout."""
    return {"gen_state_dict": gen.state_dict(), "fid": np.float64(1.2345), "it": 800000, "epoch": 41}


def write_checkpoint(folder: Path, gen: torch.nn.Module, numpy1_names: bool = False, **extra) -> Path:
    """``folder/music2latent.pt``. ``numpy1_names``: name the scalar constructor as numpy 1.x
    pickles do (``numpy.core.multiarray.scalar``), as in a file written before numpy 2."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    torch.save({**checkpoint_dict(gen), **extra}, path)
    if numpy1_names:
        rename_pickled_global(path, b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
    return path


def rename_pickled_global(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite a GLOBAL opcode's name inside a torch zip checkpoint's data.pkl."""
    src = zipfile.ZipFile(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert old in data, f"{old!r} not in {item.filename}"
                data = data.replace(old, new)
            dst.writestr(item, data)
    src.close()
    path.write_bytes(buf.getvalue())


def package_model(path: Path, sizes: Sizes = TINY):
    """``music2latent.inference.EncoderDecoder`` on the weights of ``path``, loaded the way the
    package's ``get_models`` loads (its download step skipped: there is no network)."""
    from music2latent.inference import EncoderDecoder

    ed = EncoderDecoder.__new__(EncoderDecoder)
    ed.device = torch.device("cpu")
    ed.load_path_inference = str(path)
    with package_sizes(sizes, decoder=True) as models:
        gen = models.UNet()
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)  # our own test file
    gen.load_state_dict(ckpt["gen_state_dict"], strict=False)
    ed.gen = gen.eval()
    return ed
