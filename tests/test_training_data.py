"""The MV-Video writer and loader: real mp4 files on disk read back to the right clips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from track4dgen.cameras import load_cameras
from track4dgen.stage1.camera_embed import animate3d_orbit_vectors, camera_tensor
from track4dgen.synthetic import render_mesh
from track4dgen.tracking import OracleTracker
from training.data import DataFormatError, MVVideoDataset, load_info
from training.write_mvvideo import clip_starts, write_dataset


pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.single_thread


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvvideo")
    write_dataset(root, ["hopper"], resolution=64, azi_starts=[30.0], supersample=1)
    return root


def test_writer_produces_animate3d_format(data_dir):
    info = json.loads((data_dir / "info.json").read_text())
    assert len(info) == 1 and set(info[0]) == {"data_path", "text_prompt", "angle"}
    assert len(info[0]["data_path"]) == 4 and info[0]["angle"] == {"elv": 15.0, "azi_start": 30.0}
    import imageio.v2 as imageio

    with imageio.get_reader(str(data_dir / info[0]["data_path"][0])) as r:
        frames = [f for f in r]
    assert len(frames) == 48 and frames[0].shape == (64, 64, 3)
    assert clip_starts() == [0, 1, 2]  # 48 frames, 16 at stride 3


def test_loader_shapes_ranges_cameras_and_masks(data_dir):
    ds = MVVideoDataset(data_dir / "info.json", tracker=OracleTracker(), seed=3)
    item = ds[0]
    assert item["video"].shape == (4, 16, 3, 64, 64) and item["video"].dtype == torch.float32
    assert item["video"].min() >= -1.0 and item["video"].max() <= 1.0 and item["video"].min() < -0.5
    idx = item["frame_indices"].numpy()
    assert idx[0] in (0, 1, 2) and (np.diff(idx) == 3).all() and len(idx) == 16
    # cameras: the writer's rig (azimuths 30 + 90k at 15 degrees elevation)
    gt_cams = load_cameras(data_dir / "hopper" / "gt" / "cameras.json")
    np.testing.assert_allclose(item["w2c"].numpy(), np.stack([c.w2c for c in gt_cams]), atol=1e-5)
    np.testing.assert_allclose(item["K"].numpy(), np.stack([c.K for c in gt_cams]), atol=1e-4)
    # what the MV-VDM sees: the vectors the reference's dataset builds from this entry's angle
    np.testing.assert_allclose(camera_tensor(item["w2c"].numpy()).numpy(), animate3d_orbit_vectors(15.0, 30.0).numpy(), atol=1e-6)
    # masks from the solid background agree with the renderer's alpha
    anim = np.load(data_dir / "hopper" / "gt" / "animation.npz")
    for v in (0, 2):
        rgba = render_mesh(anim["vertices"][idx[5]], anim["faces"], anim["colors"], gt_cams[v], (0.5,) * 3, 1)
        gt = rgba[..., 3] > 0.5
        m = item["mask"][v, 5].numpy() > 0.5
        assert (gt & m).sum() / (gt | m).sum() > 0.8
        # and the decoded pixels match the render (H.264 is lossy, so a loose bound)
        err = np.abs((item["video"][v, 5].permute(1, 2, 0).numpy() + 1) / 2 - rgba[..., :3])
        assert err.mean() < 0.03
    # queries inside the mask; tracks of the oracle start at the queries
    q, valid = item["queries"], item["query_valid"]
    assert valid.any(1).all()
    np.testing.assert_allclose(item["tracks"][:, 0][valid].numpy(), q[valid].numpy(), atol=1e-3)
    assert item["track_vis"][:, 0][valid].all()


def test_phase_is_random_per_epoch_but_reproducible(data_dir):
    ds = MVVideoDataset(data_dir / "info.json", seed=0)
    phases = []
    for e in range(8):
        ds.set_epoch(e)
        phases.append(int(ds[0]["frame_indices"][0]))
    ds.set_epoch(5)
    assert int(ds[0]["frame_indices"][0]) == phases[5]
    assert len(set(phases)) > 1


def test_oracle_handles_clip_starts_the_writer_did_not_precompute(data_dir):
    ds = MVVideoDataset(data_dir / "info.json", clip_frames=4, stride=3, tracker=OracleTracker(), phase=20)
    item = ds[0]
    v = item["query_valid"]
    np.testing.assert_allclose(item["tracks"][:, 0][v].numpy(), item["queries"][v].numpy(), atol=1e-3)


def test_bad_info_gives_clear_errors(tmp_path, data_dir):
    bad = tmp_path / "info.json"
    bad.write_text(json.dumps([{"data_path": ["a.mp4"], "text_prompt": "x", "angle": {"elv": 0, "azi_start": 0}}]))
    with pytest.raises(DataFormatError, match="expected 4"):
        load_info(bad)
    bad.write_text(json.dumps([{"text_prompt": "x"}]))
    with pytest.raises(DataFormatError, match="data_path"):
        load_info(bad)
    with pytest.raises(DataFormatError, match="write_mvvideo"):
        load_info(tmp_path / "missing.json")


def test_precompute_fills_the_cache_the_loader_reads(data_dir, monkeypatch):
    """Tracks precomputed once per clip start are found by the loader (same content-hash keys)."""
    import training.precompute_tracks as pre
    from track4dgen.tracking import TrackResult, Tracker

    class Counting(Tracker):
        name, version = "counting-test", "1"
        calls = 0

        def track(self, video, queries, context=None):
            Counting.calls += 1
            V, F, P = video.shape[0], video.shape[1], queries.shape[1]
            return TrackResult(np.broadcast_to(queries[:, None], (V, F, P, 2)), np.ones((V, F, P), bool))

    monkeypatch.setattr(pre, "make_tracker", lambda name, ckpt=None: Counting())
    summary = pre.precompute(data_dir / "info.json", "oracle")
    assert summary["clips"] == 3 and Counting.calls == 3  # one per clip start
    ds = MVVideoDataset(data_dir / "info.json", tracker=Counting(), seed=1)
    for e in range(3):
        ds.set_epoch(e)
        ds[0]
    assert Counting.calls == 3  # every clip came from the cache


def test_rgba_frame_folders_use_alpha_as_mask_and_are_composited_on_grey(tmp_path):
    from track4dgen.video_io import write_rgba

    paths = []
    for v in range(4):
        d = tmp_path / f"obj/view{v}"
        for f in range(4):
            img = np.zeros((16, 16, 4), np.float32)
            img[4:12, 4 + f:8 + f] = (1.0, 0.0, 0.0, 1.0)  # a red box moving right, transparent elsewhere
            write_rgba(d / f"{f:03d}.png", img)
        paths.append(f"obj/view{v}")
    (tmp_path / "info.json").write_text(json.dumps(
        [{"data_path": paths, "text_prompt": "box", "angle": {"elv": 0.0, "azi_start": 0.0}}]))
    item = MVVideoDataset(tmp_path / "info.json", clip_frames=2, stride=2, phase=0)[0]  # frames 0 and 2
    assert item["video"].shape == (4, 2, 3, 16, 16)
    assert item["mask"][0, 1, 6, 6:10].eq(1).all() and item["mask"][0, 1, 0].eq(0).all()
    np.testing.assert_allclose(item["video"][0, 0, :, 0, 0].numpy(), [0.0, 0.0, 0.0], atol=1e-2)  # grey -> 0
    np.testing.assert_allclose(item["video"][0, 0, :, 6, 5].numpy(), [1.0, -1.0, -1.0], atol=1e-2)  # red
