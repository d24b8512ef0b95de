"""musicembed_core.stored: a run's output (HDF5 file or safetensors folder) read back.

One real `musicembed run` writes both formats with frames kept (and the MEAN_ROBUST_DELTA
chain); the error paths use outputs written through the exporters' own API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from musicembed_core.builtins import enrichers as E
from musicembed_core.builtins.hdf5 import Hdf5Exporter, read_frames, read_hdf5
from musicembed_core.builtins.safetensors_export import SafetensorsExporter
from musicembed_core.chain import EnricherChain, enrich_whole
from musicembed_core.errors import MusicembedError
from musicembed_core.stored import NoFramesError, NotAnOutputError, StoredOutput, open_output
from musicembed_core.testing import REPO, run_cli
from musicembed_core.testing.records import suite_frames, suite_record, suite_space

DIM = 8


@pytest.fixture(scope="module")
def run_out(example_dir, tmp_path_factory) -> Path:
    """logmel (L=2, D=96) + MEAN_ROBUST_DELTA, both exporters storing frames."""
    out = tmp_path_factory.mktemp("stored") / "out"
    params = [
        f"run.source = '{example_dir}'", f"run.output_dir = '{out}'",
        "embedding.enrichers = %MEAN_ROBUST_DELTA",
        "run.exporters = [@exporters.hdf5(), @exporters.safetensors()]",
        "exporters.hdf5.store_frames = True", "exporters.safetensors.store_frames = True",
        "exporters.safetensors.shard_size = 3",
        "encoders.logmel.window_seconds = 2.5",
    ]
    args = ["run", "--gin_file", str(REPO / "gin" / "runs" / "quickstart.gin"),
            "--gin_file", "enrichers/mean_robust_delta.gin", "--no-progress", "--json"]
    for p in params:
        args += ["--gin_param", p]
    summary = json.loads(run_cli(*args).stdout)
    assert summary["files_failed"] == 0 and summary["files_ok"] == 7
    return out


def _write(path: str, cls: type, records: list, **kw) -> None:
    ex = cls(**kw)
    ex.open(path, suite_space(DIM))
    ex.write(records)
    ex.close()


# --------------------------------------------------------------------------- a real run


def test_both_formats_read_back_what_the_run_stored(run_out):
    h5_path, st_path = run_out / "logmel.h5", run_out / "logmel.safetensors"
    with open_output(h5_path) as h5, open_output(st_path) as st:
        assert isinstance(h5, StoredOutput)
        assert (h5.format, st.format) == ("hdf5", "safetensors")
        assert h5.path == str(h5_path) and st.path == str(st_path)
        stored = read_hdf5(str(h5_path))
        assert h5.space == st.space and h5.space.hash == stored["space_hash"]
        assert h5.space.dim == 2 * 96 * 3
        assert h5.space.enrichers[1]["stats"] == ["mean", "robust_sigma", "delta_mean"]
        assert h5.ids == stored["ids"] and sorted(st.ids) == sorted(h5.ids) and len(h5) == 7
        assert h5.has_frames and st.has_frames and h5.frame_shape == st.frame_shape == (2, 96)

        vec_h5, vec_st = h5.vectors(), st.vectors()
        assert vec_h5.dtype == vec_st.dtype == np.float32 and vec_h5.shape == (7, 2 * 96 * 3)
        np.testing.assert_array_equal(vec_h5, stored["vectors"])
        by_id = dict(zip(st.ids, vec_st))
        chain = EnricherChain([E.LayersEnricher("all"),
                               E.StatsEnricher(["mean", "robust_sigma", "delta_mean"]),
                               E.FlattenEnricher(), E.L2NormalizeEnricher()])
        for i, tid in enumerate(h5.ids):
            frames = h5.frames(tid)
            assert frames.dtype == np.float32 and frames.shape == (2, 6 * 50, 96)  # [L, F, D]
            np.testing.assert_array_equal(st.frames(tid), frames)
            np.testing.assert_array_equal(read_frames(str(h5_path), tid), frames)
            np.testing.assert_array_equal(by_id[tid], vec_h5[i])
            # The stored vector is the chain applied to the stored frames.
            again = enrich_whole(chain, torch.from_numpy(frames)).numpy()
            np.testing.assert_allclose(vec_h5[i], again, rtol=0, atol=2e-6)
            assert h5.metadata(tid) == st.metadata(tid) == stored["metadata"][i]
            assert h5.metadata(tid)["path"].endswith(tid)
            assert h5.content_hash(tid) == st.content_hash(tid) == stored["content_hash"][i]
        assert json.loads(Path(st_path, "index.json").read_text())["frame_shape"] == [2, 96]


def test_frames_are_time_aligned(run_out):
    """Frame i of a track is at i / frame_rate s (logmel: 50 frames/s), across window seams
    (2.5 s windows here); the rate is in the files for readers without musicembed too."""
    import h5py

    for name in ("logmel.h5", "logmel.safetensors"):
        with open_output(run_out / name) as out:
            assert out.frame_rate == 50.0
            tid = out.ids[0]
            times = out.frame_times(tid)
            assert times.shape == (out.frames(tid).shape[1],) and times.dtype == np.float64
            np.testing.assert_allclose(times[[0, 1, 125, -1]], [0.0, 0.02, 2.5, (len(times) - 1) / 50])
    with h5py.File(run_out / "logmel.h5", "r") as f:
        assert float(f.attrs["frame_rate"]) == 50.0
    assert json.loads(Path(run_out, "logmel.safetensors", "index.json").read_text())["frame_rate"] == 50.0


def test_iter_frames_reads_one_track_at_a_time(run_out):
    for name in ("logmel.h5", "logmel.safetensors"):
        with open_output(run_out / name) as out:
            it = out.iter_frames()
            seen = []
            for tid, frames in it:
                seen.append(tid)
                np.testing.assert_array_equal(frames, out.frames(tid))
            assert seen == out.ids
            some = [out.ids[3], out.ids[0]]
            assert [t for t, _ in out.iter_frames(some)] == some
            with pytest.raises(KeyError) as err:  # checked before anything is read
                out.iter_frames([out.ids[0], "no/such.wav", "nor/this.mp3"])
            msg = err.value.args[0]
            assert "tracks 'no/such.wav', 'nor/this.mp3' are not in" in msg and str(run_out / name) in msg


def test_an_unknown_id_names_the_id_and_the_output(run_out):
    for name, where in (("logmel.h5", "HDF5 file"), ("logmel.safetensors", "safetensors output")):
        with open_output(run_out / name) as out:
            assert "nope.wav" not in out and out.ids[0] in out
            for read in (out.frames, out.metadata, out.content_hash):
                with pytest.raises(KeyError) as err:
                    read("nope.wav")
                msg = err.value.args[0]
                assert f"track 'nope.wav' is not in {where} {run_out / name}" in msg
                assert "relative to run.source" in msg


# --------------------------------------------------------------------------- outputs without frames


@pytest.mark.parametrize("cls,name,exporter", [(Hdf5Exporter, "o.h5", "hdf5"),
                                               (SafetensorsExporter, "o.safetensors", "safetensors")])
def test_no_frames_says_how_to_store_them(tmp_path, cls, name, exporter):
    path = str(tmp_path / name)
    _write(path, cls, [suite_record(f"t{i}", "v1", DIM, frames=4) for i in range(3)])
    with open_output(path) as out:
        assert not out.has_frames and out.frame_shape is None and out.format == exporter
        np.testing.assert_array_equal(out.vectors()[1], suite_record("t1", "v1", DIM).vector)
        for call in (lambda: out.frames("t0"), lambda: out.iter_frames()):
            with pytest.raises(NoFramesError) as err:
                call()
            msg = str(err.value)
            assert path in msg and f"--gin_param exporters.{exporter}.store_frames=True" in msg
            assert "new output" in msg
        assert isinstance(err.value, MusicembedError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("cls,name", [(Hdf5Exporter, "o.h5"), (SafetensorsExporter, "o.safetensors")])
def test_tracks_stored_without_frames_read_as_empty_stacks(tmp_path, cls, name):
    path = str(tmp_path / name)
    _write(path, cls, [suite_record("a", "v1", DIM, frames=5), suite_record("b", "v1", DIM)],
           store_frames=True)
    with open_output(path) as out:
        np.testing.assert_array_equal(out.frames("a"), suite_frames("a", "v1", DIM, 5))
        assert out.frames("b").shape == (2, 0, DIM)


# --------------------------------------------------------------------------- only finalised data


def test_only_finalised_records_are_read(tmp_path):
    path = str(tmp_path / "o.h5")
    _write(path, Hdf5Exporter, [suite_record("done", "v1", DIM, frames=3)], store_frames=True)
    ex = Hdf5Exporter(store_frames=True, checkpoint_every=2)
    ex.open(path, suite_space(DIM))
    ex.write([suite_record(f"later{i}", "v1", DIM, frames=3) for i in range(2)])  # a segment only
    assert os.listdir(path + ".pending")
    with open_output(path) as out:
        assert out.ids == ["done"]
    ex.close()
    with open_output(path) as out:
        assert out.ids == ["done", "later0", "later1"]


# --------------------------------------------------------------------------- not an output


def test_what_is_not_an_output_is_refused_with_what_was_expected(tmp_path, run_out):
    expected = "an HDF5 file (<name>.h5) or a safetensors output folder"

    def refused(path) -> str:
        with pytest.raises(NotAnOutputError) as err:
            open_output(path)
        assert isinstance(err.value, MusicembedError)
        return str(err.value)

    msg = refused(tmp_path / "missing.h5")
    assert f"{tmp_path / 'missing.h5'} does not exist" in msg and expected in msg

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    msg = refused(text)
    assert f"{text} is not an HDF5 file" in msg and expected in msg and "musicembed run" in msg

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1]
    msg = refused(foreign)
    assert "not a musicembed HDF5 output" in msg and "written by `musicembed run`" in msg
    assert "overwrite" not in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    msg = refused(empty)
    assert f"{empty} is a folder without index.json" in msg and expected in msg

    msg = refused(run_out)  # the run's output folder: say which outputs it holds
    assert "folder of outputs" in msg
    assert str(run_out / "logmel.h5") in msg and str(run_out / "logmel.safetensors") + "/" in msg

    shard = run_out / "logmel.safetensors" / "vectors-00001.safetensors"
    msg = refused(shard)
    assert "single safetensors file" in msg and "Pass the folder" in msg

    bad_index = tmp_path / "bad.safetensors"
    bad_index.mkdir()
    (bad_index / "index.json").write_text(json.dumps({"format": "something-else"}))
    msg = refused(bad_index)
    assert "not a musicembed safetensors index" in msg and "overwrite" not in msg


def test_the_index_file_opens_its_folder(run_out):
    with open_output(run_out / "logmel.safetensors" / "index.json") as out:
        assert out.format == "safetensors" and out.path == str(run_out / "logmel.safetensors")


def test_unfinished_outputs_say_to_run_again(tmp_path):
    h5 = str(tmp_path / "o.h5")
    ex = Hdf5Exporter(checkpoint_every=2)
    ex.open(h5, suite_space(DIM))
    ex.write([suite_record(f"t{i}", "v1", DIM) for i in range(2)])  # killed here: segments only
    with pytest.raises(NotAnOutputError) as err:
        open_output(h5)
    msg = str(err.value)
    assert f"{h5} has not been finalised yet" in msg and "o.h5.pending/" in msg
    assert "Run the same `musicembed run` again" in msg

    st = tmp_path / "o.safetensors"
    _write(str(st), SafetensorsExporter, [suite_record("a", "v1", DIM)])
    (st / "index.json").unlink()  # killed before its first index write
    with pytest.raises(NotAnOutputError, match="holds safetensors shards but no index.json"):
        open_output(st)


def test_importing_stored_is_cheap():
    code = ("import sys, musicembed_core.stored; "
            "print(sorted(m for m in ('torch', 'numpy', 'h5py', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
