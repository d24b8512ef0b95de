"""`musicembed run` on a disk that really fills up (a small tmpfs in a private mount
namespace): HDF5 with stored frames, the case that used to segfault. One clear message,
exit 2, earlier data intact and readable, and a rerun after freeing space completes."""

from __future__ import annotations

import json
import textwrap

from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.testing.faults import run_in_small_fs

SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from musicembed_core.builtins.hdf5 import read_frames, read_hdf5

    mnt, lib, first = sys.argv[1], {lib!r}, {first!r}
    out = os.path.join(mnt, "out")

    def run(source):
        cmd = [sys.executable, "-m", "musicembed_core", "run", "--gin_file", "runs/quickstart.gin",
               "--no-progress", "--json",
               "--gin_param", f"run.source = '{{source}}'",
               "--gin_param", f"run.output_dir = '{{out}}'",
               "--gin_param", "exporters.hdf5.store_frames = True",
               "--gin_param", "run.flush_every_tracks = 4"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        return {{"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}}

    report = {{"first": run(first)}}
    report["ids_before"] = sorted(read_hdf5(os.path.join(out, "logmel.h5"))["ids"])
    filler = os.path.join(mnt, "filler")
    st = os.statvfs(mnt)
    with open(filler, "wb") as f:  # leave about 6 MiB: less than the frames of the library
        f.write(b"\\0" * max(0, st.f_bavail * st.f_frsize - (6 << 20)))
    report["full"] = run(lib)
    report["ids_after_full"] = sorted(read_hdf5(os.path.join(out, "logmel.h5"))["ids"])
    os.remove(filler)
    report["rerun"] = run(lib)
    data = read_hdf5(os.path.join(out, "logmel.h5"))
    report["ids_final"] = sorted(data["ids"])
    report["frames_final"] = [read_frames(os.path.join(out, "logmel.h5"), i).shape[1]
                              for i in data["ids"]]
    report["temps"] = sorted(n for _, _, fs in os.walk(out) for n in fs if ".tmp-" in n)
    print(json.dumps(report))
    """
)


def test_disk_full_with_stored_frames_ends_with_one_message_and_a_rerun_completes(tmp_path):
    lib, first = tmp_path / "lib", tmp_path / "first"
    for i in range(24):
        clip = synth_clip(10.0, 16000, seed=i)
        write_audio(lib / f"t{i:02d}.wav", clip, 16000)
        if i < 3:
            write_audio(first / f"t{i:02d}.wav", clip, 16000)
    res = run_in_small_fs(SCRIPT.format(lib=str(lib), first=str(first)), tmp_path, size_mb=40)
    assert res["rc"] == 0, res["stderr"][-3000:]
    report = json.loads(res["stdout"].strip().splitlines()[-1])
    assert report["first"]["rc"] == 0, report["first"]["stderr"][-2000:]
    assert report["ids_before"] == ["t00.wav", "t01.wav", "t02.wav"]

    full = report["full"]
    assert full["rc"] == 2, (full["rc"], full["stderr"][-3000:])  # not 139 (segfault), not 1
    err = full["stderr"]
    assert "Traceback" not in err and "Segmentation" not in err, err[-3000:]
    assert "disk full" in err and "exporters.hdf5" in err and "logmel.h5" in err.replace("\n", "")
    assert "run the same command again" in err.replace("\n", " ") or "rerun" in err
    # what the earlier run wrote is intact and readable after the failed one
    assert set(report["ids_before"]) <= set(report["ids_after_full"])

    rerun = report["rerun"]
    assert rerun["rc"] == 0, rerun["stderr"][-3000:]
    assert report["ids_final"] == [f"t{i:02d}.wav" for i in range(24)]
    assert report["frames_final"] == [500] * 24  # 10 s at 50 frames/s: every track's frames
    assert report["temps"] == []
