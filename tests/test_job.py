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


# -- issue 16: hostile sizes and settings ----------------------------------------------------------

def _peak_rss_of_validation(root: Path) -> tuple[float, str]:
    """Validate ``root`` in a fresh interpreter; returns (peak RSS growth in MB, the error message)."""
    code = ("import json, resource, sys; from track4dgen.job import JobError, load_job; import PIL.Image, trimesh; "
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_job(sys.argv[1]); msg = 'accepted'\nexcept JobError as e:\n    msg = e.message\n"
            "print(json.dumps([(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, msg]))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    grown, msg = json.loads(out.stdout.strip().splitlines()[-1])
    return grown, msg


def test_image_and_feature_bombs_are_refused_from_their_headers(tmp_path: Path) -> None:
    from test_server_support import npz_bomb, png_bomb

    root = make_job(tmp_path / "png")
    (root / "views" / "1.png").write_bytes(png_bomb(9000, 9000))  # 315 KB on disk, 324 MB decoded
    grown, msg = _peak_rss_of_validation(root)
    assert "views/1.png is 9000x9000, expected 16x16" in msg and str(tmp_path) not in msg
    assert grown < 40, f"validation decoded the image: +{grown:.0f} MB"

    root = make_job(tmp_path / "npz")
    (root / "features.npz").write_bytes(npz_bomb((4, 2, 128, 256, 256)))  # 260 KB on disk, 268 MB of float32
    grown, msg = _peak_rss_of_validation(root)
    assert msg == "features.npz contains NaN or infinite values"  # the last value: the whole array was scanned
    assert grown < 40, f"validation held the whole array: +{grown:.0f} MB"


@pytest.mark.parametrize("features, words", [
    (np.zeros((4, 2, 8, 4, 4), np.float64), "dtype float64"),
    (np.zeros((4, 3, 8, 4, 4), np.float32), "shape [4, 3, 8, 4, 4]"),
    (np.zeros((4, 2, 8, 4, 4), object), "dtype object"),
])
def test_feature_headers_are_checked(tmp_path: Path, features: np.ndarray, words: str) -> None:
    root = make_job(tmp_path / "job")
    np.savez(root / "features.npz", features=features, allow_pickle=True)
    with pytest.raises(JobError) as info:
        load_job(root)
    assert info.value.code == "bad_features" and words in info.value.message


def test_feature_header_declaring_more_than_the_budget_is_refused_unread(tmp_path: Path) -> None:
    import zipfile

    root = make_job(tmp_path / "job")
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (4, 2, 4096, 512, 512)})
    with zipfile.ZipFile(root / "features.npz", "w") as zf:
        zf.writestr("features.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(JobError, match=r"holds 34,359,738,368 bytes \(limit"):
        load_job(root)


def test_images_must_match_the_declared_resolution(tmp_path: Path) -> None:
    root = make_job(tmp_path / "job")
    img = np.zeros((17, 17, 4), np.float32)
    write_rgba(root / "videos" / "view2" / "001.png", img)
    with pytest.raises(JobError, match=r"video view 2 frame 1 videos/view2/001.png is 17x17, expected 16x16"):
        load_job(root)
    write_rgba(root / "videos" / "view2" / "001.png", np.zeros((16, 16, 4), np.float32))
    write_rgba(root / "views" / "3.png", img)
    with pytest.raises(JobError, match=r"views/3.png is 17x17"):
        load_job(root)


@pytest.mark.parametrize("section, key, value, words", [
    ("stage2", "num_gaussians", 1e9, "'stage2.num_gaussians' must be an integer in [1, 1e+06]"),
    ("stage2", "iters_rec", 10**12, "'stage2.iters_rec' must be an integer in [0, 100000]"),
    ("stage2", "lr_means", "fast", "'stage2.lr_means' must be a number in [0, 1]"),
    ("stage2", "lr_hexplane", float("nan"), "'stage2.lr_hexplane' must be a number"),
    ("stage2", "hexplane_resolution", [4096, 4096, 64], "'stage2.hexplane_resolution' must be a list of 3 integers"),
    ("stage2", "hexplane_resolution", [100, 100], "'stage2.hexplane_resolution'"),
    ("stage2", "means_on_surface", "yes", "'stage2.means_on_surface' must be true or false"),
    ("stage2", "raster_backend", "cuda", "'stage2.raster_backend' must be one of"),
    ("stage2", "device", "cuda:../../x", "'stage2.device' must be a string"),
    ("stage2", "iters_recc", 5, "unknown stage2 setting 'iters_recc'"),
    ("stage1", "steps", "25", "'stage1.steps' must be an integer"),
    ("stage1", "guidance_scale", float("inf"), "'stage1.guidance_scale'"),
    ("stage1", "extra", {}, "unknown stage1 setting 'extra'"),
    ("weights", "path", 5, "'weights.path' must be a string"),
])
def test_every_setting_is_type_and_range_checked(tmp_path: Path, section: str, key: str, value, words: str) -> None:
    root = make_job(tmp_path / "job")
    spec = json.loads((root / "job.json").read_text())
    spec[section] = {key: value}
    (root / "job.json").write_text(json.dumps(spec))  # NaN/Infinity are written as JSON's NaN/Infinity
    with pytest.raises(JobError) as info:
        load_job(root)
    assert info.value.code == "bad_job_json" and words in info.value.message, info.value.message


def test_combined_budgets_and_device_and_nesting(tmp_path: Path) -> None:
    root = make_job(tmp_path / "job")
    spec = json.loads((root / "job.json").read_text())
    for over in ({"stage2": {"hexplane_resolution": [512, 512, 64], "hexplane_dim": 128}},
                 {"stage2": {"num_gaussians": 1_000_000, "iters_rec": 100_000}},
                 {"frames": 64, "views": 8, "resolution": 1024}):
        (root / "job.json").write_text(json.dumps({**spec, **over}))
        with pytest.raises(JobError) as info:
            load_job(root)
        assert info.value.code == "over_budget", info.value.message
    (root / "job.json").write_text(json.dumps({**spec, "device": "cuda:../../x"}))
    with pytest.raises(JobError, match="'device' must be auto, cpu, cuda or cuda:N"):
        load_job(root)
    (root / "job.json").write_text('{"stage2": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(JobError, match="nests"):
        load_job(root)


def test_schema_covers_exactly_the_config_fields() -> None:
    """Adding or removing a Stage2Config / SamplerConfig field without its range fails here."""
    from dataclasses import fields

    from track4dgen.job_schema import STAGE1, STAGE2
    from track4dgen.stage1.config import SamplerConfig
    from track4dgen.stage2.config import Stage2Config

    assert set(STAGE2) == {f.name for f in fields(Stage2Config)}
    assert set(STAGE1) == {f.name for f in fields(SamplerConfig)} - {"extra"} | {"preset"}
    # every default passes its own rule, and the presets the project ships are in range
    from track4dgen.job_schema import resource_problems, section_problems
    from track4dgen.stage1.config import SamplerConfig as S1
    from track4dgen.stage2.config import CPU_DEMO_OVERRIDES, SYNTHETIC_64_OVERRIDES

    assert section_problems("stage2", Stage2Config().to_dict()) == []
    assert section_problems("stage1", {k: v for k, v in S1().__dict__.items() if k != "extra"}) == []
    assert section_problems("stage1", {"preset": "fast"}) == [] and section_problems("stage1", {"preset": "quick"})
    for preset in (SYNTHETIC_64_OVERRIDES, CPU_DEMO_OVERRIDES):
        assert section_problems("stage2", preset) == [] and resource_problems(preset) == []


@pytest.mark.parametrize("uri", ["/dev/zero", "../../../etc/passwd", "file:///etc/hostname", "https://example.com/b.bin"])
def test_meshes_naming_external_files_are_refused_before_trimesh_reads_them(tmp_path: Path, uri: str) -> None:
    import struct

    root = make_job(tmp_path / "job")
    glb = (root / "mesh.glb").read_bytes()
    n = struct.unpack("<I", glb[12:16])[0]
    doc = json.loads(glb[20:20 + n])
    doc["buffers"] = [{"byteLength": 1 << 32, "uri": uri}] + doc["buffers"]
    doc["bufferViews"] = [dict(v, buffer=v["buffer"] + 1) for v in doc["bufferViews"]]
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    rest = glb[20 + n:]
    (root / "mesh.glb").write_bytes(b"glTF" + struct.pack("<II", 2, 20 + len(text) + len(rest))
                                    + struct.pack("<I4s", len(text), b"JSON") + text + rest)
    with pytest.raises(JobError) as info:
        load_job(root)
    assert info.value.code == "bad_mesh" and "buffers[0] refers to an external file" in info.value.message
