"""musicembed plugin: ``sinks.milvus``, a Milvus vector sink.

Milvus Lite (a local ``.db``, no server) by default; a Milvus server or cluster
with ``uri``/``token``/``db_name``. Nothing heavy is imported here: pymilvus
loads on first use, so ``musicembed plugins`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from musicembed_core import hookimpl

from .sink import MilvusSink

__all__ = ["MilvusSink"]


@hookimpl
def register_sinks(register):
    register(MilvusSink)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
