"""musicembed plugin: the Music2Vec encoder (``encoders.music2vec``).

Importing this module is cheap (no torch, no transformers): ``musicembed
plugins`` imports it only to list what it provides.
"""

from __future__ import annotations

from pathlib import Path

from musicembed_core import hookimpl

from .encoder import Music2VecEncoder

__all__ = ["Music2VecEncoder"]


@hookimpl
def register_encoders(register):
    register(Music2VecEncoder)


@hookimpl
def register_gin_folders(register):
    register(Path(__file__).parent / "gin")
