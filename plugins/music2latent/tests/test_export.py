"""`musicembed export-model` of encoders.music2latent: the traced TorchScript module generalises
to every input length (no size baked in) and gives the vectors `musicembed run` stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicembed_core.testing import run_cli, subprocess_env

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")


def test_exported_model_equals_the_run(tiny, tmp_path):
    from musicembed_core.audio import load_audio
    from musicembed_core.examples import synth_clip, write_audio
    from musicembed_core.stored import open_output

    lib = tmp_path / "lib"
    lib.mkdir()
    lengths = {"short.wav": 0.8, "long.wav": 2.9, "tiny.wav": 0.2}  # one window; windows + tail; 1 frame
    for i, (name, seconds) in enumerate(lengths.items()):
        write_audio(lib / name, synth_clip(seconds, 44100, seed=i), 44100)
    params = ["--gin_param", f"encoders.music2latent.model = '{tiny.main}'",
              "--gin_param", "encoders.music2latent.window_seconds = 1.0"]
    env = subprocess_env()
    run_cli("run", "--gin_file", "runs/music2latent_stats.gin", "--gin_param", f"run.source = '{lib}'",
            "--gin_param", f"run.output_dir = '{tmp_path / 'out'}'", *params, env=env)
    run_cli("export-model", "runs/music2latent_stats.gin", "-o", str(tmp_path / "m.pt"), *params, env=env)
    model = torch.jit.load(str(tmp_path / "m.pt"))
    with open_output(tmp_path / "out" / "music2latent_stats.h5") as out:
        assert out.space.dim == 192
        for i, name in enumerate(out.ids):
            wave = torch.from_numpy(load_audio(lib / name, 44100))[None]
            got = model(wave)[0].numpy()
            np.testing.assert_allclose(got, out.vectors()[i], rtol=0, atol=1e-5, err_msg=name)
