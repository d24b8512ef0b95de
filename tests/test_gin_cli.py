"""`musicembed gin list` / `gin show` and gin names on the real command line."""

from __future__ import annotations

import json

from musicembed_core import ginpath
from musicembed_core.testing import run_cli


def test_gin_list_json_names_every_packaged_file_with_its_provider(tmp_path):
    proc = run_cli("gin", "list", "--json", cwd=tmp_path)
    files = {f["name"]: f for f in json.loads(proc.stdout)}
    core = sorted(p.relative_to(ginpath.CORE_GIN).as_posix() for p in ginpath.CORE_GIN.rglob("*.gin"))
    for name in core:
        assert files[name]["provider"] == "musicembed"
        assert files[name]["path"] == str(ginpath.CORE_GIN / name)
        assert files[name]["shadows"] == []


def test_gin_list_and_show_report_shadowing(tmp_path):
    mine = tmp_path / "mine"
    (mine / "runs").mkdir(parents=True)
    (mine / "runs" / "quickstart.gin").write_text("# mine\ninclude 'runs/two_windows.gin'\n")
    env = {"MUSICEMBED_GIN_PATH": str(mine)}
    text = run_cli("gin", "list", cwd=tmp_path, env=env).stdout
    assert f"MUSICEMBED_GIN_PATH: {mine}" in text
    assert f"runs/quickstart.gin  (hidden by {mine / 'runs' / 'quickstart.gin'})" in text
    proc = run_cli("gin", "show", "runs/quickstart.gin", cwd=tmp_path, env=env)
    assert proc.stdout == "# mine\ninclude 'runs/two_windows.gin'\n"
    assert "from MUSICEMBED_GIN_PATH" in proc.stderr
    assert f"hides {ginpath.CORE_GIN / 'runs' / 'quickstart.gin'} from musicembed" in proc.stderr


def test_gin_show_prints_a_packaged_file_for_reuse(tmp_path):
    proc = run_cli("gin", "show", "runs/quickstart.gin", cwd=tmp_path)
    assert proc.stdout == (ginpath.CORE_GIN / "runs" / "quickstart.gin").read_text()
    assert f"runs/quickstart.gin from musicembed: {ginpath.CORE_GIN}" in proc.stderr


def test_gin_show_unknown_name_exits_2_with_the_closest(tmp_path):
    proc = run_cli("gin", "show", "runs/quikstart.gin", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Did you mean 'runs/quickstart.gin'" in proc.stderr and "Traceback" not in proc.stderr


def test_unquoted_gin_param_fails_naming_the_binding(tmp_path):
    """Quotes eaten by the shell: exit 2 before any work, with the form to type."""
    proc = run_cli("run", "--gin_file", "runs/quickstart.gin", "--no-progress",
                   "--gin_param", "run.source=/music/lib", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "run.source" in proc.stderr and "Traceback" not in proc.stderr
    assert """--gin_param 'run.source="/music/lib"'""" in proc.stderr
    assert "Unable to parse value. (line 1)" not in proc.stderr
