"""Speed and memory of encoders.omar_rq with full-size random weights (OMAR-RQ architecture).

A checkpoint of the released size (conformer 1024 wide, 24 blocks, 8 heads, waveform input
at 24 kHz, patches of 960 samples: the multifeature-25hz-fsq layout) with random weights is
written as config.gin + model.ckpt, cached as ``mtg-upf/omar-rq-multifeature-25hz-fsq`` in a
temporary Hugging Face cache and loaded through the plugin's repo-id path. Figures:

* audio seconds per wall second: ``musicembed run`` (runs/omar_rq.gin: 30 s windows, last
  block, mean + frames in HDF5) vs the plain loop users write (librosa.load at 24 kHz, 30 s
  crops one by one through the model, mean);
* peak RSS of a 30-minute vs a 1-minute track, each in a fresh process (target <= 1.5x).

::

    python benchmarks/bench_omar_rq.py                                  # the issue's sizes (slow on 2 cores)
    python benchmarks/bench_omar_rq.py --tracks 3 --minutes 1 --skip-memory
    python benchmarks/bench_omar_rq.py --size tiny --tracks 2 --minutes 0.2 --long-minutes 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins/omar-rq"))

from bench_logmel import memory_test, peak_rss_mb  # noqa: E402 - same folder
from benchkit import offline_hf_cache, run_gin, write_library  # noqa: E402 - same folder

REPO_ID = "mtg-upf/omar-rq-multifeature-25hz-fsq"
SIZES = {"full": {"embed_dim": 1024, "depth": 24, "num_heads": 8}, "tiny": {"embed_dim": 32, "depth": 2, "num_heads": 2}}
CONFIG = """build_module.representation = [@nets.cqt.CQT, @nets.encodec.EnCodec, @nets.melspectrogram.MelSpectrogram, @nets.waveform.Waveform]
build_module.module = @modules.maskingmodel.MaskingModel
build_module.net = @nets.conformer.Conformer
modules.maskingmodel.MaskingModel.input_representation = @nets.waveform.Waveform
nets.waveform.Waveform.sr = 24000
nets.waveform.Waveform.norm_std = 0.1908563740990311
nets.waveform.Waveform.norm_mean = 0
nets.waveform.Waveform.patch_size = (1, 960)
nets.conformer.Conformer.embed_dim = {embed_dim}
nets.conformer.Conformer.depth = {depth}
nets.conformer.Conformer.conv_kernel_size = 5
nets.conformer.Conformer.num_heads = {num_heads}
nets.conformer.Conformer.mlp_ratio = 4.0
nets.conformer.Conformer.mlp_residual_factor = 4.0
nets.conformer.Conformer.use_deepnorm = True
nets.conformer.Conformer.alpha_deepnorm = 2.6321480259049848
nets.conformer.Conformer.beta_deepnorm = 0.022386873579657126
nets.conformer.Conformer.use_rope = True
"""


def build_checkpoint(cache: Path, work: Path, size: str) -> Path:
    """Random weights of the chosen size in the released layout, cached as REPO_ID."""
    import torch

    from musicembed_core.testing import save_to_hub_cache
    from musicembed_omar_rq.ginfile import parse_gin
    from musicembed_omar_rq.model import Core, omar_sizes

    text = CONFIG.format(**SIZES[size])
    torch.manual_seed(0)
    core = Core(omar_sizes(parse_gin(text), "bench"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.gin").write_text(text)
    torch.save(core.state_dict(), work / "model.ckpt")
    save_to_hub_cache(cache, REPO_ID, work)
    return work


def run_pipeline(source: Path, out: Path) -> tuple[float, float, dict]:
    summary = run_gin("runs/omar_rq.gin", source, out)
    return summary.audio_seconds, summary.wall_seconds, dict(summary.timings)


def plain_loop(files: list[Path]) -> tuple[float, float]:
    """What a user's script does: librosa.load at 24 kHz, 30 s crops one by one, mean of the frames."""
    import librosa
    import torch

    from musicembed_omar_rq import OmarRQEncoder

    module = OmarRQEncoder().module()
    t0 = time.perf_counter()
    seconds = 0.0
    crop = 30 * 24000
    with torch.inference_mode():
        for f in files:
            wave, _ = librosa.load(f, sr=24000, mono=True)
            x = torch.from_numpy(wave)
            frames = [module(x[i:i + crop][None]) for i in range(0, len(x), crop) if len(x) - i >= 2400]
            _ = torch.cat(frames, dim=2).mean(dim=2).numpy()
            seconds += len(wave) / 24000
    return seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="full")
    ap.add_argument("--tracks", type=int, default=10, help="generated tracks for the speed test")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each track")
    ap.add_argument("--long-minutes", type=float, default=30.0, help="long track for the memory test")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:  # fresh process: embed one file, report peak RSS
        audio_s, wall, _ = run_pipeline(Path(a.child).parent, Path(a.child).with_suffix(".out"))
        print(json.dumps({"peak_rss_mb": peak_rss_mb(), "audio_seconds": audio_s, "wall": wall}))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = offline_hf_cache(tmp)
        t = time.perf_counter()
        build_checkpoint(cache, tmp / "ckpt", a.size)
        print(f"built a {a.size} random-weight OMAR-RQ checkpoint in {time.perf_counter() - t:.0f} s "
              f"(CPU threads={os.cpu_count()})", flush=True)

        if not a.skip_speed:
            lib = tmp / "lib"
            files = write_library(lib, a.tracks, a.minutes)
            print(f"speed: {a.tracks} tracks x {a.minutes:g} min ({a.tracks * a.minutes:g} min of audio)", flush=True)
            pipe_s, pipe_t, timings = run_pipeline(lib, tmp / "out")
            base_s, base_t = plain_loop(files)
            print(f"  musicembed run (30 s windows)   {pipe_s / pipe_t:7.3f} audio s per s  ({pipe_t:.0f} s; "
                  f"encoder forward passes {timings.get('encode', 0):.0f} s)")
            print(f"  plain loop (30 s crops)         {base_s / base_t:7.3f} audio s per s  ({base_t:.0f} s)")
            print(f"  ratio musicembed / plain loop   {(pipe_s / pipe_t) / (base_s / base_t):7.2f}x "
                  "(target >= 1.0x)", flush=True)

        if not a.skip_memory:
            memory_test(__file__, "--child", tmp, a.long_minutes, "runs/omar_rq.gin")


if __name__ == "__main__":
    main()
