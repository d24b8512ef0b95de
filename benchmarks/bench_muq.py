"""Speed and memory of encoders.muq with full-size random weights (MuQ-large architecture).

A MuQ-large-sized checkpoint (conv_dim 512, 12 conformer layers x 1024, 16 heads, rotary
positions, ~300 M parameters) with random weights is saved in the released
``PyTorchModelHubMixin`` layout (config.json + model.safetensors) under
``OpenMuQ/MuQ-large-msd-iter`` in a temporary Hugging Face cache and loaded through the
plugin's repo-id path with ``HF_HUB_OFFLINE=1``. Figures are ratios against baselines
measured in the same invocation (these machines are noisy):

1. speed: audio seconds per wall second over generated tracks, ``musicembed run``
   (runs/muq.gin: 30 s windows, mean of all 13 layers, HDF5) vs the plain loop users
   write (librosa.load at 24 kHz, the model on the whole track, mean over time).
2. memory: peak RSS of a fresh process embedding a 30-minute track vs a 1-minute track
   (target: ratio <= 1.5).

    python benchmarks/bench_muq.py                                  # the issue's sizes (slow on 2 cores)
    python benchmarks/bench_muq.py --tracks 3 --minutes 1 --skip-memory
    python benchmarks/bench_muq.py --size tiny --tracks 2 --minutes 0.2 --long-minutes 1   # smoke test
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
sys.path.insert(0, str(REPO / "plugins/muq"))

from bench_logmel import memory_test, peak_rss_mb  # noqa: E402 - same folder
from benchkit import offline_hf_cache, run_gin, write_library  # noqa: E402 - same folder

REPO_ID = "OpenMuQ/MuQ-large-msd-iter"
W2V2 = {"hidden_act": "swish", "conv_depthwise_kernel_size": 31, "layer_norm_eps": 1e-5,
        "position_embeddings_type": "rotary", "rotary_embedding_base": 10000, "max_source_positions": 5000,
        "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "feat_extract_activation": "gelu",
        "attention_dropout": 0.1, "hidden_dropout": 0.1, "activation_dropout": 0.1, "conformer_conv_dropout": 0.1,
        "layerdrop": 0.0, "num_attention_heads": 16, "intermediate_size": 4096, "hidden_size": 1024}
SIZES = {
    "large": {"conv_dim": 512, "encoder_dim": 1024, "encoder_depth": 12, "w2v2_config": W2V2},
    "tiny": {"conv_dim": 8, "encoder_dim": 32, "encoder_depth": 2,
             "w2v2_config": {**W2V2, "num_attention_heads": 2, "intermediate_size": 64, "hidden_size": 32,
                             "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}},
}


def build_checkpoint(cache: Path, work: Path, size: str) -> Path:
    """Random weights of the chosen size in the released layout, cached as REPO_ID."""
    import torch
    from safetensors.torch import save_file

    from musicembed_core.testing import save_to_hub_cache
    from musicembed_muq.model import MuQCore, muq_sizes

    cfg = {"label_rate": 25, "hop_length": 240, "n_mels": 128, "features": ["melspec_2048"],
           "stat": {"melspec_2048_mean": 6.768444971712967, "melspec_2048_std": 18.417922652295623},
           **SIZES[size]}
    torch.manual_seed(0)
    core = MuQCore(muq_sizes(cfg, "bench"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(cfg))
    save_file({f"model.{k}": v.contiguous() for k, v in core.state_dict().items()}, str(work / "model.safetensors"))
    save_to_hub_cache(cache, REPO_ID, work)
    return work


def run_pipeline(source: Path, out: Path) -> tuple[float, float, dict]:
    summary = run_gin("runs/muq.gin", source, out)
    return summary.audio_seconds, summary.wall_seconds, dict(summary.timings)


def plain_loop(files: list[Path]) -> tuple[float, float]:
    """What a user's script does: librosa.load at 24 kHz, the whole track through MuQ, mean."""
    import librosa
    import torch

    from musicembed_muq import MuQEncoder

    module = MuQEncoder().module()
    t0 = time.perf_counter()
    seconds = 0.0
    with torch.inference_mode():
        for f in files:
            wave, _ = librosa.load(f, sr=24000, mono=True)
            _ = module(torch.from_numpy(wave)[None]).mean(dim=2).numpy()
            seconds += len(wave) / 24000
    return seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="large")
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
        print(f"built a {a.size} random-weight MuQ checkpoint in {time.perf_counter() - t:.0f} s "
              f"(CPU threads={os.cpu_count()})", flush=True)

        if not a.skip_speed:
            lib = tmp / "lib"
            files = write_library(lib, a.tracks, a.minutes)
            print(f"speed: {a.tracks} tracks x {a.minutes:g} min ({a.tracks * a.minutes:g} min of audio)", flush=True)
            pipe_s, pipe_t, timings = run_pipeline(lib, tmp / "out")
            base_s, base_t = plain_loop(files)
            print(f"  musicembed run (30 s windows)   {pipe_s / pipe_t:7.3f} audio s per s  ({pipe_t:.0f} s; "
                  f"encoder forward passes {timings.get('encode', 0):.0f} s)")
            print(f"  plain loop (whole tracks)       {base_s / base_t:7.3f} audio s per s  ({base_t:.0f} s)")
            print(f"  ratio musicembed / plain loop   {(pipe_s / pipe_t) / (base_s / base_t):7.2f}x "
                  "(target >= 1.0x)", flush=True)

        if not a.skip_memory:
            memory_test(__file__, "--child", tmp, a.long_minutes, "runs/muq.gin")


if __name__ == "__main__":
    main()
