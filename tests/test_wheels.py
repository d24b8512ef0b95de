"""gin files work for pip-installed packages, not only in a source checkout.

Builds wheels of the core, musicembed-mert and musicembed-music2vec, installs them
(non-editable, no index) into a fresh venv, then from an empty folder runs the
quickstart and a MERT tiny-checkpoint run by gin *name*. The venv reuses this
environment's third-party packages (torch, transformers, ...) through a ``.pth``
line pointing at a folder of links to them; musicembed's own editable installs are
left out, so nothing of the source tree can leak in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from musicembed_core.testing import REPO

pytestmark = pytest.mark.slow

SOURCES = {  # what each wheel is built from (copied, so the build writes nothing into the repo)
    "musicembed": (REPO, ["pyproject.toml", "README.md", "musicembed_core"]),
    "musicembed-mert": (REPO / "plugins" / "mert", ["pyproject.toml", "README.md", "musicembed_mert"]),
    "musicembed-music2vec": (
        REPO / "plugins" / "music2vec", ["pyproject.toml", "README.md", "musicembed_music2vec"]),
}


def _sh(*cmd, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _is_ours(entry: Path) -> bool:
    """Anything of musicembed's editable installs (or another musicembed plugin) in site-packages."""
    name = entry.name
    if name.startswith(("musicembed", "__editable__", "__pycache__")) or name.endswith(".pth"):
        return True
    eps = entry / "entry_points.txt"
    return name.endswith(".dist-info") and eps.is_file() and "[musicembed]" in eps.read_text()


def _third_party_site(root: Path) -> Path:
    """A folder of links to this environment's site-packages, minus musicembed's own entries."""
    deps = root / "deps"
    deps.mkdir()
    for site in dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]):
        for entry in Path(site).iterdir():
            if not _is_ours(entry) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    return deps


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the three wheels installed (non-editable) and the heavy deps linked."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (needed by musicembed-mert)")
    root = tmp_path_factory.mktemp("wheels")
    srcs = []
    for dist, (src, items) in SOURCES.items():
        dst = root / "src" / dist
        dst.mkdir(parents=True)
        for item in items:
            if (src / item).is_dir():
                shutil.copytree(src / item, dst / item, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src / item, dst / item)
        srcs.append(dst)
    wheels = root / "wheelhouse"
    _sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "-q", "-w", wheels, *srcs, cwd=root)
    built = sorted(wheels.glob("*.whl"))
    assert len(built) == 3, built

    new = root / "venv"
    _sh(sys.executable, "-m", "venv", "--without-pip", new, cwd=root)
    python = new / "bin" / "python"
    site = Path(_sh(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                    cwd=root).stdout.strip())
    (site / "_musicembed_test_deps.pth").write_text(f"{_third_party_site(root)}\n")
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
        *built, cwd=root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MUSICEMBED_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(root / "empty-hf-cache"))
    return new, env


@pytest.fixture
def empty(tmp_path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_the_venv_holds_the_wheels_not_the_source_tree(venv, empty):
    new, env = venv
    code = ("import json, musicembed_core, musicembed_mert, musicembed_music2vec; print(json.dumps("
            "[m.__file__ for m in (musicembed_core, musicembed_mert, musicembed_music2vec)]))")
    files = json.loads(_sh(new / "bin" / "python", "-c", code, cwd=empty, env=env).stdout)
    for f in files:
        assert Path(f).resolve().is_relative_to(new.resolve()), f
    plugins = {p["name"]: p for p in json.loads(
        _sh(new / "bin" / "musicembed", "plugins", "--json", cwd=empty, env=env).stdout)}
    assert set(plugins) == {"builtins", "mert", "music2vec"}  # no editable plugin leaked in
    assert all(p["error"] is None for p in plugins.values())


def test_gin_list_shows_the_packaged_files(venv, empty):
    new, env = venv
    files = {f["name"]: f for f in json.loads(
        _sh(new / "bin" / "musicembed", "gin", "list", "--json", cwd=empty, env=env).stdout)}
    expect = {
        "runs/quickstart.gin": "musicembed",
        "enrichers/mean_iqr_delta.gin": "musicembed",
        "encoders/mert_v1_95m.gin": "mert",
        "runs/mert330m_76800.gin": "mert",
        "runs/mert_music2vec.gin": "mert",
        "encoders/music2vec.gin": "music2vec",
    }
    for name, provider in expect.items():
        assert files[name]["provider"] == provider
        assert Path(files[name]["path"]).resolve().is_relative_to(new.resolve())
    assert "runs/quickstart_faiss.gin" not in files  # musicembed-faiss is not installed here
    shown = _sh(new / "bin" / "musicembed", "gin", "show", "encoders/mert_v1_95m.gin", cwd=empty, env=env)
    assert "MERT_V1_95M = @mert_v1_95m/encoders.mert()" in shown.stdout
    assert "from mert (musicembed-mert)" in shown.stderr


def test_quickstart_and_a_tiny_mert_run_by_gin_name(venv, empty, tmp_path, monkeypatch):
    from musicembed_core.builtins.hdf5 import read_hdf5

    new, env = venv
    me = new / "bin" / "musicembed"
    _sh(me, "examples", "audio", "--seconds", "3", cwd=empty, env=env)
    n = sum(1 for p in (empty / "audio").rglob("*") if p.is_file())

    proc = _sh(me, "run", "--gin_file", "runs/quickstart.gin", "--gin_param", 'run.source="audio"',
               "--no-progress", "--json", cwd=empty, env=env)
    assert json.loads(proc.stdout)["files_ok"] == n
    data = read_hdf5(empty / "musicembed-out" / "quickstart" / "logmel.h5")
    assert data["vectors"].shape == (n, 2 * 96 * 2)  # logmel: 2 layers x 96 mels x (mean, std)

    # A tiny MERT-v1-95M-architecture checkpoint in a local folder (plugins/mert/tests builds them).
    monkeypatch.syspath_prepend(str(REPO / "plugins" / "mert" / "tests"))
    import mert_checkpoints as ckpts

    tiny = ckpts.make_checkpoint(tmp_path / "tiny-mert", "m-a-p/MERT-v1-95M",
                                 ckpts.shrink(ckpts.RELEASED_V1_95M), ckpts.preprocessor(24000, True),
                                 seed=0)
    (empty / "my_mert.gin").write_text(
        "# A user's run next to their music: includes found on the installed packages' gin path.\n"
        "include 'encoders/mert_v1_95m.gin'\n"
        "include 'enrichers/mean.gin'\n"
        "include 'exporters/hdf5.gin'\n"
        "run.source = 'audio'\n"
        "run.output_dir = 'out-mert'\n"
        "run.embeddings = [@embedding()]\n"
        "run.exporters = [@exporters.hdf5()]\n"
        "embedding.encoder = %MERT_V1_95M\n"
        "embedding.enrichers = %MEAN\n"
    )
    proc = _sh(me, "run", "--gin_file", "my_mert.gin", "--no-progress", "--json",
               "--gin_param", f'mert_v1_95m/encoders.mert.model="{tiny.folder}"', cwd=empty, env=env)
    assert json.loads(proc.stdout)["files_ok"] == n
    data = read_hdf5(empty / "out-mert" / "mert.h5")
    assert data["vectors"].shape == (n, tiny.layers * tiny.dim)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, atol=1e-5)
    assert data["space"]["encoder"]["model"] == str(tiny.folder)
