"""``musicembed decode``: stored Music2Latent latents back to audio (WAV, one file per track).

Reads the output of a ``musicembed run`` that kept frames (HDF5 with
``exporters.hdf5.store_frames = True``, or safetensors with
``exporters.safetensors.store_frames = True``), checks from the stored space
that its frames are ``encoders.music2latent`` latents, loads the same weights
(model and commit recorded in the space, or ``--model``) and decodes every
track with the package's consistency decoder.
"""

from __future__ import annotations

import re
import time
from pathlib import Path, PurePosixPath
from typing import Any

import click

from musicembed_core.errors import ConfigError, MusicembedError


class DecodeError(MusicembedError):
    """The output cannot be decoded (not Music2Latent latents, no frames, ...)."""


def _safe_relpath(track_id: str) -> Path:
    """A relative output path for ``track_id`` (an id is usually the file's relative path):
    same folders, ``.wav`` suffix, nothing that climbs out of the output folder."""
    parts = [p for p in PurePosixPath(track_id.replace("\\", "/")).parts if p not in ("", ".", "..", "/")]
    parts = [re.sub(r"[\x00-\x1f:*?\"<>|]", "_", p) for p in parts] or ["track"]
    return Path(*parts).with_suffix(".wav")


def check_latent_space(space: Any, where: str) -> dict[str, Any]:
    """The encoder signature of ``space`` if its frames are Music2Latent latents; else a
    :class:`DecodeError` that says why and what to do."""
    enc = dict(space.encoder)
    if enc.get("name") != "music2latent":
        raise DecodeError(
            f"{where} holds {enc.get('name')!r} embeddings; `musicembed decode` decodes "
            "encoders.music2latent latents only"
        )
    if enc.get("variant") != "latents":
        raise DecodeError(
            f"{where} holds Music2Latent {enc.get('variant')!r} vectors: pre-bottleneck features "
            "cannot be decoded to audio (the decoder reads the 64-channel latents). Run again with "
            "encoders.music2latent.variant = 'latents' (gin file encoders/music2latent_latents.gin)."
        )
    return enc


@click.command("decode", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("latents", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the WAV files (one per track, named after the track id).")
@click.option("--id", "ids", multiple=True, metavar="ID",
              help="Decode only this track (repeatable). Default: every track in LATENTS.")
@click.option("--denoising-steps", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Consistency steps: 1 is the model's one-step decoding; more can sharpen detail.")
@click.option("--model", default=None,
              help="Checkpoint to decode with (repo id or folder). Default: the model and commit "
                   "recorded in LATENTS.")
@click.option("--revision", default=None, help="Revision of --model (default: main).")
@click.option("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HUB_CACHE).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps or auto.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the decoder's starting noise (same seed, same audio).")
@click.option("--max-seconds", default=60.0, show_default=True, type=click.FloatRange(1.0),
              help="Decode long tracks in chunks of this many seconds (memory).")
@click.option("--subtype", default="PCM_16", show_default=True,
              type=click.Choice(["PCM_16", "PCM_24", "FLOAT"], case_sensitive=False),
              help="WAV sample format.")
@click.option("--overwrite", is_flag=True, help="Replace WAV files that exist (default: skip them).")
def decode_command(latents: Path, output_dir: Path, ids: tuple[str, ...], denoising_steps: int,
                   model: str | None, revision: str | None, cache_dir: str | None, device: str,
                   seed: int, max_seconds: float, subtype: str, overwrite: bool) -> None:
    """Decode Music2Latent latents stored by `musicembed run` into WAV files.

    LATENTS is an output of a run with encoders.music2latent (variant 'latents') that
    kept its frames: an HDF5 file (exporters.hdf5.store_frames = True) or a
    safetensors folder (exporters.safetensors.store_frames = True). Each track becomes
    OUTPUT_DIR/<track id>.wav at the rate it was encoded at (44.1 or 48 kHz).

    \b
    Example:
      musicembed run --gin_file runs/music2latent.gin --gin_param 'run.source="~/Music"'
      musicembed decode musicembed-out/music2latent/music2latent.h5 -o decoded/

    One denoising step is the model's own one-step reconstruction. The noise the
    decoder starts from is seeded (--seed), so the same command writes the same audio.
    """
    from rich.console import Console

    console = Console(stderr=True)
    summary = decode_output(latents, output_dir, ids=ids, denoising_steps=denoising_steps, model=model,
                            revision=revision, cache_dir=cache_dir, device=device, seed=seed,
                            max_seconds=max_seconds, subtype=subtype.upper(), overwrite=overwrite,
                            console=console)
    line = (f"decoded {summary['decoded']} track(s), {summary['audio_seconds']:.1f} s of audio in "
            f"{summary['seconds']:.1f} s -> {output_dir}")
    if summary["skipped"]:
        line += f"; skipped {summary['skipped']} existing (--overwrite replaces them)"
    console.print(line, highlight=False, soft_wrap=True)
    for track_id, error in summary["failed"]:
        console.print(f"[red]failed[/red] {track_id}: {error}", highlight=False, soft_wrap=True)
    if summary["failed"]:
        raise SystemExit(1)


def decode_output(
    latents: Path,
    output_dir: Path,
    *,
    ids: tuple[str, ...] | list[str] = (),
    denoising_steps: int = 1,
    model: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    seed: int = 0,
    max_seconds: float = 60.0,
    subtype: str = "PCM_16",
    overwrite: bool = False,
    console: Any = None,
) -> dict[str, Any]:
    """Decode the tracks of a stored output; returns a summary (decoded, skipped, failed, seconds)."""
    from musicembed_core.stored import open_output

    start = time.perf_counter()
    with open_output(latents) as stored:
        return _decode_tracks(stored, latents, output_dir, start, ids=ids, denoising_steps=denoising_steps,
                              model=model, revision=revision, cache_dir=cache_dir, device=device, seed=seed,
                              max_seconds=max_seconds, subtype=subtype, overwrite=overwrite, console=console)


def _decode_tracks(stored: Any, latents: Path, output_dir: Path, start: float, *, ids: Any,
                   denoising_steps: int, model: str | None, revision: str | None, cache_dir: str | None,
                   device: str, seed: int, max_seconds: float, subtype: str, overwrite: bool,
                   console: Any) -> dict[str, Any]:
    import soundfile as sf
    import torch

    from musicembed_core.atomic import atomic_path
    from musicembed_core.hub import resolve_checkpoint, resolve_device

    from .model import CHECKPOINT_FILE, build_generator, decode_latents, read_checkpoint

    enc = check_latent_space(stored.space, str(latents))
    if not stored.has_frames:
        raise DecodeError(
            f"{latents} stores track vectors only, no latent frames. Run again with frames kept: "
            "--gin_param 'exporters.hdf5.store_frames = True' (or exporters.safetensors.store_frames)."
        )
    wanted = list(ids) if ids else list(stored.ids)
    unknown = [i for i in wanted if i not in set(stored.ids)]
    if unknown:
        raise ConfigError(f"--id {unknown[0]!r} is not in {latents} ({len(stored.ids)} tracks)")
    rate = int(enc.get("sample_rate", 44100))

    if model is None:  # the weights the latents were made with
        model = enc.get("model") or "SonyCSLParis/music2latent"
        weights = str(enc.get("weights") or "")
        local = Path(model).expanduser().is_dir()
        revision = None if local or weights.startswith("sha256:") else (weights or enc.get("revision"))
    ckpt = resolve_checkpoint(model, revision, cache_dir, files=(CHECKPOINT_FILE,))
    where = f"{model} ({ckpt.file(CHECKPOINT_FILE)})"
    dev = resolve_device(device)
    generator = build_generator(read_checkpoint(ckpt.file(CHECKPOINT_FILE)), where).to(dev)

    summary: dict[str, Any] = {"decoded": 0, "skipped": 0, "failed": [], "audio_seconds": 0.0}
    progress = None
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn("decode"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            TextColumn("{task.description}"), console=console, transient=True)
        progress.start()
        task = progress.add_task("", total=len(wanted))
    try:
        for track_id, frames in stored.iter_frames(wanted):
            target = Path(output_dir) / _safe_relpath(track_id)
            try:
                if target.exists() and not overwrite:
                    summary["skipped"] += 1
                    continue
                if frames.ndim != 3 or frames.shape[0] != 1 or frames.shape[2] != 64:
                    raise DecodeError(f"stored frames have shape {list(frames.shape)}, expected [1, F, 64]")
                if frames.shape[1] == 0:
                    raise DecodeError("no latent frames stored (track shorter than 0.13 s)")
                torch.manual_seed(seed)
                wave = decode_latents(generator, torch.from_numpy(frames[0]), denoising_steps, dev,
                                      max_seconds, rate)
                target.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(target) as tmp:
                    sf.write(tmp, wave.numpy(), rate, subtype=subtype, format="WAV")
                summary["decoded"] += 1
                summary["audio_seconds"] += wave.shape[0] / rate
            except Exception as exc:  # noqa: BLE001 - one bad track never stops the others
                summary["failed"].append((track_id, f"{type(exc).__name__}: {exc}"))
            finally:
                if progress is not None:
                    progress.update(task, advance=1, description=track_id[-40:])
    finally:
        if progress is not None:
            progress.stop()
    summary["seconds"] = time.perf_counter() - start
    return summary
