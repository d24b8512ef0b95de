"""musicembed-omar-rq: frame-level OMAR-RQ embeddings (MTG-UPF), all five released models.

``encoders.omar_rq`` with ``model`` = ``mtg-upf/omar-rq-base``, ``-multicodebook`` (16 kHz
mel input, 15.625 frames/s), ``-multifeature`` (24 kHz waveform, 18.75 frames/s),
``-multifeature-25hz`` or ``-multifeature-25hz-fsq`` (24 kHz waveform, 25 frames/s), or a
folder with ``config.gin`` + ``model.ckpt``. ``layers`` picks conformer blocks by upstream's
indices (0..23, negatives allowed; default the last): ``[L, B, F, 1024]``.

Built natively (plain torch front ends and conformer) from facts read in the upstream
``omar-rq`` package, whose config is read here as data (:mod:`.ginfile`) instead of being
parsed into gin's global registry. Nothing heavy is imported here.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from musicembed_core import Geometry, hookimpl
from musicembed_core.hub import Checkpoint, ModelLoadError, PretrainedEncoder

if TYPE_CHECKING:  # pragma: no cover
    import torch

__version__ = "0.1.0"

VARIANTS = {
    "mtg-upf/omar-rq-base": "mel, 16 kHz, 15.625 frames/s",
    "mtg-upf/omar-rq-multicodebook": "mel, 16 kHz, 15.625 frames/s",
    "mtg-upf/omar-rq-multifeature": "waveform, 24 kHz, 18.75 frames/s",
    "mtg-upf/omar-rq-multifeature-25hz": "waveform, 24 kHz, 25 frames/s",
    "mtg-upf/omar-rq-multifeature-25hz-fsq": "waveform, 24 kHz, 25 frames/s",
}
DEFAULT_MODEL = "mtg-upf/omar-rq-multifeature-25hz-fsq"


class OmarRQEncoder(PretrainedEncoder):
    """OMAR-RQ conformer block outputs of mono waves: ``[L, B, F, D]``, L = ``len(layers)``.

    ``layers``: upstream's block indices (``0..depth-1``, negatives count from the end),
    used as upstream's ``extract_embeddings`` does: as a set, returned in ascending block
    order. Frame ``i`` of a track is at ``t = i / eps`` seconds, eps = sample_rate / (hop x
    patch) = the geometry's ``frame_rate`` (also ``eps`` in the signature). The window is
    rounded up to whole frames (30 s -> 30.016 s for the mel models: 469 frames, as
    upstream gives for a 30 s crop; 30.027 s at 18.75 Hz) so consecutive windows keep that
    grid. Attention is causal but the conformer's depthwise convolutions look 15 frames
    ahead per block, so a frame depends on the audio up to ``15 x depth`` frames after it
    inside its window (see README: chunking).
    """

    name = "omar_rq"
    default_model = DEFAULT_MODEL
    window_seconds = 30.0
    min_seconds = 0.1
    checkpoint_files = ("config.gin", "model.ckpt")
    params = {"layers": [-1]}

    layers: Any

    def configure(self) -> None:
        layers = self.layers
        if isinstance(layers, tuple):
            layers = list(layers)
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = [layers]
        if not isinstance(layers, list) or not layers or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise ModelLoadError(f"encoders.omar_rq.layers={self.layers!r}: expected a non-empty list of "
                                 "block indices, e.g. [-1], [6] or list(range(24))")
        self.layers = layers
        self._sizes: dict[str, Any] | None = None

    def sizes(self) -> dict[str, Any]:
        """The architecture and front-end numbers of the checkpoint's config.gin (no weights read)."""
        if self._sizes is None:
            from .ginfile import GinSyntaxError, parse_gin
            from .model import omar_sizes

            ckpt = self.checkpoint()
            where = ckpt.where(self.model)
            f = ckpt.file("config.gin")
            try:
                bindings = parse_gin(f.read_text(), str(f))
            except (GinSyntaxError, OSError, UnicodeDecodeError) as exc:
                raise ModelLoadError(f"{where}: cannot read config.gin ({exc})") from exc
            self._sizes = omar_sizes(bindings, where)
        return self._sizes

    def block_indices(self) -> list[int]:
        """``layers`` as sorted block indices of this checkpoint."""
        from .model import select_layers

        return select_layers(self.layers, self.sizes()["depth"],
                             f"encoders.omar_rq ({self.checkpoint().where(self.model)})")

    def geometry_from_config(self, checkpoint: Checkpoint) -> dict[str, Any]:
        s = self.sizes()
        found = {"sample_rate": s["sample_rate"], "frame_rate": s["eps"],
                 "num_layers": len(self.block_indices()), "dim": s["embed_dim"], "min_seconds": self.min_seconds}
        if s["hop"] > 1:
            # Centred STFT: 1 + T // hop frames, patches of `patch` -> F = (T - (patch-1) hop) // (patch hop) + 1,
            # exactly the frame-count rule of Geometry.receptive_field.
            found["receptive_field"] = (s["patch"] - 1) * s["hop"]
        return found

    def resolve_geometry(self) -> Geometry:
        geo = super().resolve_geometry()
        step = geo.frame_hop / geo.sample_rate  # seconds per frame (exact: an integer number of samples)

        def whole(seconds: float) -> float:
            return math.ceil(seconds / step - 1e-9) * step

        hop = None if self.hop_seconds is None else whole(min(self.hop_seconds, self.window_seconds))
        return dataclasses.replace(geo, window_seconds=whole(self.window_seconds), hop_seconds=hop)

    def signature(self) -> dict[str, Any]:
        sig = super().signature()
        sig["eps"] = self.sizes()["eps"]
        sig["blocks"] = self.block_indices()
        return sig

    def frame_times(self, num_frames: int) -> "torch.Tensor":
        """Seconds of frames ``0..num_frames-1`` from the track start (``i / eps``), float64."""
        import torch

        return torch.arange(int(num_frames), dtype=torch.float64) / self.sizes()["eps"]

    def build_module(self, checkpoint: Checkpoint) -> "torch.nn.Module":
        from musicembed_core.hub import load_pickle

        from .model import build_omar_rq

        where = checkpoint.where(self.model)
        state = load_pickle(checkpoint.file("model.ckpt"))
        if not isinstance(state, dict):
            raise ModelLoadError(f"{where}: model.ckpt holds a {type(state).__name__}, expected a state dict")
        if "state_dict" in state and isinstance(state["state_dict"], dict):  # a Lightning checkpoint
            state = state["state_dict"]
        return build_omar_rq(self.sizes(), self.block_indices(), state, where)

    def encode(self, wave: "torch.Tensor") -> "torch.Tensor":
        """Float32 audio in whatever ``dtype`` is: the front end is float32, the conformer ``dtype``."""
        import torch

        self.load()
        with torch.inference_mode():
            x = torch.as_tensor(wave, device=self._device).float()
            if x.dim() == 1:
                x = x.unsqueeze(0)
            if x.dim() != 2:
                raise ValueError(f"{self.name}: expected waves [B, T], got shape {tuple(x.shape)}")
            return self._module(x).float()


@hookimpl
def register_encoders(register):
    register(OmarRQEncoder)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
