"""``run.engine = "ray"``: the same extraction as a local run, on a Ray cluster, with Ray Data.

Why Ray Data (and where Ray core would fit): the work is one bounded stream of files
through stateless CPU work (decode, resample) and stateful model work (a model loaded
once, batched calls). That is exactly Ray Data's batch-inference shape: a streaming
executor that keeps every stage busy, applies backpressure through the object store
budget, restarts a killed actor and retries its batch, and autoscales actor pools. With
Ray core we would rewrite that scheduler; nothing here needs more than Ray Data offers.

The plan (one line per operator)::

    from_items(files still to embed, with known content hashes)       driver
      .flat_map(_decode_file)            decode + resample once per rate: CPU tasks, one file
                                         per call; a bad file becomes a row with its reason
      .map_batches(_EncodeStage, e=0)    actor pool (model loaded once per actor,
      .map_batches(_EncodeStage, e=1)    num_cpus/num_gpus per actor): chunk at the window,
      ...                                batch equal-length chunks, encode, pool (enrichers)
      .map_batches(_SinkStage)           only for shared-service sinks (a Milvus server):
                                         idempotent upserts by id from the workers
      .iter_rows()                       driver: Results -> the runner's OutputWriters

Every per-track computation is the local pipeline's own code (``pipeline.py``):
``stream_resampled``, ``_Chunker``, ``encode_wave``, ``_Track.feed``/``result`` (the
enricher chain's streaming state, then ``non_finite``), ``track_metadata``. Chunking happens
in the encoder actor rather than in the decode task: each row then carries the resampled
audio once per rate (shared by the embeddings at that rate) instead of overlapping
windows, which keeps the object store smaller; the chunks are the same.

``flat_map`` (not ``map_batches``) for decoding is deliberate: Ray Data never fuses it
into the following actor stage, so decoding stays in CPU tasks and off the (GPU) actors.

Outputs: the driver writes the exporters (HDF5, safetensors) and embedded sinks (FAISS,
Milvus Lite) through the runner's ``OutputWriter`` and flush policy, so files, resume and
kill -9 behave as in a local run. Known ids with unchanged content are skipped on the
driver from the hash cache (a ``stat``), or in the decode task once it has hashed the
file, before any decoding.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..components import Record
from ..pipeline import (
    HashCache,
    Job,
    PreparedEmbedding,
    Result,
    _Chunker,
    _Track,
    check_id,
    encode_wave,
    encoder_failure,
    failure_reason,
    file_hash,
    no_samples_error,
    track_metadata,
)

log = logging.getLogger("musicembed")

_EMPTY = np.zeros(0, dtype=np.float32)
_NO_FRAMES = np.zeros((0, 0, 0), dtype=np.float32)
_SINK_CPUS = 0.25
"""CPUs a shared-sink writer actor reserves (it mostly waits on the server)."""


# --------------------------------------------------------------------------- workers


def _decode_file(row: Mapping[str, Any], rates: Sequence[int]) -> list[dict[str, Any]]:
    """Decode task (CPU): hash if needed, skip known content, decode + resample once per rate.

    One row per file, whatever happens: a file that fails carries its reason."""
    clock = time.perf_counter
    timings: dict[str, float] = {}
    known = json.loads(row["known"])
    out: dict[str, Any] = {
        "id": row["id"], "path": row["path"], "status": "ok", "hash": row["hash"], "error": "",
        "needed": "", "metadata": "", "seconds": 0.0, "size": -1, "mtime_ns": -1,
    }
    audio = {r: _EMPTY for r in rates}
    path = Path(row["path"])
    try:
        st = path.stat()
        out["size"], out["mtime_ns"] = int(st.st_size), int(st.st_mtime_ns)
        digest = row["hash"]
        if not digest:
            t0 = clock()
            digest = file_hash(path)
            timings["hash"] = clock() - t0
            out["hash"] = digest
        needed = [k != digest for k in known]
        out["needed"] = "".join("1" if n else "0" for n in needed)
        if not any(needed):
            out["status"] = "skipped"
        else:
            from ..audio import stream_resampled

            info, blocks = stream_resampled(path, rates, timings=timings)
            parts: dict[int, list[np.ndarray]] = {r: [] for r in rates}
            for block in blocks:
                for r in rates:
                    parts[r].append(block[r])
            audio = {r: np.concatenate(p).astype(np.float32, copy=False) if p else _EMPTY
                     for r, p in parts.items()}
            decoded = audio[rates[0]].size
            if decoded == 0:
                raise no_samples_error(path)
            out["seconds"] = decoded / rates[0]
            out["metadata"] = json.dumps(track_metadata(path, info, st, out["seconds"]))
    except Exception as exc:  # noqa: BLE001 - any failure is recorded per file
        out["status"], out["error"] = "failed", failure_reason(exc)
        audio = {r: _EMPTY for r in rates}
    for r in rates:
        out[f"audio_{r}"] = audio[r]
    for key in ("hash", "decode", "resample"):
        out[f"t_{key}"] = float(timings.get(key, 0.0))
    return [out]


class _EncodeStage:
    """Actor of embedding ``e``: loads the model once, then turns audio rows into vectors."""

    def __init__(self, prep: PreparedEmbedding, e: int, batch_size: int,
                 torch_threads: int, drop: Sequence[str]) -> None:
        import torch

        t0 = time.perf_counter()
        torch.set_num_threads(max(1, int(torch_threads)))
        self.prep, self.e, self.batch_size, self.drop = prep, e, batch_size, list(drop)
        prep.encoder.load()
        self.load_seconds = time.perf_counter() - t0
        self.geometry = prep.geometry

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        prep, e, g = self.prep, self.e, self.geometry
        clock = time.perf_counter
        n = len(batch["id"])
        out = {k: v for k, v in batch.items() if k not in self.drop}
        status, error = list(batch["status"]), list(batch["error"])
        vecs: list[np.ndarray] = [_EMPTY] * n
        frames: list[np.ndarray] = [_NO_FRAMES] * n
        spent = {"encode": 0.0, "pool": 0.0}
        overlap = g.overlap_frames

        def run(items: list[tuple[_Track, int, np.ndarray]]) -> None:
            live = [it for it in items if not it[0].failed]
            if not live:
                return
            wave = torch.from_numpy(np.stack([it[2] for it in live]))
            t0 = clock()
            try:
                enc = encode_wave(prep, wave)
            except Exception as exc:  # noqa: BLE001 - the batch's tracks fail, as locally
                for track, _, _ in live:
                    track.failed = encoder_failure(prep, exc)
                return
            t1 = clock()
            for b, (track, idx, _) in enumerate(live):
                track.feed(0, idx, enc[:, b], overlap)
            spent["encode"] += t1 - t0
            spent["pool"] += clock() - t1

        tracks: dict[int, _Track] = {}
        full: list[tuple[_Track, int, np.ndarray]] = []
        audio_col = batch[f"audio_{g.sample_rate}"]
        for i in range(n):
            if status[i] != "ok" or batch["needed"][i][e] != "1":
                continue
            track = _Track(Job(Path(batch["path"][i]), str(batch["id"][i])), 1, [prep.chain],
                           [prep.keep_frames])
            tracks[i] = track
            chunker = _Chunker.of(g)
            count = 0
            for chunk in itertools.chain(chunker.push(np.asarray(audio_col[i], np.float32)),
                                         chunker.finish()):
                if chunk.size != g.window_samples:
                    run([(track, count, chunk)])  # a tail or short track: its own batch
                else:
                    full.append((track, count, chunk))
                    if len(full) >= self.batch_size:
                        run(full)
                        full = []
                count += 1
            if count == 0:
                track.failed = failure_reason(no_samples_error(track.job.path))
        run(full)
        for i, track in tracks.items():
            if not track.failed:
                res = track.result([prep])  # this actor's tracks hold one embedding
                if res.status == "ok":
                    vecs[i] = res.vectors[0]
                    if 0 in res.frames:
                        frames[i] = res.frames[0].astype(np.float32, copy=False)
                    continue
                track.failed = res.error
            status[i], error[i] = "failed", track.failed
        out["status"], out["error"] = status, error
        out[f"vec_{e}"] = vecs
        if prep.keep_frames:
            out[f"frames_{e}"] = frames
        out[f"t_encode_{e}"] = [spent["encode"]] + [0.0] * (n - 1)
        out[f"t_pool_{e}"] = [spent["pool"]] + [0.0] * (n - 1)
        out[f"t_load_{e}"] = [self.load_seconds] + [0.0] * (n - 1)
        self.load_seconds = 0.0
        return out


class _SinkStage:
    """Writes a shared-service sink (a Milvus server) from the workers: one idempotent
    upsert per batch and embedding, then ``flush()``; refusals travel back to the driver."""

    def __init__(self, sinks: Sequence[tuple[int, Any, str, str]],
                 preps: Mapping[int, PreparedEmbedding], output_dir: str) -> None:
        from ..outputs import OutputWriter, open_sink

        self.writers = []
        for e, template, label, location in sinks:
            sink, _ = open_sink(template, Path(output_dir), preps[e])
            self.writers.append((e, OutputWriter(sink, label, location, True)))

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from ..errors import MusicembedError

        n = len(batch["id"])
        refused: list[list[dict[str, str]]] = [[] for _ in range(n)]
        row_of = {str(batch["id"][i]): i for i in range(n)}
        broken = ""
        try:
            for e, writer in self.writers:
                records = [
                    Record(id=str(batch["id"][i]),
                           vector=np.asarray(batch[f"vec_{e}"][i], np.float32),
                           content_hash=str(batch["hash"][i]),
                           metadata=json.loads(batch["metadata"][i]))
                    for i in range(n)
                    if batch["status"][i] == "ok" and batch["needed"][i][e] == "1"
                ]
                for r in writer.write(records) + writer.flush():
                    refused[row_of[r.id]].append({"output": r.output, "id": r.id, "reason": r.reason})
        except MusicembedError as exc:  # the sink itself is failing: the driver stops the run
            broken = str(exc)
        out = dict(batch)
        out["refused"] = [json.dumps(r) for r in refused]
        out["sink_error"] = [broken] * n
        return out


# --------------------------------------------------------------------------- driver


class RayEmbedder:
    """The Ray engine behind the runner: ``embed(jobs)`` yields one Result per job.

    ``opened`` (the runner's outputs, already opened and asked what they hold): the
    shared-service sinks among them are handed to the workers (their driver copy is
    closed); everything else stays with the driver.
    """

    def __init__(self, embeddings: Sequence[PreparedEmbedding], cfg: Any, *,
                 hash_cache: HashCache, known: Sequence[Mapping[str, str]],
                 output_dir: Any, opened: Sequence[Any]) -> None:
        self.embeddings = list(embeddings)
        self.cfg = cfg
        self.opts = cfg.ray
        self.hash_cache = hash_cache
        self.known = [dict(k) for k in known]
        self.output_dir = str(output_dir)
        self.rates = sorted({p.geometry.sample_rate for p in self.embeddings})
        self.timings: dict[str, float] = {}
        self.details: dict[str, Any] = {
            "address": self.opts.address, "actors": self.opts.actors,
            "actor_num_cpus": self.opts.num_cpus, "actor_num_gpus": self.opts.num_gpus,
            "decode_cpus": self.opts.decode_cpus,
        }
        self.remote_sinks = self._take_shared_sinks(opened)

    def _take_shared_sinks(self, opened: Sequence[Any]) -> list[tuple[int, Any, str, str]]:
        remote = []
        n_exp = len(self.cfg.exporters)  # open_outputs: the exporters, then cfg.sinks in order
        for e, outs in enumerate(opened):
            shared = [(template, writer) for template, writer in zip(self.cfg.sinks, outs.writers[n_exp:])
                      if writer.component.shared_service()]
            for template, writer in shared:
                remote.append((e, template, writer.label, writer.location))
                outs.writers.remove(writer)
                writer.close()  # its space and known ids are read already; the workers write it
        if remote:
            self.details["worker_sinks"] = [loc for _, _, _, loc in remote]
        return remote

    def collect_timings(self) -> dict[str, float]:
        return dict(self.timings)

    def _add(self, key: str, seconds: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + float(seconds)

    # ---------------------------------------------------------------- driver side
    def embed(self, jobs: Iterable[Job]) -> Iterator[Result]:
        """Skip what the outputs hold (driver), run the rest on Ray; one Result per job."""
        todo: dict[str, tuple[Job, str]] = {}
        items = []
        t0 = time.perf_counter()
        for job in jobs:
            try:
                check_id(job.id)
                digest, _ = self.hash_cache.cached(job.path)
            except Exception as exc:  # noqa: BLE001 - the file fails alone, as locally
                yield Result(job, "failed", error=failure_reason(exc))
                continue
            known = [k.get(job.id, "") for k in self.known]
            if digest is not None and all(k == digest for k in known):
                yield Result(job, "skipped", digest)
                continue
            todo[job.id] = (job, digest or "")
            items.append({"id": job.id, "path": os.fspath(job.path), "hash": digest or "",
                          "known": json.dumps(known)})
        self._add("hash", time.perf_counter() - t0)
        if not items:
            return  # nothing to embed: Ray is not even started
        started = self._connect()
        try:
            rows = self._dataset(items).iter_rows()
            try:
                yield from self._results(rows, todo)
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
        finally:
            if started:
                import ray

                ray.shutdown()

    def _connect(self) -> bool:
        """Attach to this process's Ray instance, else ``ray.init(address=run.ray_address)``."""
        import ray

        t0 = time.perf_counter()
        started = False
        if not ray.is_initialized():
            import signal
            import threading

            main = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGTERM) if main else None
            ray.init(address=self.opts.address, logging_level=logging.WARNING,
                     configure_logging=True, log_to_driver=True)
            if previous is not None:  # ray.init installs its own: keep the run's graceful stop
                signal.signal(signal.SIGTERM, previous)
            started = True
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the runner's own progress bar counts files
        ctx.execution_options.preserve_order = False
        if log.getEffectiveLevel() > logging.INFO:
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        resources = ray.cluster_resources()
        self.details.update(
            started_local_instance=started,
            nodes=len([n for n in ray.nodes() if n.get("Alive")]),
            cluster_cpus=resources.get("CPU", 0.0),
            cluster_gpus=resources.get("GPU", 0.0),
        )
        self._add("ray_start", time.perf_counter() - t0)
        try:
            self._check_fits(resources)
        except BaseException:
            if started:
                ray.shutdown()
            raise
        return started

    def _check_fits(self, resources: Mapping[str, float]) -> None:
        """Ray Data waits forever for resources the cluster does not have: refuse instead."""
        from ..errors import ConfigError

        opts = self.opts
        smallest = opts.actors if isinstance(opts.actors, int) else opts.actors[0]
        n = len(self.embeddings)
        sink_actors = smallest if self.remote_sinks else 0
        cpus = n * smallest * opts.num_cpus + opts.decode_cpus + sink_actors * _SINK_CPUS
        gpus = n * smallest * opts.num_gpus
        have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if cpus > have_cpu + 1e-9 or gpus > have_gpu + 1e-9:
            raise ConfigError(
                f"the Ray cluster has {have_cpu:g} CPUs and {have_gpu:g} GPUs, but this run needs "
                f"{cpus:g} CPUs and {gpus:g} GPUs at least: {n} embedding(s) x {smallest} encoder "
                f"actor(s) x (run.ray_num_cpus={opts.num_cpus:g}, run.ray_num_gpus={opts.num_gpus:g}) "
                f"+ one decode task (run.ray_decode_cpus={opts.decode_cpus:g}). Lower them (fractions "
                f"are fine, e.g. run.ray_num_cpus=0.5), or add nodes to the cluster."
            )

    def _dataset(self, items: list[dict[str, Any]]) -> Any:
        import ray
        from ray.data import ActorPoolStrategy

        opts = self.opts
        most = opts.actors if isinstance(opts.actors, int) else opts.actors[1]
        # Enough blocks that every actor gets work even on a small run.
        blocks = max(math.ceil(len(items) / opts.files_per_task), min(len(items), 2 * most), 1)
        ds = ray.data.from_items(items, override_num_blocks=blocks)
        ds = ds.flat_map(_decode_file, fn_kwargs={"rates": self.rates}, num_cpus=opts.decode_cpus)
        pool = (ActorPoolStrategy(size=opts.actors) if isinstance(opts.actors, int)
                else ActorPoolStrategy(min_size=opts.actors[0], max_size=opts.actors[1]))
        threads = self.cfg.torch_threads or max(1, int(round(opts.num_cpus)))
        for e, prep in enumerate(self.embeddings):
            later = {p.geometry.sample_rate for p in self.embeddings[e + 1:]}
            drop = [f"audio_{prep.geometry.sample_rate}"] if prep.geometry.sample_rate not in later else []
            ds = ds.map_batches(
                _EncodeStage,
                fn_constructor_kwargs={"prep": prep, "e": e, "batch_size": self.cfg.batch_size,
                                       "torch_threads": threads, "drop": drop},
                batch_size=opts.tracks_per_batch,
                batch_format="numpy",
                compute=pool,
                num_cpus=opts.num_cpus,
                num_gpus=opts.num_gpus,
            )
        if self.remote_sinks:
            ds = ds.map_batches(
                _SinkStage,
                fn_constructor_kwargs={"sinks": self.remote_sinks,
                                       "preps": dict(enumerate(self.embeddings)),
                                       "output_dir": self.output_dir},
                batch_size=self.cfg.flush_every_tracks,
                batch_format="numpy",
                compute=pool,
                num_cpus=_SINK_CPUS,
            )
        return ds

    def _results(self, rows: Iterable[Mapping[str, Any]],
                 todo: dict[str, tuple[Job, str]]) -> Iterator[Result]:
        clock = time.perf_counter
        seen: set[str] = set()
        t_wait = clock()
        for row in rows:
            self._add("wait", clock() - t_wait)
            tid = str(row["id"])
            if tid in seen or tid not in todo:  # a retried block's rows arrive once, but be sure
                log.warning("ray engine: ignoring a second result for %s", tid)
                t_wait = clock()
                continue
            seen.add(tid)
            job, sent = todo[tid]
            yield self._result(row, job, sent)
            t_wait = clock()
        for tid in todo.keys() - seen:  # never expected: say so rather than lose a file
            yield Result(todo[tid][0], "failed", error="the Ray run returned no result for this file")

    def _result(self, row: Mapping[str, Any], job: Job, sent: str) -> Result:
        for key, value in row.items():
            if key.startswith("t_"):
                name = key[2:].split("_")[0]
                self._add(name, value)
        digest = str(row["hash"])
        if digest and digest != sent and int(row["size"]) >= 0:
            self.hash_cache.remember(job.path, row["size"], row["mtime_ns"], digest)
        if row.get("sink_error"):
            from ..errors import MusicembedError

            raise MusicembedError(str(row["sink_error"]))  # as a local run stops on it
        status = str(row["status"])
        if status == "skipped":
            return Result(job, "skipped", digest)
        if status == "failed":
            return Result(job, "failed", digest, error=str(row["error"]))
        res = Result(job, "ok", digest, metadata=json.loads(row["metadata"]),
                     seconds=float(row["seconds"]))
        needed = str(row["needed"])
        for e, prep in enumerate(self.embeddings):
            if needed[e] == "1":
                res.vectors[e] = np.array(row[f"vec_{e}"], dtype=np.float32)
                if prep.keep_frames:
                    res.frames[e] = np.array(row[f"frames_{e}"], dtype=np.float32)
        if "refused" in row:
            from ..outputs import Refusal

            res.refusals = [Refusal(**r) for r in json.loads(row["refused"])]
        return res
