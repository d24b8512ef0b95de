"""Static sharding without Ray: ``musicembed run --shard-index I --num-shards N`` and
``musicembed merge``.

The partition: a track belongs to shard ``int(sha256(id)[:8 bytes], big-endian) % N``,
where ``id`` is the track id (its path relative to ``run.source``, UTF-8). It depends only
on the id and ``N``: every machine of a SLURM array computes the same partition from the
same folder, a file keeps its shard when others are added, and the shards are disjoint
and cover the library.

Shard ``I`` writes into ``<run.output_dir>/shard-<I>-of-<N>/`` (its own outputs, hash
cache, summary and lock), so shards never share a file. ``musicembed merge`` combines the
shards' HDF5 files and safetensors folders into one output each, written to a temporary
name and renamed into place; by default into ``<run.output_dir>`` itself, where an
unsharded run of the same gin files would have written them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TypeVar

from .errors import MusicembedError

SHARD_DIR_RE = re.compile(r"^shard-(\d+)-of-(\d+)$")
MERGE_SUMMARY = "merge.json"

J = TypeVar("J")


def shard_of(track_id: str, num_shards: int) -> int:
    """The shard of ``track_id`` among ``num_shards`` (see the module doc)."""
    digest = hashlib.sha256(track_id.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(jobs: Sequence[J], index: int, num_shards: int) -> list[J]:
    """The jobs (anything with an ``id``) of shard ``index``, in their order."""
    return [j for j in jobs if shard_of(j.id, num_shards) == index]  # type: ignore[attr-defined]


def shard_dir(output_dir: str | os.PathLike, index: int, num_shards: int) -> Path:
    """Where shard ``index`` of ``num_shards`` writes (``output_dir`` itself when unsharded)."""
    base = Path(output_dir)
    return base if num_shards <= 1 else base / f"shard-{index}-of-{num_shards}"


def discover_shards(output_dir: str | os.PathLike) -> list[Path]:
    """Every ``shard-I-of-N`` folder under ``output_dir``; all N of them, or an error
    naming the ones missing."""
    base = Path(output_dir)
    found: dict[int, dict[int, Path]] = {}
    if base.is_dir():
        for p in base.iterdir():
            m = SHARD_DIR_RE.match(p.name)
            if m and p.is_dir():
                found.setdefault(int(m.group(2)), {})[int(m.group(1))] = p
    if not found:
        raise MusicembedError(
            f"no shard folders (shard-I-of-N) under {base}: run `musicembed run --shard-index I "
            f"--num-shards N` with the same gin files first, or pass the shard folders to merge"
        )
    if len(found) > 1:
        raise MusicembedError(
            f"{base} holds shards of several partitions ({', '.join(f'N={n}' for n in sorted(found))}); "
            f"pass the folders of one of them to `musicembed merge` explicitly"
        )
    (n, shards), = found.items()
    missing = [i for i in range(n) if i not in shards]
    if missing:
        raise MusicembedError(
            f"shard(s) {', '.join(map(str, missing))} of {n} missing under {base}: run "
            + "; ".join(f"`musicembed run ... --shard-index {i} --num-shards {n}`" for i in missing)
            + " first"
        )
    return [shards[i] for i in range(n)]


# --------------------------------------------------------------------------- merge


@dataclass
class MergedOutput:
    name: str
    format: str
    path: str
    tracks: int
    sources: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    """Ids found in several shards with the same content hash (stored once)."""


def _outputs_in(folder: Path) -> dict[str, str]:
    """``{name: format}`` of the finalised outputs in a shard folder; an unfinished one is an error."""
    from .builtins.safetensors_export import INDEX

    names: dict[str, str] = {}
    for p in sorted(folder.iterdir()):
        if p.name.endswith(".h5.pending"):
            raise MusicembedError(
                f"{p} holds records of a run that did not finish: rerun that shard (the same "
                f"`musicembed run ... --shard-index` command) so it completes, then merge"
            )
        if p.is_file() and p.suffix == ".h5":
            names[p.name] = "hdf5"
        elif p.is_dir() and (p / INDEX).is_file():
            names[p.name] = "safetensors"
    return names


def merge_shards(shards: Sequence[str | os.PathLike], dest: str | os.PathLike,
                 force: bool = False) -> list[MergedOutput]:
    """Combine the same-named outputs of ``shards`` into ``dest`` (see the module doc).

    Refuses outputs of different spaces; an id in several shards is kept once when its
    content hash agrees (the first shard in path order wins) and is an error naming it
    otherwise. Each merged output is written under a temporary name and renamed into
    place; an existing output in ``dest`` is refused unless ``force``.
    """
    folders = sorted({Path(s).resolve() for s in shards}, key=str)
    if not folders:
        raise MusicembedError("nothing to merge: give the shard folders (or --gin_file to find them)")
    dest = Path(dest)
    per_shard = {}
    for f in folders:
        if not f.is_dir():
            raise MusicembedError(f"{f} is not a folder of run outputs (a shard's run.output_dir)")
        per_shard[f] = _outputs_in(f)
    names = sorted({n for outs in per_shard.values() for n in outs})
    if not names:
        raise MusicembedError(
            f"no HDF5 or safetensors outputs in {', '.join(map(str, folders))}: merge combines "
            f"exporters.hdf5 and exporters.safetensors outputs of `musicembed run --shard-index`"
        )
    for name in names:
        formats = {outs[name] for outs in per_shard.values() if name in outs}
        if len(formats) > 1:
            raise MusicembedError(f"{name} is an HDF5 file in some shards and a folder in others")
        target = dest / name
        if target.exists() and not force:
            raise MusicembedError(
                f"{target} exists already: merge into another -o folder, or pass --force to "
                f"replace it"
            )
    dest.mkdir(parents=True, exist_ok=True)
    merged = [_merge_one(name, [f for f in folders if name in per_shard[f]], dest)
              for name in names]
    _merge_hash_caches(folders, dest)
    from .atomic import atomic_write_text

    atomic_write_text(dest / MERGE_SUMMARY, json.dumps(
        {"shards": [str(f) for f in folders], "outputs": [m.__dict__ for m in merged]}, indent=2))
    return merged


def _merge_one(name: str, folders: list[Path], dest: Path) -> MergedOutput:
    from .stored import open_output

    opened = []
    try:
        for f in folders:
            opened.append(open_output(f / name))
        first = opened[0]
        for out in opened[1:]:
            if out.space.hash != first.space.hash:
                raise MusicembedError(
                    f"cannot merge {out.path} into {first.path}: they hold different embedding "
                    f"spaces ({out.space.hash} vs {first.space.hash}); shards of one run share "
                    f"its gin files: rerun the odd shard with the same configuration"
                )
            if out.frame_shape != first.frame_shape and out.frame_shape and first.frame_shape:
                raise MusicembedError(
                    f"cannot merge {out.path} into {first.path}: frames of shape "
                    f"{list(out.frame_shape)} vs {list(first.frame_shape)}"
                )
        # Who provides each id (first shard in path order); conflicting content is an error.
        owner: dict[str, tuple[int, str]] = {}
        duplicates = 0
        for si, out in enumerate(opened):
            for tid in out.ids:
                digest = out.content_hash(tid)
                prev = owner.get(tid)
                if prev is None:
                    owner[tid] = (si, digest)
                elif prev[1] == digest:
                    duplicates += 1
                else:
                    raise MusicembedError(
                        f"track {tid!r} is in {opened[prev[0]].path} (content {prev[1]}) and in "
                        f"{out.path} (content {digest}): the file changed between the shards' runs. "
                        f"Rerun the shard that holds the old content, then merge again"
                    )
        final = dest / name
        tmp = dest / f".{name}.merge-tmp-{os.getpid()}"
        _remove(tmp)
        try:
            _write(tmp, first, opened, owner)
            _replace(tmp, final)
        finally:
            _remove(tmp)
            _remove(Path(str(tmp) + ".pending"))
        return MergedOutput(
            name=name, format=first.format, path=str(final), tracks=len(owner), duplicates=duplicates,
            sources=[{"path": o.path, "tracks": len(o.ids)} for o in opened],
        )
    finally:
        for out in opened:
            out.close()


def _write(tmp: Path, first: Any, opened: list[Any], owner: dict[str, tuple[int, str]]) -> None:
    """Every owned track through the exporter itself, so the file is what a run writes."""
    from .components import Record

    frames = first.has_frames
    if first.format == "hdf5":
        import h5py

        from .builtins.hdf5 import Hdf5Exporter

        with h5py.File(first.path, "r") as f:
            compression = f["vectors"].compression
        exporter: Any = Hdf5Exporter(store_frames=frames, compression=compression,
                                     checkpoint_every=4096)
    else:
        from .builtins.safetensors_export import SafetensorsExporter

        exporter = SafetensorsExporter(store_frames=frames)
    exporter.open(str(tmp), first.space)
    try:
        for si, out in enumerate(opened):
            vectors = out.vectors()
            batch = []
            for row, tid in enumerate(out.ids):
                if owner[tid][0] != si:
                    continue
                batch.append(Record(
                    id=tid, vector=vectors[row], content_hash=owner[tid][1],
                    metadata=out.metadata(tid), frames=out.frames(tid) if frames else None,
                ))
                if len(batch) >= 1024:
                    exporter.write(batch)
                    batch = []
            if batch:
                exporter.write(batch)
            del vectors
    except BaseException:
        with contextlib.suppress(Exception):
            exporter.close()
        raise
    exporter.close()


def _replace(tmp: Path, final: Path) -> None:
    """Move the finished output into place: a file atomically; a folder by two renames."""
    from .atomic import fsync_dir

    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.merge-old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)
    fsync_dir(str(final.parent))


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _merge_hash_caches(folders: Sequence[Path], dest: Path) -> None:
    """The shards' hash caches in ``dest``: an unsharded rerun there stats instead of hashing."""
    from .atomic import atomic_write_text
    from .pipeline import HASH_CACHE

    entries: dict[str, Any] = {}
    for f in [dest, *folders]:
        with contextlib.suppress(OSError, ValueError):
            entries.update(json.loads((f / HASH_CACHE).read_text()))
    if entries:
        atomic_write_text(dest / HASH_CACHE, json.dumps(entries))
