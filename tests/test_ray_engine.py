"""``run.engine = "ray"`` on a real local Ray instance (2 CPUs, started by this module):
same outputs as a local run, a killed encoder actor, a driver killed with kill -9, a
shared-service sink written from the workers, and the message when Ray is missing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

from musicembed_core import Sink, check_stored_space, hookimpl, space_record
from musicembed_core import ginconfig
from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.builtins.safetensors_export import read_safetensors
from musicembed_core.testing import REPO
from musicembed_core.testing.helpers import subprocess_env

# Fractions of the 2 CPUs, so that actors and decode tasks fit together.
RAY_PARAMS = ("run.engine = 'ray'", "run.ray_num_cpus = 0.5", "run.ray_decode_cpus = 0.5")


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    import logging

    ctx = ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 << 20,
                   logging_level=logging.WARNING)
    # Classes defined here (the slow encoder, the folder sink) travel to the workers by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()


def _execute(gin_file: str, lib: Path, out: Path, *params: str):
    from musicembed_core.runconfig import run_config
    from musicembed_core.runner import execute

    ginconfig.clear()
    ginconfig.parse([gin_file], [f"run.source = '{lib}'", f"run.output_dir = '{out}'", *params])
    try:
        return execute(run_config(), show_progress=False)
    finally:
        ginconfig.clear()  # unlocked, so that a test's temporary plugin can be withdrawn


def _write_clip(path: Path, seconds: float, rate: int, seed: int) -> None:
    from musicembed_core.examples import synth_clip, write_audio

    write_audio(path, synth_clip(seconds, rate, seed=seed), rate)


@pytest.fixture(scope="module")
def library(example_dir, tmp_path_factory) -> Path:
    """The example set, a short and a long clip, a corrupt file and one holding NaN."""
    import soundfile as sf

    from musicembed_core.examples import synth_clip

    lib = tmp_path_factory.mktemp("ray") / "Music"
    shutil.copytree(example_dir, lib)
    _write_clip(lib / "short.wav", 0.4, 16000, 11)
    _write_clip(lib / "more" / "long.flac", 33.0, 44100, 12)
    (lib / "broken").mkdir()
    (lib / "broken" / "corrupt.wav").write_bytes(os.urandom(5000))
    wave = synth_clip(2.0, 16000, seed=13).astype(np.float32)
    wave[100:200] = np.nan
    sf.write(str(lib / "broken" / "nan.wav"), wave, 16000, subtype="FLOAT")
    return lib


def _by_id(data: dict) -> dict:
    order = np.argsort(data["ids"])
    return {
        "ids": [data["ids"][i] for i in order],
        "vectors": data["vectors"][order],
        "content_hash": [data["content_hash"][i] for i in order],
        "metadata": [data["metadata"][i] for i in order],
        "space": data["space"],
    }


def test_a_ray_run_writes_what_a_local_run_writes(ray_address, library, tmp_path):
    """Two embeddings (two actor pools), HDF5 with frames and safetensors: same ids, vectors,
    hashes, metadata and space; the corrupt and the NaN file fail alone, with their reasons."""
    gin = str(REPO / "gin" / "runs" / "two_windows.gin")
    params = ("run.exporters = [@exporters.hdf5(), @exporters.safetensors()]",
              "exporters.hdf5.store_frames = True", "run.batch_size = 3")
    local = _execute(gin, library, tmp_path / "local", *params)
    ray_run = _execute(gin, library, tmp_path / "ray", *params, *RAY_PARAMS)

    for s in (local, ray_run):
        assert (s.files_total, s.files_ok, s.files_failed) == (11, 9, 2)
    reasons = {Path(f.path).name: f.reason for f in ray_run.failures}
    assert reasons == {Path(f.path).name: f.reason for f in local.failures}
    assert "not an audio file" in reasons["corrupt.wav"] and "non-finite" in reasons["nan.wav"]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["engine"] == "ray" and summary["ray"]["nodes"] == 1
    assert json.loads((tmp_path / "local" / "summary.json").read_text())["engine"] == "local"

    worst = 0.0
    for name in ("logmel_10s", "logmel_30s"):
        for reader, file in ((read_hdf5, f"{name}.h5"), (read_safetensors, f"{name}.safetensors")):
            a = _by_id(reader(str(tmp_path / "local" / file)))
            b = _by_id(reader(str(tmp_path / "ray" / file)))
            assert a["ids"] == b["ids"] and len(a["ids"]) == 9
            assert a["content_hash"] == b["content_hash"] and a["metadata"] == b["metadata"]
            assert a["space"] == b["space"]
            worst = max(worst, float(np.abs(a["vectors"] - b["vectors"]).max()))
        from musicembed_core.builtins.hdf5 import read_frames

        fa = read_frames(str(tmp_path / "local" / f"{name}.h5"), "more/long.flac")
        fb = read_frames(str(tmp_path / "ray" / f"{name}.h5"), "more/long.flac")
        assert fa.shape == fb.shape and fa.shape[1] > 1600
        worst = max(worst, float(np.abs(fa - fb).max()))
    print(f"\nray vs local, logmel: max abs difference {worst}")
    assert worst == 0.0  # logmel is batch-invariant: bit-identical

    # Rerun: the unchanged files are skipped (on the driver, by a stat); the bad ones retried.
    again = _execute(gin, library, tmp_path / "ray", *params, *RAY_PARAMS)
    assert (again.files_ok, again.files_skipped, again.files_failed) == (0, 9, 2)


# --------------------------------------------------------------------------- faults


class SlowLogMel(LogMelEncoder):
    """logmel that takes 0.25 s per batch: leaves time to kill its actor mid-run."""

    name = "slow_logmel_test"

    def encode(self, wave):
        time.sleep(0.25)
        return super().encode(wave)


def _fault_library(root: Path, n: int, seconds: float = 2.0) -> Path:
    lib = root / "lib"
    for i in range(n):
        _write_clip(lib / f"t{i:03d}.wav", seconds, 16000, i)
    return lib


def _encoder_actors(ray) -> list[dict]:
    from ray._private import state  # debugging API: actors with their pids and restarts

    return [a for a in state.actors().values()
            if "_EncodeStage" in a["ActorClassName"] and a["State"] != "DEAD"]


def _wait_for(condition, timeout: float = 60.0, every: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = condition()
        if got:
            return got
        time.sleep(every)
    raise AssertionError("timed out waiting")


def test_a_killed_encoder_actor_is_restarted_and_the_run_completes(ray_address, register_plugin,
                                                                  tmp_path):
    import ray

    plugin = types.SimpleNamespace(register_encoders=hookimpl(lambda register: register(SlowLogMel)))
    register_plugin(plugin, "slow-logmel-test")
    lib = _fault_library(tmp_path, 24)
    out = tmp_path / "out"
    done: dict = {}

    def run() -> None:
        try:
            done["summary"] = _execute(
                str(REPO / "gin" / "runs" / "quickstart.gin"), lib, out, *RAY_PARAMS,
                "embedding.encoder = @encoders.slow_logmel_test()", "embedding.name = 'logmel'",
                "run.batch_size = 1",
                "run.ray_tracks_per_batch = 1", "run.flush_every_tracks = 2")
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test thread
            done["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        pending = out / "logmel.h5.pending"
        _wait_for(lambda: not thread.is_alive() or any(pending.glob("seg-*.h5")))
        assert "error" not in done, done["error"]  # tracks are being stored
        actor = [a for a in _encoder_actors(ray) if a["State"] == "ALIVE" and a["Pid"]][0]
        os.kill(actor["Pid"], signal.SIGKILL)
        assert thread.is_alive() and not (out / "logmel.h5").exists(), "the run ended before the kill"
    finally:
        thread.join(timeout=120)
    assert "error" not in done, done.get("error")
    summary = done["summary"]
    assert (summary.files_ok, summary.files_failed) == (24, 0)
    ids = read_hdf5(str(out / "logmel.h5"))["ids"]
    assert sorted(ids) == [f"t{i:03d}.wav" for i in range(24)]  # every track, once
    restarted = [a for a in ray._private.state.actors().values()
                 if a["ActorID"] == actor["ActorID"]]
    assert restarted and restarted[0]["NumRestarts"] >= 1


def test_driver_stopped_then_killed_with_kill_9_then_rerun_loses_and_duplicates_nothing(
        ray_address, tmp_path):
    lib = _fault_library(tmp_path, 24, seconds=6.0)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "musicembed_core", "run", "--gin_file",
            str(REPO / "gin" / "runs" / "quickstart.gin"), "--no-progress", "--json"]
    for p in (f"run.source = '{lib}'", f"run.output_dir = '{out}'", *RAY_PARAMS,
              f"run.ray_address = '{ray_address}'", "run.batch_size = 1",
              "run.ray_tracks_per_batch = 1", "run.flush_every_tracks = 2"):
        args += ["--gin_param", p]

    def start_and_signal(sig: int) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=subprocess_env(), cwd=tmp_path)
        try:
            pending = out / "logmel.h5.pending"
            before = set(pending.glob("seg-*.h5"))
            _wait_for(lambda: proc.poll() is not None or set(pending.glob("seg-*.h5")) - before,
                      timeout=120, every=0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            os.kill(proc.pid, sig)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stderr.close()
        return proc

    # SIGTERM (systemctl stop, a scheduler's preemption): a graceful stop, as locally.
    stopped = start_and_signal(signal.SIGTERM)
    assert stopped.returncode == 130
    first = json.loads((out / "summary.json").read_text())
    assert first["interrupted"] is True and first["engine"] == "ray" and first["files_ok"] < 24
    assert len(read_hdf5(str(out / "logmel.h5"))["ids"]) == first["files_ok"]

    start_and_signal(signal.SIGKILL)
    assert json.loads((out / "summary.json").read_text())["started_at"] == first["started_at"]

    final = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(), cwd=tmp_path,
                           timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout)
    assert summary["files_failed"] == 0 and summary["files_skipped"] >= first["files_ok"] + 2
    assert summary["files_ok"] + summary["files_skipped"] == 24
    ids = read_hdf5(str(out / "logmel.h5"))["ids"]
    assert len(ids) == len(set(ids)) == 24


# --------------------------------------------------------------------------- shared sinks


class FolderSink(Sink):
    """A store several processes can write at once: one file per id, replaced atomically.
    Records the writing process, and refuses ids containing 'refuse-me'."""

    name = "folder_test"

    def __init__(self, path: str = "{output_dir}/folder-sink", metric: str = "cosine"):
        self.path, self.metric = path, metric

    def shared_service(self) -> bool:
        return True

    def open(self, collection, space, *, readonly=False):
        self.dir = Path(self.path) / collection
        self.dir.mkdir(parents=True, exist_ok=True)
        stored = self.dir / "space.json"
        if stored.exists():
            check_stored_space(stored.read_text(), space, str(self.dir))
        else:
            stored.write_text(space_record(space))

    def known(self):
        return {d["id"]: d["content_hash"] for d in self._records()}

    def _records(self):
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.rec"))]

    def upsert(self, records):
        for r in records:
            if "refuse-me" in r.id:
                raise ValueError(f"{r.id}: refused on purpose")
        for r in records:
            name = hashlib.sha1(r.id.encode()).hexdigest()
            tmp = self.dir / f"{name}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps({"id": r.id, "vector": np.asarray(r.vector).tolist(),
                                       "content_hash": r.content_hash, "pid": os.getpid()}))
            os.replace(tmp, self.dir / f"{name}.rec")

    def count(self):
        return len(self._records())

    def close(self):
        pass


def test_a_shared_service_sink_is_written_by_the_workers(ray_address, register_plugin, tmp_path):
    plugin = types.SimpleNamespace(register_sinks=hookimpl(lambda register: register(FolderSink)))
    register_plugin(plugin, "folder-sink-test")
    lib = _fault_library(tmp_path, 5)
    (lib / "t004.wav").rename(lib / "refuse-me.wav")
    out = tmp_path / "out"
    summary = _execute(str(REPO / "gin" / "runs" / "quickstart.gin"), lib, out, *RAY_PARAMS,
                       "run.sinks = [@sinks.folder_test()]")
    assert (summary.files_ok, summary.files_failed) == (4, 1)
    assert summary.refused[0]["id"] == "refuse-me.wav"
    assert "refused on purpose" in summary.refused[0]["reason"]
    assert summary.ray["worker_sinks"] == ["folder_test:logmel"]
    h5 = read_hdf5(str(out / "logmel.h5"))  # the exporter, written by the driver, has all 5
    assert len(h5["ids"]) == 5
    records = {d["id"]: d for d in (json.loads(p.read_text())
                                    for p in (out / "folder-sink" / "logmel").glob("*.rec"))}
    assert sorted(records) == [f"t{i:03d}.wav" for i in range(4)]
    assert all(d["pid"] != os.getpid() for d in records.values())  # written by a Ray worker
    for tid, d in records.items():
        row = h5["ids"].index(tid)
        assert np.array_equal(np.asarray(d["vector"], np.float32), h5["vectors"][row])


def test_a_shared_sink_that_refuses_everything_stops_the_run_with_its_error(
        ray_address, register_plugin, tmp_path):
    from musicembed_core.errors import MusicembedError

    plugin = types.SimpleNamespace(register_sinks=hookimpl(lambda register: register(FolderSink)))
    register_plugin(plugin, "folder-sink-test")
    lib = _fault_library(tmp_path, 2)
    for p in lib.iterdir():
        p.rename(lib / f"refuse-me-{p.name}")
    with pytest.raises(MusicembedError, match="refused every record of a batch of 2"):
        _execute(str(REPO / "gin" / "runs" / "quickstart.gin"), lib, tmp_path / "out",
                 *RAY_PARAMS, "run.sinks = [@sinks.folder_test()]", "run.flush_every_tracks = 2")


# --------------------------------------------------------------------------- without Ray


def test_without_ray_the_engine_says_what_to_install(example_dir, tmp_path):
    out = tmp_path / "out"
    code = ("import sys; sys.modules['ray'] = None; from musicembed_core import cli; "
            "sys.argv = ['musicembed', *sys.argv[1:]]; cli.entrypoint()")
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", "--gin_file", str(REPO / "gin" / "runs" / "quickstart.gin"),
         "--gin_param", f"run.source = '{example_dir}'", "--gin_param", f"run.output_dir = '{out}'",
         "--gin_param", "run.engine = 'ray'"],
        capture_output=True, text=True, env=subprocess_env(), timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "pip install 'musicembed[ray]'" in proc.stderr
    assert not (out / "logmel.h5").exists()


def test_an_engine_the_cluster_cannot_host_is_refused_not_hung(ray_address, example_dir, tmp_path):
    from musicembed_core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"needs 3 CPUs.*run.ray_num_cpus"):
        _execute(str(REPO / "gin" / "runs" / "quickstart.gin"), example_dir, tmp_path / "out",
                 "run.engine = 'ray'", "run.ray_num_cpus = 2")
