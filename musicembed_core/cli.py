"""The ``musicembed`` command line.

``musicembed plugins`` stays fast: it imports neither torch nor gin.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from .errors import MusicembedError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _console(stderr: bool = True) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


class _LazyRichHandler(logging.Handler):
    """Logs through rich, imported on the first record: most commands log nothing,
    and rich's handler and console cost ~30 ms of every start-up."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.logging import RichHandler

            self._rich = RichHandler(console=_console(), show_time=False, show_path=False)
            self._rich.setFormatter(self.formatter)
        self._rich.emit(record)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, handlers=[_LazyRichHandler()], format="%(message)s",
                        force=True)


class MusicembedGroup(click.Group):
    """The core commands plus those plugins add through ``register_commands``.

    Plugin commands are added on first need (a name that is not a core command,
    the command list, ``--help``), so core commands do not wait for them. Which
    plugin commands were refused (a core command's name) is recorded on the
    plugin and shown by ``musicembed plugins``.
    """

    def load_plugin_commands(self) -> None:
        if getattr(self, "_plugin_commands", None) is not None:
            return
        from .plugins import get_manager

        if not logging.getLogger().handlers:  # resolved before main() set up logging
            _setup_logging(0)
        self._core_commands = set(self.commands)
        self._plugin_commands = get_manager().plugin_commands(self._core_commands)
        for name, cmd in self._plugin_commands.items():
            self.add_command(cmd, name)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self.load_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        return super().list_commands(ctx)


@click.group(cls=MusicembedGroup, context_settings=CONTEXT)
@click.version_option(package_name="musicembed")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Turn a music library into embeddings and make it searchable.

    \b
    Quick start (no download, built-in `logmel` encoder):
      musicembed examples examples/audio
      musicembed run --gin_file runs/quickstart.gin

    Components come from plugins (`musicembed plugins` lists them); runs are
    wired from gin files shipped with musicembed and its plugins
    (`musicembed gin list` lists them).
    """
    _setup_logging(verbose)


def gin_options(fn: Any) -> Any:
    fn = click.option(
        "--gin_param",
        "--gin-param",
        "gin_params",
        multiple=True,
        metavar="BINDING",
        help="A gin binding that overrides the files, e.g. 'run.source=\"~/Music\"'. Repeatable.",
    )(fn)
    fn = click.option(
        "--gin_file",
        "--gin-file",
        "gin_files",
        multiple=True,
        metavar="FILE",
        help="A gin file: a path, or a name on the gin search path such as runs/quickstart.gin "
        "(see `musicembed gin list`). Repeatable; later files override earlier ones.",
    )(fn)
    return fn


def _run_config(gin_files: tuple[str, ...], gin_params: tuple[str, ...]) -> Any:
    """Parse the gin files/bindings and build the run, with errors that name the binding."""
    from . import ginconfig
    from .errors import ConfigError
    from .plugins import get_manager
    from .runconfig import run_config

    if not gin_files and not gin_params:
        raise click.UsageError("give at least one --gin_file (e.g. runs/quickstart.gin)")
    ginconfig.parse(gin_files, gin_params)
    try:
        return run_config()
    except (ValueError, TypeError, RuntimeError) as exc:
        # RuntimeError: gin's "Required bindings for `run` not provided" (e.g. an empty file)
        raise ConfigError(ginconfig.explain(exc, get_manager(), gin_files)) from exc


def _use_projector(cfg: Any, checkpoint: str | None, embedding: str | None) -> None:
    """``--projector DIR``: the chosen embedding's text projector becomes
    ``projectors.trained(checkpoint=DIR)`` (no gin editing needed)."""
    if checkpoint is None:
        return
    from .projection.projector import TrainedProjector
    from .search import _pick

    spec = _pick(cfg.embeddings, embedding, "embedding", "--embedding")
    spec.projector = TrainedProjector(checkpoint=checkpoint)


PROJECTOR_HELP = ("A projector checkpoint folder from `musicembed train-projector` (e.g. OUT/best_r1): "
                  "replaces the embedding's projector.")


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--fail-on-empty", is_flag=True,
              help="Exit with status 3 when the source holds no audio files (default: warn, exit 0).")
@click.option("--shard-index", type=click.IntRange(min=0), metavar="I",
              help="Embed only shard I (0-based) of --num-shards: a stable partition by track id, "
              "written to <output_dir>/shard-I-of-N (combine them with `musicembed merge`).")
@click.option("--num-shards", type=click.IntRange(min=1), metavar="N",
              help="How many shards the library is split into (with --shard-index).")
def run(gin_files: tuple[str, ...], gin_params: tuple[str, ...], progress: bool, as_json: bool,
        fail_on_empty: bool, shard_index: int | None, num_shards: int | None) -> None:
    """Embed every audio file of a folder, as configured by gin.

    \b
    Decodes wav, flac, ogg, opus, mp3, m4a/aac (recursively), resamples once per
    encoder rate, chunks at each encoder's window, pools frames with the
    enricher chain and writes vectors to the run's exporters and sinks.
    Re-running skips files already embedded in the same embedding space with
    unchanged content; a killed run resumes where it stopped.

    \b
    Writes into run.output_dir: the vectors (e.g. <embedding>.h5),
    summary.json, operative_config.gin and plugins.json.

    \b
    Exit status: 0 done (failed files are listed in the summary), 2 bad
    configuration, 3 no audio found with --fail-on-empty, 130 interrupted.

    \b
    Example:
      musicembed run --gin_file runs/quickstart.gin \\
          --gin_param 'run.source="/path/to/Music"'

    \b
    On a Ray cluster: --gin_param 'run.engine="ray"' (docs/distributed.md).
    """
    from . import ginconfig
    from .plugins import get_manager
    from .runner import execute, print_summary

    if (shard_index is None) != (num_shards is None):
        raise click.UsageError("give --shard-index and --num-shards together")
    if num_shards is not None:
        if shard_index >= num_shards:
            raise click.UsageError(f"--shard-index {shard_index} must be below --num-shards {num_shards}")
        gin_params = (*gin_params, f"run.shard_index = {shard_index}", f"run.num_shards = {num_shards}")
    console = _console()
    cfg = _run_config(gin_files, gin_params)
    plugins = [p.as_dict() for p in get_manager().plugins.values()]
    # Every configurable has been called by run_config(): the operative config is complete.
    summary = execute(
        cfg,
        console=console,
        show_progress=progress,
        operative_config=ginconfig.operative_config(),
        plugins=plugins,
    )
    print_summary(summary, console)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), indent=2))
    if summary.interrupted:
        sys.exit(130)
    if fail_on_empty and summary.files_total == 0:
        sys.exit(3)


@main.command(context_settings=CONTEXT)
@click.argument("shards", nargs=-1, type=click.Path(file_okay=False))
@gin_options
@click.option("-o", "--output", "output", type=click.Path(file_okay=False), metavar="FOLDER",
              help="Where the merged outputs go (default with --gin_file: the run's output_dir).")
@click.option("--force", is_flag=True, help="Replace merged outputs that exist already.")
@click.option("--json", "as_json", is_flag=True, help="Print what was merged as JSON on stdout.")
def merge(shards: tuple[str, ...], gin_files: tuple[str, ...], gin_params: tuple[str, ...],
          output: str | None, force: bool, as_json: bool) -> None:
    """Combine the outputs of sharded runs (`run --shard-index I --num-shards N`) into one.

    \b
    Each HDF5 file / safetensors folder of the same name across the shard folders
    becomes one output (same ids, vectors, space as an unsharded run), written under
    a temporary name and renamed into place. Different spaces are refused; an id in
    several shards is kept once when its content agrees, an error otherwise.

    \b
    Examples:
      musicembed merge out/shard-0-of-3 out/shard-1-of-3 out/shard-2-of-3 -o out
      musicembed merge --gin_file RUN.gin        # finds OUTPUT_DIR/shard-*-of-N
    """
    from .shards import discover_shards, merge_shards

    folders = list(shards)
    if gin_files or gin_params:
        cfg = _run_config(gin_files, gin_params)
        if not folders:
            folders = [str(p) for p in discover_shards(cfg.output_dir)]
        output = output or cfg.output_dir
    if not folders:
        raise click.UsageError("give the shard folders, or --gin_file RUN.gin to find them")
    if output is None:
        raise click.UsageError("give -o FOLDER (where the merged outputs go)")
    merged = merge_shards(folders, output, force=force)
    if as_json:
        click.echo(json.dumps([m.__dict__ for m in merged], indent=2))
        return
    console = _console(stderr=False)
    for m in merged:
        dup = f", {m.duplicates} duplicate(s) stored once" if m.duplicates else ""
        console.print(f"{m.path}: {m.tracks} tracks from {len(m.sources)} shard(s){dup}")


@main.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-v", "--verbose", is_flag=True, help="Also list each component's parameters.")
def plugins(as_json: bool, verbose: bool) -> None:
    """List installed plugins: version, hooks, components, commands, load errors.

    \b
    Environment:
      MUSICEMBED_LOAD_PLUGINS=a,b      load only these plugins ('' for none)
      MUSICEMBED_DISABLED_PLUGINS=a,b  do not load these (e.g. to choose between
                                       two plugins that register one name)
      MUSICEMBED_STRICT_PLUGINS=1      fail on the first plugin error
    """
    from .plugins import get_manager

    manager = get_manager()
    main.load_plugin_commands()  # records commands refused for clashing with a core one
    data = [p.as_dict() for p in manager.plugins.values()]
    if verbose or as_json:
        from .components import constructor_params

        for d in data:
            d["parameters"] = {
                f"{c.kind}.{c.name}": {
                    n: (v if isinstance(v, (str, int, float, bool, type(None))) else repr(v))
                    for n, v in constructor_params(c.cls)
                }
                for c in manager.all_components()
                if c.plugin == d["name"]
            }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    table = Table(title="musicembed plugins", title_justify="left")
    for col in ("plugin", "distribution", "version", "hooks", "components", "error"):
        table.add_column(col, overflow="fold")
    from rich.markup import escape

    for d in data:
        comps = [f"{k}: {', '.join(v)}" for k, v in d["components"].items()]
        if d["commands"]:
            comps.append(f"commands: {', '.join(d['commands'])}")
        hooks = "\n".join(h.removeprefix("register_") for h in d["hooks"])
        problems = [f"[red]{escape(d['error'])}[/red]"] if d["error"] else []
        problems += [f"[yellow]{escape(r)}[/yellow]" for r in d["refused"]]
        if d["disabled"]:
            problems.append("[dim]disabled (MUSICEMBED_DISABLED_PLUGINS)[/dim]")
        table.add_row(
            d["name"],
            d["distribution"] or "",
            d["version"] or "",
            hooks,
            escape("\n".join(comps)),
            "\n".join(problems),
        )
    from rich.console import Console

    console = Console()
    console.print(table)
    if verbose:
        for d in data:
            for comp, params in d["parameters"].items():
                args = ", ".join(f"{k}={v!r}" for k, v in params.items())
                console.print(f"[bold]{comp}[/bold]({args})")


@main.command(context_settings=CONTEXT)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--seconds", default=8.0, show_default=True, help="Length of each clip.")
@click.option("--captioned", default=0, metavar="N", type=click.IntRange(min=0),
              help="Also write N captioned clips (instrument, register, tempo, drums) with "
              "captions.jsonl and labels.csv into FOLDER/captioned, for train-projector and evaluate.")
@click.option("--captioned-seconds", default=4.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Length of each captioned clip.")
def examples(folder: str, seconds: float, captioned: int, captioned_seconds: float) -> None:
    """Write a small generated example library (several formats, no download)."""
    from .examples import CAPTIONS_FILE, make_captioned_set, make_example_set

    paths = make_example_set(folder, seconds=seconds)
    for p in paths:
        click.echo(str(p))
    _console().print(f"wrote {len(paths)} example clips to {folder}")
    if captioned:
        target = os.path.join(folder, "captioned")
        make_captioned_set(target, count=captioned, seconds=captioned_seconds)
        click.echo(os.path.join(target, CAPTIONS_FILE))
        _console().print(f"wrote {captioned} captioned clips, {CAPTIONS_FILE} and labels.csv to {target}")


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--audio", metavar="FILE", help="Find tracks that sound like this audio file.")
@click.option("--id", "track_id", metavar="TRACK_ID",
              help="More like this stored track (its id: path relative to run.source).")
@click.option("--text", metavar="TEXT",
              help="Describe the music; needs a text projector into the run's embedding space.")
@click.option("-k", "k", default=10, show_default=True, help="How many tracks to return.")
@click.option("--filter", "filter_expr", metavar="EXPR",
              help="Metadata filter in the sink's syntax, e.g. 'duration > 60'.")
@click.option("--embedding", metavar="NAME", help="Which embedding of the run (if it has several).")
@click.option("--sink", "sink_name", metavar="NAME", help="Which sink of the run (if it has several).")
@click.option("--projector", "projector_dir", metavar="CHECKPOINT", help=PROJECTOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON on stdout.")
def search(gin_files: tuple[str, ...], gin_params: tuple[str, ...], audio: str | None,
           track_id: str | None, text: str | None, k: int, filter_expr: str | None,
           embedding: str | None, sink_name: str | None, projector_dir: str | None,
           as_json: bool) -> None:
    """Search the run's sink for the nearest tracks.

    \b
    Use the same gin files as the `musicembed run` that indexed the library:
    the query is embedded by the same encoder and enricher chain (same decode,
    resample, chunking and pooling), and a sink written in another embedding
    space is refused.

    \b
    Examples:
      musicembed search --gin_file runs/quickstart_faiss.gin --audio song.mp3 -k 10
      musicembed search --gin_file runs/quickstart_faiss.gin --id 'jazz/b.flac' --json
      musicembed search --gin_file runs/quickstart_milvus.gin --audio song.mp3 \\
          --filter 'duration > 60'
      musicembed search --gin_file my_run.gin --projector proj/best_r1 --text 'calm piano'
    """
    from .search import Query, print_result
    from .search import search as run_search

    cfg = _run_config(gin_files, gin_params)
    _use_projector(cfg, projector_dir, embedding)
    result = run_search(
        cfg,
        Query(audio=audio, track_id=track_id, text=text, k=k, filter=filter_expr),
        embedding=embedding,
        sink_name=sink_name,
    )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print_result(result, _console(stderr=False))


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--labels", metavar="A,B,C", help="Comma-separated labels, e.g. 'jazz,rock,ambient'.")
@click.option("--labels-file", metavar="FILE",
              help="A text file with one label per line (blank lines and '#' comments skipped).")
@click.option("--template", default="{label}", show_default=True, metavar="TEXT",
              help="Prompt embedded for each label; {label} is replaced, e.g. '{label} music'.")
@click.option("--top-k", "top_k", default=3, show_default=True, help="Tags kept per track.")
@click.option("--threshold", type=float, metavar="SCORE",
              help="Keep only tags scoring at least this cosine similarity (-1..1).")
@click.option("--force", is_flag=True,
              help="Tag again tracks already tagged with the same labels, template, projector, "
              "--top-k and --threshold (default: skip them).")
@click.option("--embedding", metavar="NAME", help="Which embedding of the run (if it has several).")
@click.option("--sink", "sink_name", metavar="NAME", help="Which sink of the run (if it has several).")
@click.option("--no-sink", is_flag=True,
              help="Leave the sink alone: read the run's HDF5/safetensors output, write the files only.")
@click.option("--csv", "csv_path", metavar="FILE",
              help="CSV to write (id,path,rank,label,score) [default: <run.output_dir>/tags/<embedding>.csv].")
@click.option("--json-file", "json_path", metavar="FILE",
              help="JSON to write [default: <run.output_dir>/tags/<embedding>.json].")
@click.option("--projector", "projector_dir", metavar="CHECKPOINT", help=PROJECTOR_HELP)
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the settings, summary and every track's tags as JSON on stdout.")
def tag(gin_files: tuple[str, ...], gin_params: tuple[str, ...], labels: str | None,
        labels_file: str | None, template: str, top_k: int, threshold: float | None, force: bool,
        embedding: str | None, sink_name: str | None, no_sink: bool, csv_path: str | None,
        json_path: str | None, projector_dir: str | None, progress: bool, as_json: bool) -> None:
    """Zero-shot tags for every stored track, from the embedding's text projector.

    \b
    Each label (through --template) is embedded by the text projector bound to
    the run's embedding (embedding.projector: any space that has one, not only
    CLAP) and every stored track is scored against it (cosine similarity).
    Each track's --top-k labels at or above --threshold are written, best
    first, to the CSV and JSON files and into the sink's metadata (each record
    upserted again with its stored vector), where `musicembed search --filter`
    reads them: meta["tag"] (best label), meta["tags"] (labels, best first),
    meta["tag_scores"]["LABEL"] (score of each tag). Without a sink (or with
    --no-sink) the tracks are read from the run's HDF5/safetensors output.

    \b
    Use the same gin files as the `musicembed run` that stored the library.
    Tracks already tagged with the same settings are skipped unless --force.

    \b
    Examples:
      musicembed tag --gin_file runs/quickstart_faiss.gin --labels 'jazz,rock,ambient' \\
          --gin_param 'embedding.projector=@projectors.NAME()' --template '{label} music'
      musicembed tag --gin_file my_run.gin --labels-file tags.txt --top-k 5 --threshold 0.2 --json
      musicembed tag --gin_file my_run.gin --projector proj/best_r1 --labels 'jazz,rock'
      musicembed search --gin_file my_run.gin --text 'calm piano' --filter 'meta["tag"] == "ambient"'
    """
    from .tagging import TagRequest, parse_labels, print_summary
    from .tagging import tag as run_tag

    req = TagRequest(labels=parse_labels(labels, labels_file), template=template, top_k=top_k,
                     threshold=threshold, force=force, use_sink=not no_sink, csv_path=csv_path,
                     json_path=json_path)
    cfg = _run_config(gin_files, gin_params)
    _use_projector(cfg, projector_dir, embedding)
    console = _console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]tagging"), BarColumn(), MofNCompleteColumn(), TextColumn("tracks"),
                  TimeElapsedColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task("tag", total=None)
        result = run_tag(cfg, req, embedding=embedding, sink_name=sink_name,
                         progress=lambda done, total: bar.update(task, completed=done, total=total))
    print_summary(result, console)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, ensure_ascii=False))


_CAPTION_FORMATS = ("auto", "jsonl", "csv", "musicbench", "musiccaps", "song_describer")
"""projection.captions.FORMATS (repeated here: the CLI imports no projection module at start-up)."""


@main.command("train-projector", context_settings=CONTEXT)
@gin_options
@click.option("--vectors", metavar="OUTPUT",
              help="The stored vectors: a run's HDF5 file or safetensors folder (instead of the "
              "run's --gin_file).")
@click.option("--captions", required=True, metavar="FILE",
              help="Captions joined to the stored tracks by id or path: JSONL/CSV (id or path, "
              "caption, alt_captions), MusicBench, MusicCaps or Song Describer files.")
@click.option("--captions-format", type=click.Choice(_CAPTION_FORMATS), default="auto",
              show_default=True, help="Layout of --captions (auto: detected from its columns).")
@click.option("-o", "--output", "outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for the checkpoints, logs, split and summary; rerunning the same "
              "command with it resumes the training.")
@click.option("--embedding", metavar="NAME", help="Which embedding of the run (if it has several).")
@click.option("--test-ids", metavar="FILE",
              help="Hold out these tracks for testing (one id or path per line); same as "
              "--gin_param 'train.test_ids=\"FILE\"'.")
@click.option("--restart", is_flag=True,
              help="Discard the training already in the output folder and start over.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print training_summary.json on stdout.")
def train_projector(gin_files: tuple[str, ...], gin_params: tuple[str, ...], vectors: str | None,
                    captions: str, captions_format: str, outdir: str, embedding: str | None,
                    test_ids: str | None, restart: bool, progress: bool, as_json: bool) -> None:
    """Train a text projector into a run's embedding space (LoRA text encoder + head).

    \b
    Captions are paired with the stored vectors of their tracks (frozen, L2-
    normalised); a text encoder with LoRA adapters and a projection head learn,
    with symmetric InfoNCE, to put each caption near its track. The tracks are
    split by track into train/validation(/test), written to OUTDIR/split.json.
    Settings are gin: train/default.gin (all-MiniLM-L6-v2, bundled: no
    download) is used first; add train/quick.gin (small data),
    train/qwen3_embedding_0.6b.gin, train/qwen3_embedding_4b.gin or
    train/transformers_mean.gin, and --gin_param 'train.epochs=40' etc.

    \b
    OUTDIR: best_r1/ best_loss/ last/ (checkpoints for projectors.trained),
    train_log.jsonl, tensorboard/, split.json, config.json, training_summary.json.
    A killed training resumes when the same command is run again.
    Needs the extra: pip install 'musicembed[train]'.

    \b
    Examples:
      musicembed examples examples/audio --captioned 120
      musicembed run --gin_file runs/quickstart_faiss.gin \\
          --gin_param 'run.source="examples/audio/captioned"'
      musicembed train-projector --gin_file runs/quickstart_faiss.gin --gin_file train/quick.gin \\
          --gin_param 'run.source="examples/audio/captioned"' \\
          --captions examples/audio/captioned/captions.jsonl -o projector-out
      musicembed search --gin_file runs/quickstart_faiss.gin --projector projector-out/best_r1 \\
          --gin_param 'run.source="examples/audio/captioned"' --text 'slow calm piano'
      musicembed train-projector --vectors out/mert.h5 --captions musiccaps.csv \\
          --gin_file train/qwen3_embedding_0.6b.gin --gin_param 'train.test_fraction=0.1' -o qwen-mert
    """
    from .projection import require

    for module in ("torch", "transformers", "peft", "tensorboard"):
        require(module)
    from .projection.train import TrainRequest, configure
    from .projection.train import train_projector as run_training

    if vectors is None and not gin_files:
        raise click.UsageError(
            "give the vectors: --gin_file RUN.gin (the `musicembed run` that stored them) or "
            "--vectors OUT.h5")
    params = list(gin_params)
    if test_ids is not None:
        params.append(f"train.test_ids = {json.dumps(test_ids)}")
    run, spec, head, settings, operative = configure(gin_files, params, need_run=vectors is None)
    req = TrainRequest(captions=captions, outdir=outdir, captions_format=captions_format,
                       vectors=vectors, run=run, embedding=embedding, restart=restart,
                       operative_config=operative)
    result = run_training(req, spec, head, settings, console=_console(), show_progress=progress)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))


@main.command("eval-projector", context_settings=CONTEXT)
@click.argument("checkpoint", type=click.Path(file_okay=False))
@click.option("--captions", required=True, metavar="FILE",
              help="Captions of the tracks to rank (same formats as train-projector).")
@click.option("--captions-format", type=click.Choice(_CAPTION_FORMATS), default="auto",
              show_default=True, help="Layout of --captions.")
@gin_options
@click.option("--vectors", metavar="OUTPUT",
              help="The stored vectors (HDF5 file or safetensors folder) instead of the run's "
              "--gin_file [default: the vectors the checkpoint was trained on].")
@click.option("--embedding", metavar="NAME", help="Which embedding of the run (if it has several).")
@click.option("--split", "split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True,
              help="Rank all captioned tracks, or one split of the training (from its split.json).")
@click.option("--split-file", metavar="FILE",
              help="The split.json to read [default: the training's, beside the checkpoint].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1, ... or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def eval_projector(checkpoint: str, captions: str, captions_format: str, gin_files: tuple[str, ...],
                   gin_params: tuple[str, ...], vectors: str | None, embedding: str | None,
                   split: str, split_file: str | None, device: str, as_json: bool) -> None:
    """Retrieval metrics of a trained projector checkpoint on a captioned set.

    \b
    Text->audio (one query per caption, ranked against every track of the set)
    and audio->text (one query per track, ranked against every caption; a
    track's rank is that of its best caption): R@1, R@5, R@10, MRR, median
    rank, and the InfoNCE loss. The vectors must be in the checkpoint's
    embedding space (another space is refused, saying what differs).
    With the training's captions and --split test it reproduces the test
    metrics of training_summary.json.

    \b
    Examples:
      musicembed eval-projector projector-out/best_r1 \\
          --captions examples/audio/captioned/captions.jsonl --split test
      musicembed eval-projector projector-out/best_r1 --captions other_captions.jsonl \\
          --gin_file my_run.gin --json
    """
    from .projection.evaluate import evaluate_checkpoint, print_evaluation

    run = None
    if gin_files or gin_params:
        if vectors is not None:
            raise click.UsageError("give --vectors or the run's --gin_file, not both")
        from .projection.train import run_config_only

        run = run_config_only(gin_files, gin_params)
    result = evaluate_checkpoint(checkpoint, captions, captions_format, vectors=vectors, run=run,
                                 embedding=embedding, split=split, split_file=split_file,
                                 device=device)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        print_evaluation(result, _console(stderr=False))


@main.command("export-model", context_settings=CONTEXT)
@click.argument("spec", metavar="ENCODER_GIN_OR_NAME")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Model file to write (e.g. model.pt); the metadata goes beside it (model.json).")
@click.option("--format", "fmt", default="torchscript", show_default=True,
              help="Model format: a model exporter's name (exporters.<name>).")
@click.option("--pooling", metavar="NAME[,NAME...]",
              help="Pooling over frames: mean (default), std, max, iqr, robust_sigma, delta_mean, delta_std, "
              "or several statistics concatenated, e.g. mean,std. Replaces a run's pooling.")
@click.option("--layers", "--layer", "layers", metavar="SPEC",
              help="Encoder layers to pool: an index (-1 = last, the default), '3,5,7', '6:' "
              "or 'all'. Replaces a run's layer selection.")
@click.option("--embedding", metavar="NAME",
              help="Which embedding of a run gin file (or which encoder macro of a gin file).")
@gin_options
@click.option("--device", metavar="DEVICE", help="Device to export on (default cpu).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Encoder precision (default: the encoder's own, float32 for most).")
@click.option("--verify/--no-verify", default=None,
              help="Compare the saved model with the pipeline on a generated clip (default on).")
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON on stdout.")
def export_model(spec: str, output: str, fmt: str, pooling: str | None, layers: str | None,
                 embedding: str | None, gin_files: tuple[str, ...], gin_params: tuple[str, ...],
                 device: str | None, dtype: str | None, verify: bool | None,
                 as_json: bool) -> None:
    """Export an encoder + pooling as one model file for LibTorch (C++).

    \b
    The TorchScript module takes raw mono waves [B, T] (float32, at the
    encoder's sample rate) and returns L2-normalised track vectors [B, dim]:
    the same vectors `musicembed run` stores with that encoder and chain
    (same windowing, layer selection and pooling). ENCODER_GIN_OR_NAME is an
    encoder name, an encoder gin file (e.g. encoders/logmel.gin) or a run gin
    file, by path or by name (`musicembed gin list`).

    \b
    Examples:
      musicembed export-model logmel -o logmel.pt
      musicembed export-model music2vec --layers -1 --pooling mean -o music2vec.pt
      musicembed export-model runs/quickstart.gin -o quickstart.pt
    """
    from .export.target import export_model as run_export
    from .export import metadata_path

    meta = run_export(spec, output, fmt=fmt, gin_files=gin_files, gin_params=gin_params,
                      embedding=embedding, layers=layers, pooling=pooling, device=device,
                      dtype=dtype, verify=verify)
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
    check = meta.get("verification") or {}
    checked = (f", max difference to the pipeline {check['max_abs_diff_vs_pipeline']:.2g}"
               if check else "")
    _console().print(
        f"wrote {output} ({meta['format']}, encoder {meta['encoder']['name']} "
        f"{'traced' if meta['encoder']['compiled_with'] == 'trace' else 'scripted'}, "
        f"{meta['input']['sample_rate']} Hz in, "
        f"{meta['output']['dim']} dims out, space {meta['space_hash']}{checked}) "
        f"and {metadata_path(output)}",
        highlight=False, soft_wrap=True,
    )


@main.group("gin", context_settings=CONTEXT)
def gin_group() -> None:
    """List and show the gin files available by name (from musicembed and its plugins).

    \b
    A --gin_file or include name such as runs/quickstart.gin is looked up in:
      the working directory, MUSICEMBED_GIN_PATH (folders, ':'-separated),
      the folder of the including file (and the gin/ folder above it),
      musicembed's own gin files, then each installed plugin's gin files.
    The first match wins; `musicembed gin list` shows which copies are hidden.
    """


def _provider(folder: Any) -> str:
    dist = folder.distribution
    if dist and dist != folder.provider:
        return f"{folder.provider} ({dist})"
    return folder.provider


@gin_group.command("list", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def gin_list(as_json: bool) -> None:
    """Every gin file available by name, grouped by the package (folder) providing it.

    \b
    A name found in an earlier folder hides the same name in later ones (shown).
    The working directory is searched too when a run names a file, but is not listed.
    """
    from .ginpath import catalog, listed_folders

    folders = listed_folders()
    files = catalog()
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in files], indent=2))
        return
    from rich.console import Console
    from rich.markup import escape

    # Grouped by folder, in search order: a name found earlier hides the later copies.
    rows: dict[Any, list[str]] = {f.path: [] for f in folders}
    for f in files:
        rows[f.folder.path].append(escape(f.name))
        for hidden in f.shadowed:
            rows[hidden.path].append(
                f"{escape(f.name)}  [yellow](hidden by {escape(str(f.path))})[/yellow]"
            )
    console = Console(soft_wrap=True, highlight=False)
    for folder in folders:
        if not rows[folder.path] and folder.provider != "MUSICEMBED_GIN_PATH":
            continue
        console.print(f"[bold]{escape(_provider(folder))}[/bold]: {escape(str(folder.path))}")
        empty = "[dim](no gin files)[/dim]" if folder.path.is_dir() else "[red](not a folder)[/red]"
        for line in sorted(rows[folder.path]) or [empty]:
            console.print(f"  {line}")


@gin_group.command("show", context_settings=CONTEXT)
@click.argument("name")
def gin_show(name: str) -> None:
    """Print a gin file (by name or path) on stdout, and where it comes from on stderr.

    \b
    Example (start your own run from a shipped one):
      musicembed gin show runs/quickstart.gin > my_run.gin
    """
    from pathlib import Path

    from .ginpath import catalog, resolve

    path = resolve(name)
    entry = next((f for f in catalog() if f.path.resolve() == path.resolve()), None)
    if entry is not None:
        origin = f"{entry.name} from {_provider(entry.folder)}: {path}"
        origin += "".join(
            f"\n(hides {h.path / entry.name} from {_provider(h)})" for h in entry.shadowed
        )
    else:
        origin = f"{name}: {Path(path).resolve()}"
    click.echo(origin, err=True)
    click.echo(Path(path).read_text(), nl=False)


# --------------------------------------------------------------------------- new-plugin


@main.command("new-plugin", context_settings=CONTEXT)
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder in which to create musicembed-NAME/.")
def new_plugin(name: str, directory: str) -> None:
    """Create a working plugin package musicembed-NAME/ to start from.

    \b
    It holds a pyproject.toml with the `musicembed` entry point, one module with
    a weight-free encoder (encoders.NAME: spectral statistics per frame) and its
    hooks, a gin folder with runs/NAME.gin, a README, and tests that run the
    core's conformance suite (musicembed_core.testing.EncoderSuite).

    \b
    Example:
      musicembed new-plugin spectral-stats --dir ~/src
      cd ~/src/musicembed-spectral-stats && pip install -e '.[test]' && pytest
    """
    from .plugin_template import plugin_names, write_plugin
    from .plugins import BUILTIN_PLUGIN, get_manager

    builtins = get_manager().plugins.get(BUILTIN_PLUGIN)
    reserved = {n for k, n in builtins.components if k == "encoders"} if builtins else set()
    root = write_plugin(name, directory, reserved=reserved)
    names = plugin_names(name)
    click.echo(
        f"created {root}: {names.distribution} (import {names.module}) with encoders.{names.component}\n"
        f"next: cd {root} && pip install -e '.[test]' && pytest"
    )


# --------------------------------------------------------------------------- serve, playlist


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs --allow-remote and a token.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port to listen on.")
@click.option("--token", envvar="MUSICEMBED_TOKEN", metavar="TOKEN",
              help="API token every request must carry (Authorization: Bearer TOKEN or "
              "?token=TOKEN) [env: MUSICEMBED_TOKEN].")
@click.option("--allow-remote", is_flag=True,
              help="Allow a --host other machines can reach (requires --token).")
@click.option("--max-upload-mb", default=50.0, show_default=True, type=float,
              help="Largest request body (uploaded audio) accepted, in MB.")
@click.option("--watch", type=float, metavar="SECONDS",
              help="Look for new or changed files under run.source every SECONDS and index them.")
@click.option("--sink", "sink_name", metavar="NAME", help="Which sink of the run (if it has several).")
@click.option("--projector", "projector_dir", metavar="CHECKPOINT", help=PROJECTOR_HELP)
def serve(gin_files: tuple[str, ...], gin_params: tuple[str, ...], host: str, port: int,
          token: str | None, allow_remote: bool, max_upload_mb: float, watch: float | None,
          sink_name: str | None, projector_dir: str | None) -> None:
    """Serve search over HTTP, with a web page, keeping models and indexes warm.

    \b
    Use the same gin files as the `musicembed run` that indexed the library.
    Open http://127.0.0.1:8765/ for the page, /docs for the API:
      GET  /search?id=ID&k=10&filter=EXPR     more like a stored track
      POST /search                            an uploaded audio file, or {"text": ...}
      GET  /tracks/ID, /tracks/ID/audio       metadata (?vector=true), the audio (ranges)
      GET  /playlist?seed=ID&n=25&format=m3u8 a "more like this" mix
      POST /reindex                           index new files, no restart
      GET  /health, /embeddings

    \b
    Examples:
      musicembed serve --gin_file runs/quickstart_faiss.gin
      MUSICEMBED_TOKEN=secret musicembed serve --gin_file my_run.gin \\
          --host 0.0.0.0 --allow-remote --watch 300
    """
    from .serve import require_serve

    require_serve()
    # Idle OpenMP threads (torch, FAISS) spin by default after each parallel region: between
    # short requests they take the cores the HTTP side needs (FAISS /search?id= took ~9 ms
    # instead of ~1.3 ms with a client on the same 2 cores). Read when OpenMP starts, so set
    # before torch or faiss is imported; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from . import ginconfig
    from .plugins import get_manager
    from .serve.library import Library
    from .serve.security import check_bind
    from .serve.server import serve as run_server

    check_bind(host, allow_remote, token)
    if max_upload_mb <= 0:
        raise click.BadParameter("must be > 0", param_hint="--max-upload-mb")
    cfg = _run_config(gin_files, gin_params)
    if projector_dir is not None and len(cfg.embeddings) > 1:
        raise click.UsageError(
            "--projector: the run has several embeddings; bind embedding.projector = "
            "@projectors.trained() (with its checkpoint) in the gin scope of the one it belongs to")
    _use_projector(cfg, projector_dir, None)
    plugins = [p.as_dict() for p in get_manager().plugins.values()]
    library = Library(cfg, sink_name, operative_config=ginconfig.operative_config(),
                      plugins=plugins).open()
    shown = f"[{host}]" if ":" in host else host
    _console().print(
        f"serving {', '.join(library.names)} from {cfg.source} on http://{shown}:{port}/ "
        f"(API docs: /docs{', token required' if token else ''}); Ctrl-C stops",
        highlight=False, soft_wrap=True,
    )
    run_server(library, host=host, port=port, token=token,
               max_upload_bytes=int(max_upload_mb * 1e6), watch=watch,
               log_level=logging.getLevelName(logging.getLogger().level).lower())


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--seed", "seeds", multiple=True, metavar="ID_OR_FILE",
              help="A stored track id, a file of the library, or any audio file. Repeatable.")
@click.option("--text", "texts", multiple=True, metavar="TEXT",
              help="Seed from a description (needs a text projector). Repeatable.")
@click.option("-n", "n", default=25, show_default=True, help="Tracks in the mix, seeds included.")
@click.option("-o", "--output", metavar="FILE.m3u8",
              help="Playlist to write (paths relative to its folder) [default: print it].")
@click.option("--max-per-folder", type=int, metavar="N", help="At most N tracks from one folder.")
@click.option("--max-per-tag", multiple=True, metavar="KEY=N",
              help="At most N tracks sharing one value of a metadata key, e.g. artist=2. Repeatable.")
@click.option("--combine", type=click.Choice(["best", "sum"]), default="best", show_default=True,
              help="Rank neighbours by their best score across seeds, or by the sum.")
@click.option("--filter", "filter_expr", metavar="EXPR", help="Metadata filter in the sink's syntax.")
@click.option("--embedding", metavar="NAME", help="Which embedding of the run (if it has several).")
@click.option("--sink", "sink_name", metavar="NAME", help="Which sink of the run (if it has several).")
@click.option("--projector", "projector_dir", metavar="CHECKPOINT", help=PROJECTOR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the mix as JSON on stdout.")
def playlist(gin_files: tuple[str, ...], gin_params: tuple[str, ...], seeds: tuple[str, ...],
             texts: tuple[str, ...], n: int, output: str | None, max_per_folder: int | None,
             max_per_tag: tuple[str, ...], combine: str, filter_expr: str | None,
             embedding: str | None, sink_name: str | None, projector_dir: str | None,
             as_json: bool) -> None:
    """A "more like this" mix as an extended M3U playlist (.m3u8).

    \b
    Seeds first (each once), then their nearest neighbours, no duplicates.
    Paths in the file are relative to its folder: save it inside the music
    folder and Navidrome (and other servers that scan for playlists) imports it.

    \b
    Examples:
      musicembed playlist --gin_file my_run.gin --seed 'jazz/b.flac' -n 25 \\
          -o ~/Music/playlists/like-b.m3u8
      musicembed playlist --gin_file my_run.gin --seed a.flac --seed ~/new.mp3 \\
          --max-per-folder 2 --max-per-tag artist=1 -o mix.m3u8
    """
    from .playlist import m3u8_text, make_playlist, parse_tag_caps, resolve_seeds, write_m3u8
    from .search import open_index

    caps = parse_tag_caps(max_per_tag)
    if not seeds and not texts:
        raise click.UsageError("give at least one --seed ID_OR_FILE (or --text TEXT)")
    cfg = _run_config(gin_files, gin_params)
    _use_projector(cfg, projector_dir, embedding)
    index = open_index(cfg, embedding, sink_name)
    try:
        mix = make_playlist(index, cfg.source, resolve_seeds(index, cfg.source, seeds, texts), n,
                            combine=combine, max_per_folder=max_per_folder, max_per_tag=caps,
                            filter=filter_expr)
    finally:
        index.close()
    if as_json:
        click.echo(json.dumps(mix.as_dict(), indent=2, ensure_ascii=False, default=str))
    if output:
        path = write_m3u8(mix, output)
        note = f", {mix.capped} left out by the diversity caps" if mix.capped else ""
        short = f" (fewer than -n {n}: the index or the filter has no more)" if len(mix.entries) < n else ""
        _console().print(f"wrote {path}: {len(mix.entries)} tracks{short}{note}", highlight=False,
                         soft_wrap=True)
    elif not as_json:
        click.echo(m3u8_text(mix), nl=False)


@main.command(context_settings=CONTEXT)
@gin_options
@click.option("--labels", "labels_file", required=True, metavar="FILE",
              help="Labels per track: CSV/TSV with a header, or JSONL; an id (or path) column "
              "and one column per task.")
@click.option("--label-column", "columns", multiple=True, metavar="COLUMN",
              help="A task to evaluate (repeatable) [default: every column but the id].")
@click.option("--id-column", metavar="COLUMN",
              help="The column naming the track [default: the first of id, track_id, path, file, "
              "filename, track].")
@click.option("--multi-label-sep", metavar="SEP",
              help="Split values at SEP (e.g. ';'): a column holding several labels is multi-label.")
@click.option("--embedding", metavar="NAME", help="Evaluate only this embedding of the run.")
@click.option("-k", "ks", default="5,10", show_default=True, metavar="K,K",
              help="Precision@k / recall@k depths.")
@click.option("--folds", default=5, show_default=True, help="Cross-validation folds of the probe.")
@click.option("--seed", default=0, show_default=True, help="Seed of the folds and the track samples.")
@click.option("--index-queries", default=200, show_default=True, metavar="N",
              help="Tracks sampled to measure the sink's recall and latency.")
@click.option("-o", "--output", "out_dir", metavar="DIR",
              help="Folder for evaluation.json and the plots [default: <run.output_dir>/evaluation].")
@click.option("--no-plots", is_flag=True, help="Write no PNG plots (no matplotlib needed).")
@click.option("--json", "as_json", is_flag=True, help="Print evaluation.json on stdout.")
def evaluate(gin_files: tuple[str, ...], gin_params: tuple[str, ...], labels_file: str,
             columns: tuple[str, ...], id_column: str | None, multi_label_sep: str | None,
             embedding: str | None, ks: str, folds: int, seed: int, index_queries: int,
             out_dir: str | None, no_plots: bool, as_json: bool) -> None:
    """Which model, layer and index suit this library: metrics against your own labels.

    \b
    For each embedding of the run (and each stored layer, when the run kept
    frames): retrieval precision@k and mAP of same-label neighbours and a
    cross-validated linear probe, each with its chance level; the best layer
    per task; the recall and latency of the run's sink against exact search.
    Writes evaluation.json and PNG plots. Needs: pip install 'musicembed[evaluate]'.

    \b
    Examples:
      musicembed examples examples/audio --captioned 80
      musicembed run --gin_file runs/quickstart_faiss.gin \\
          --gin_param 'exporters.hdf5.store_frames=True'
      musicembed evaluate --gin_file runs/quickstart_faiss.gin \\
          --labels examples/audio/captioned/labels.csv --label-column instrument
    """
    from .evaluation import EvaluateRequest, parse_ks
    from .evaluation import evaluate as run_evaluate
    from .evaluation.report import print_report

    req = EvaluateRequest(labels=labels_file, columns=list(columns), multi_sep=multi_label_sep,
                          id_column=id_column, ks=parse_ks(ks), folds=folds, seed=seed,
                          out_dir=out_dir, plots=not no_plots, index_queries=index_queries,
                          embedding=embedding)
    cfg = _run_config(gin_files, gin_params)
    console = _console()
    with console.status("evaluating") as status:
        doc = run_evaluate(cfg, req, progress=lambda text: status.update(f"evaluating {text}"))
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        print_report(doc, _console(stderr=False))


def entrypoint() -> None:
    """Console-script wrapper: user errors print one clear message, no traceback."""
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MusicembedError as exc:
        from rich.markup import escape

        _console().print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False,
                         soft_wrap=True)
        if os.environ.get("MUSICEMBED_DEBUG"):
            raise
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
