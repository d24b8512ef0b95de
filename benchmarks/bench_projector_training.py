"""Projector training speed and memory on CPU (``musicembed train-projector``).

Figures are ratios against baselines measured in the same invocation (these machines
are noisy):

1. speed: training pairs per second of the real loop (``train_projector``: caption
   join, split, shuffled batches, tokenisation per batch, InfoNCE, AdamW with warmup,
   logging, per-epoch validation and checkpoints) against a *bare loop* over the same
   model, optimizer and pairs with everything preloaded (captions tokenised once, audio
   vectors in one tensor, no validation, no logging, no checkpoints). Reported: the
   loop's own pairs/s (training batches only, as ``training_summary.json`` has it), the
   whole command's pairs/s (wall time of everything), and both as fractions of the bare
   loop. Data: the examples' captioned clips embedded with logmel (quickstart chain),
   the real all-MiniLM-L6-v2 text tower with LoRA, ``train/quick.gin`` settings.
   Rounds alternate loop / bare so the machine's load hits both alike.
2. memory (``--wide``): peak RSS (VmHWM, each in a fresh process) of training into a
   76,800-d space (MERT-330M's, all 25 layers x 1024 x mean+std+... as in
   runs/mert330m_76800.gin) against the same training into a 768-d space; the head's
   last layer is 1024 x 76,800 (~79M parameters).

    python benchmarks/bench_projector_training.py            # speed, 2 rounds, 120 clips
    python benchmarks/bench_projector_training.py --wide     # + the memory figure
    python benchmarks/bench_projector_training.py --quick    # smoke test (small, 1 round)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_logmel import child_rss, peak_rss_mb  # noqa: E402 - same folder

QUICK_GIN = ["train/quick.gin"]


def make_library(tmp: Path, clips: int, seconds: float) -> tuple[Path, Path]:
    """Captioned clips embedded with the quickstart chain: (HDF5 output, captions.jsonl)."""
    from musicembed_core.examples import make_captioned_set
    from musicembed_core.testing import run_params

    src = tmp / "clips"
    make_captioned_set(src, count=clips, seconds=seconds)
    out = tmp / "out"
    subprocess.run(
        [sys.executable, "-m", "musicembed_core", "run", "--gin_file", "runs/quickstart.gin",
         *run_params(src, out), "--no-progress"],
        check=True, capture_output=True, cwd=REPO)
    return out / "logmel.h5", src / "captions.jsonl"


def configure(epochs: int, extra: list[str] | None = None):
    from musicembed_core import ginconfig
    from musicembed_core.projection.train import configure as gin_configure

    ginconfig.clear()
    params = [f"train.epochs = {epochs}", "train.device = 'cpu'", "train.patience = 1000",
              "train.test_fraction = 0.0", *(extra or [])]
    _, spec, head, settings, _ = gin_configure(QUICK_GIN, params, need_run=False)
    return spec, head, settings


def real_loop(vectors: Path, captions: Path, outdir: Path, epochs: int) -> dict[str, float]:
    from musicembed_core.projection.train import TrainRequest, train_projector

    spec, head, settings = configure(epochs)
    t0 = time.perf_counter()
    result = train_projector(TrainRequest(captions=str(captions), outdir=str(outdir),
                                          vectors=str(vectors), restart=True),
                             spec, head, settings, show_progress=False,
                             console=_quiet_console())
    wall = time.perf_counter() - t0
    s = result.summary
    return {"loop_pairs_s": s["pairs_per_second"], "pairs": s["pairs_seen"],
            "wall_pairs_s": s["pairs_seen"] / wall, "wall_s": wall}


def bare_loop(vectors: Path, captions: Path, epochs: int) -> dict[str, float]:
    """The same model, optimizer, batches and loss; everything preloaded, nothing else."""
    import numpy as np
    import torch

    from musicembed_core.projection.losses import info_nce
    from musicembed_core.projection.train import (_build_model, _optimizer, epoch_order,
                                                   load_training_data, open_vectors)
    from musicembed_core.projection.captions import split_tracks

    spec, head, settings = configure(epochs)
    out = open_vectors(str(vectors))
    try:
        data = load_training_data(out, str(captions))
    finally:
        out.close()
    split = split_tracks(data.ids, val_fraction=settings.val_fraction, test_fraction=0.0,
                         seed=settings.seed, paths=data.paths)
    texts, rows = data.pairs(split.train)
    audio = torch.nn.functional.normalize(torch.as_tensor(np.asarray(data.vectors)), dim=-1)
    torch.manual_seed(settings.seed)
    model = _build_model(spec, head, settings, data.space.dim, torch.device("cpu"))
    optimizer = _optimizer(model, settings)
    bs = settings.batch_size
    n_batches = len(texts) // bs + (1 if len(texts) % bs > 1 else 0)
    # preloaded: every epoch's batches tokenised before the clock starts
    batches = []
    for epoch in range(epochs):
        order = epoch_order(len(texts), settings.seed, epoch)
        for b in range(n_batches):
            idx = order[b * bs:(b + 1) * bs]
            tokens = model.tower.tokenize([texts[i] for i in idx])
            r = torch.from_numpy(rows[idx])
            batches.append((tokens, audio[r], r))
    model.train()
    pairs = 0
    t0 = time.perf_counter()
    for tokens, a, r in batches:
        text_vec = model.head(model.tower(tokens))
        loss = info_nce(text_vec, a, r, settings.temperature)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        pairs += len(r)
    elapsed = time.perf_counter() - t0
    return {"bare_pairs_s": pairs / elapsed, "pairs": pairs}


def _quiet_console():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), stderr=False)


# ----------------------------------------------------------------------------- memory

def wide_child(dim: int, tmp: Path, tracks: int) -> None:
    """Train one epoch into a ``dim``-d space of random captioned vectors; print VmHWM."""
    import numpy as np

    from musicembed_core.builtins.hdf5 import Hdf5Exporter
    from musicembed_core.components import Record
    from musicembed_core.projection.train import TrainRequest, train_projector
    from musicembed_core.space import EmbeddingSpace

    space = EmbeddingSpace(encoder={"name": "bench", "dim": dim}, enrichers=({"name": "mean"},),
                           dim=dim, name="bench")
    rng = np.random.default_rng(0)
    ex = Hdf5Exporter()
    ex.open(str(tmp / "v.h5"), space)
    caps = []
    words = ["piano", "drums", "organ", "flute", "bell", "strings"]
    for i in range(tracks):
        tid = f"t{i:04d}.wav"
        ex.write([Record(tid, rng.normal(size=dim).astype(np.float32), f"h{i}",
                         {"path": f"/m/{tid}", "duration": 1.0})])
        caps.append({"id": tid, "caption": f"{words[i % 6]} music number {i % 7}"})
    ex.close()
    (tmp / "c.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    before = peak_rss_mb()
    spec, head, settings = configure(1, ["projection_head.hidden = 1024", "train.batch_size = 32",
                                         "train.save_every_steps = 100000"])
    t0 = time.perf_counter()
    train_projector(TrainRequest(captions=str(tmp / "c.jsonl"), outdir=str(tmp / "o"),
                                 vectors=str(tmp / "v.h5"), restart=True),
                    spec, head, settings, show_progress=False, console=_quiet_console())
    print(json.dumps({"dim": dim, "peak_mb": peak_rss_mb(), "before_mb": before,
                      "seconds": time.perf_counter() - t0}))


def wide_figure(tmp: Path, tracks: int) -> dict[str, dict]:
    out = {}
    for dim in (768, 76_800):
        d = tmp / f"wide{dim}"
        d.mkdir()
        out[str(dim)] = child_rss(["--wide-child", str(dim), str(d), str(tracks)], __file__)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=120)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wide", action="store_true", help="also the 76,800-d memory figure")
    ap.add_argument("--wide-tracks", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smoke test: 40 clips, 1 epoch, 1 round")
    ap.add_argument("--wide-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.wide_child:
        dim, folder, tracks = args.wide_child
        wide_child(int(dim), Path(folder), int(tracks))
        return
    if args.quick:
        args.clips, args.epochs, args.rounds, args.wide_tracks = 40, 1, 1, 64
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        vectors, captions = make_library(tmp, args.clips, args.seconds)
        rounds = []
        for r in range(args.rounds):
            loop = real_loop(vectors, captions, tmp / f"train{r}", args.epochs)
            bare = bare_loop(vectors, captions, args.epochs)
            rounds.append({**loop, **bare})
            print(f"round {r + 1}: loop {loop['loop_pairs_s']:.1f} pairs/s (whole command "
                  f"{loop['wall_pairs_s']:.1f}), bare loop {bare['bare_pairs_s']:.1f} pairs/s",
                  flush=True)
        med = {k: sorted(x[k] for x in rounds)[len(rounds) // 2]
               for k in ("loop_pairs_s", "wall_pairs_s", "bare_pairs_s")}
        result = {
            "clips": args.clips, "epochs": args.epochs, "rounds": rounds, "median": med,
            "loop_vs_bare": med["loop_pairs_s"] / med["bare_pairs_s"],
            "command_vs_bare": med["wall_pairs_s"] / med["bare_pairs_s"],
        }
        print(f"\ntraining pairs/s on CPU (logmel space {args.clips} clips, MiniLM + LoRA, "
              f"train/quick.gin): loop {med['loop_pairs_s']:.1f}, whole command "
              f"{med['wall_pairs_s']:.1f}, bare loop {med['bare_pairs_s']:.1f}")
        print(f"loop / bare = {result['loop_vs_bare']:.2f}x, whole command / bare = "
              f"{result['command_vs_bare']:.2f}x (1.00 = no data-pipeline overhead)")
        if args.wide:
            wide = wide_figure(tmp, args.wide_tracks)
            result["wide"] = wide
            a, b = wide["768"], wide["76800"]
            print(f"\npeak RSS training {args.wide_tracks} tracks: 768-d {a['peak_mb']:.0f} MB, "
                  f"76,800-d {b['peak_mb']:.0f} MB (ratio {b['peak_mb'] / a['peak_mb']:.2f}x; "
                  f"head last layer alone {(1024 * 76_800 + 76_800) * 4 / 2**20:.0f} MB, x4 with "
                  f"gradient and AdamW moments)")
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
