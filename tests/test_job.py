"""Job folder validation (one clear error per problem), progress events and atomic results."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from track4dgen.cameras import rig_cameras, save_cameras
from track4dgen.job import JobError, ProgressReporter, atomic_result_dir, is_complete_result, load_job
from track4dgen.video_io import write_rgba


def make_job(root: Path, frames: int = 2, res: int = 16, videos: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    box = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    box.visual.vertex_colors = np.tile(np.array([200, 50, 50, 255], np.uint8), (len(box.vertices), 1))
    box.export(root / "mesh.glb")
    save_cameras(root / "cameras.json", rig_cameras(res))
    img = np.zeros((res, res, 4), np.float32)
    img[4:12, 4:12] = [0.8, 0.2, 0.2, 1.0]
    for k in range(4):
        write_rgba(root / "views" / f"{k}.png", img)
        if videos:
            for f in range(frames):
                write_rgba(root / "videos" / f"view{k}" / f"{f:03d}.png", img)
    (root / "job.json").write_text(json.dumps({"version": 1, "prompt": "a box", "frames": frames, "views": 4,
                                               "resolution": res, "model": "tiny"}))
    return root


def test_valid_job_loads(tmp_path: Path) -> None:
    job = load_job(make_job(tmp_path / "job"))
    assert job.spec.frames == 2 and job.spec.model == "tiny" and job.has_videos
    assert len(job.cameras) == 4


@pytest.mark.parametrize(
    "breakage, code, words",
    [
        (lambda r: (r / "job.json").unlink(), "missing_file", "job.json"),
        (lambda r: (r / "job.json").write_text("{not json"), "bad_job_json", "not valid JSON"),
        (lambda r: (r / "job.json").write_text(json.dumps({"frames": "16"})), "bad_job_json", "'frames'"),
        (lambda r: (r / "job.json").write_text(json.dumps({"colour": 1})), "bad_job_json", "unknown key"),
        (lambda r: (r / "job.json").write_text(json.dumps({"frames": 2, "stage2": {"iters_recc": 5}})), "bad_job_json", "iters_recc"),
        (lambda r: (r / "mesh.glb").unlink(), "missing_file", "mesh.glb"),
        (lambda r: (r / "mesh.glb").write_bytes(b"garbage"), "bad_mesh", "mesh.glb"),
        (lambda r: (r / "cameras.json").unlink(), "missing_file", "cameras.json"),
        (lambda r: (r / "cameras.json").write_text(json.dumps({"views": [{"K": 1}]})), "bad_cameras", "cameras.json"),
        (lambda r: (r / "views" / "2.png").unlink(), "missing_file", "conditioning view 2"),
        (lambda r: (r / "videos" / "view1" / "001.png").unlink(), "missing_file", "video view 1 frame 1"),
    ],
)
def test_each_problem_has_a_clear_error(tmp_path: Path, breakage, code: str, words: str) -> None:
    root = make_job(tmp_path / "job")
    breakage(root)
    with pytest.raises(JobError) as info:
        load_job(root)
    assert info.value.code == code
    assert words in info.value.message
    assert info.value.hint


def test_rgb_image_without_alpha_is_rejected(tmp_path: Path) -> None:
    from PIL import Image

    root = make_job(tmp_path / "job")
    Image.new("RGB", (16, 16)).save(root / "views" / "0.png")
    with pytest.raises(JobError, match="no alpha channel"):
        load_job(root)


def test_nan_and_empty_meshes_are_rejected(tmp_path: Path) -> None:
    root = make_job(tmp_path / "job")
    bad = trimesh.creation.box()
    verts = bad.vertices.copy()
    verts[3] = np.nan
    trimesh.Trimesh(verts, bad.faces, process=False).export(root / "mesh.glb")
    with pytest.raises(JobError, match="NaN") as info:
        load_job(root)
    assert info.value.code == "bad_mesh"
    trimesh.Trimesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), process=False).export(root / "mesh.glb")
    with pytest.raises(JobError, match="degenerate|empty|no triangle"):
        load_job(root)


def test_progress_lines_are_json_with_eta() -> None:
    buf = io.StringIO()
    rep = ProgressReporter(stream=buf)
    for i in range(3):
        rep.update("stage2", i, 10, "fitting")
        time.sleep(0.01)
    rep.error(JobError("bad_mesh", "mesh.glb is empty", "export faces"))
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [e["step"] for e in events[:3]] == [0, 1, 2]
    assert events[0]["eta_s"] is None and events[2]["eta_s"] > 0
    assert events[-1] == {"error": "bad_mesh", "message": "mesh.glb is empty", "hint": "export faces"}


def test_atomic_result_never_half_written(tmp_path: Path) -> None:
    final = tmp_path / "result"
    with pytest.raises(RuntimeError):
        with atomic_result_dir(final) as tmp:
            (tmp / "gaussians4d.npz").write_bytes(b"partial")
            raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_result_dir(final) as tmp:
        np.savez(tmp / "gaussians4d.npz", means=np.zeros((1, 3)))
    assert is_complete_result(final)
    # a second run replaces the first only once it is complete
    with pytest.raises(RuntimeError):
        with atomic_result_dir(final) as tmp:
            raise RuntimeError("killed again")
    assert is_complete_result(final)


def test_killed_process_leaves_no_complete_result(tmp_path: Path) -> None:
    """SIGKILL in the middle of writing: the final folder must not exist at all."""
    script = (
        "import time, sys; from pathlib import Path; from track4dgen.job import atomic_result_dir\n"
        f"with atomic_result_dir(Path({str(tmp_path / 'result')!r})) as tmp:\n"
        "    (tmp / 'gaussians4d.npz').write_bytes(b'x'); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "result").exists()
    assert not is_complete_result(tmp_path / "result")


def test_cli_reports_validation_error_as_event(tmp_path: Path) -> None:
    root = make_job(tmp_path / "job")
    (root / "mesh.glb").unlink()
    proc = subprocess.run([sys.executable, "-m", "track4dgen", "run", str(root)], capture_output=True, text=True)
    assert proc.returncode == 1
    event = json.loads(proc.stdout.strip().splitlines()[-1])
    assert event["error"] == "missing_file" and "mesh.glb" in event["message"]
    ok = subprocess.run([sys.executable, "-m", "track4dgen", "run", str(make_job(tmp_path / "j2")), "--validate-only"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
