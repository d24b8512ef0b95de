"""`musicembed examples` writes the same bytes every time (a rerun of the quickstart skips
every file), and the Ogg files it fixes up still decode with both decoders."""

from __future__ import annotations

import hashlib

import numpy as np
import soundfile as sf

from musicembed_core.audio import load_audio
from musicembed_core.examples import make_example_set


def _digests(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_two_generations_are_byte_identical(tmp_path):
    a = make_example_set(tmp_path / "a", seconds=2.0)
    b = make_example_set(tmp_path / "b", seconds=2.0)
    assert _digests(a) == _digests(b)
    assert {p.suffix for p in a} >= {".ogg", ".opus", ".mp3", ".m4a", ".flac", ".wav"}


def test_fixed_ogg_files_decode_with_soundfile_and_pyav(tmp_path):
    import av

    for p in make_example_set(tmp_path, seconds=2.0):
        if p.suffix not in (".ogg", ".opus"):
            continue
        data, rate = sf.read(str(p), dtype="float32")
        assert data.shape[0] >= int(1.9 * rate) and np.isfinite(data).all()
        assert np.abs(data).max() > 0.05  # real audio, not silence
        with av.open(str(p)) as container:  # PyAV checks the page CRCs too
            frames = sum(f.samples for f in container.decode(audio=0))
        assert abs(frames - data.shape[0]) <= rate // 50
        assert load_audio(p, 16000).size > 1.9 * 16000
