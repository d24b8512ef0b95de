"""The encoders' torch thread budget: sized to what the decoders leave while they are the
bottleneck, all of torch's threads while the encoder is, restored afterwards; and the run's
time split in summary.json."""

from __future__ import annotations

import json

import torch

from musicembed_core.pipeline import ThreadBudget
from musicembed_core.testing import run_cli


def test_budget_follows_the_queue_and_restores_the_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        b = ThreadBudget(decode_workers=2)
        b.start()
        cores = b.low + 2  # low = cores - decode workers (at least 1, at most torch's own)
        assert b.low == max(1, min(4, cores - 2)) and b.high == 4
        assert torch.get_num_threads() == 4  # the first batch runs on every thread
        b.observe(waited=0.0, busy=0.0, decoding=True)  # before the first batch
        b.observe(waited=5.0, busy=0.01, decoding=True)  # a cheap first batch (its wait says nothing)
        assert torch.get_num_threads() == b.low  # cheap: start on the decoders' leftover cores
        for _ in range(8):
            b.observe(waited=0.0, busy=1.0, decoding=True)  # chunks always ready: encoder-bound
        assert torch.get_num_threads() == 4
        for _ in range(8):
            b.observe(waited=0.5, busy=0.5, decoding=True)  # waits for chunks: decoder-bound
        assert torch.get_num_threads() == b.low
        b.observe(waited=0.5, busy=0.5, decoding=False)  # decoding is over
        assert torch.get_num_threads() == 4
        b.stop()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


def test_a_heavy_first_batch_keeps_every_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    try:
        b = ThreadBudget(decode_workers=2)
        b.start()
        b.observe(waited=0.0, busy=0.0, decoding=True)
        b.observe(waited=9.0, busy=4.0, decoding=True)  # seconds per batch: a heavy model
        assert torch.get_num_threads() == 4
        b.observe(waited=0.0, busy=4.0, decoding=True)
        assert torch.get_num_threads() == 4 and b.switches == 0
        b.stop()
    finally:
        torch.set_num_threads(before)


def test_a_fixed_number_is_kept():
    before = torch.get_num_threads()
    try:
        b = ThreadBudget(decode_workers=2, fixed=1)
        b.start()
        for _ in range(6):
            b.observe(waited=0.0, busy=1.0, decoding=False)
        assert torch.get_num_threads() == 1
        b.stop()
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_the_summary_says_where_the_time_went(tmp_path, example_dir):
    proc = run_cli(
        "run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json",
        "--gin_param", f"run.source = '{example_dir}'",
        "--gin_param", f"run.output_dir = '{tmp_path / 'out'}'",
        "--gin_param", "run.torch_threads = 1",
        cwd=tmp_path,
    )
    timings = json.loads(proc.stdout)["timings"]
    assert {"startup", "load", "hash", "decode", "resample", "wait", "encode", "pool", "write"} <= set(timings)
    assert all(v >= 0 for v in timings.values()) and timings["encode"] > 0 and timings["decode"] > 0
