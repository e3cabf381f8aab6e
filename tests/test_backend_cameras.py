"""The one camera convention: orbit rig orientation and pinhole projection."""

from __future__ import annotations

import numpy as np

from track4dgen.cameras import Camera, HELDOUT_AZIMUTHS_DEG, load_cameras, orbit_camera, rig_cameras, save_cameras


def test_front_view_sees_blender_front() -> None:
    cam = orbit_camera(0.0, elevation_deg=0.0, distance=3.0, resolution=256)
    np.testing.assert_allclose(cam.center, [0, -3, 0], atol=1e-9)
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.5]]))
    np.testing.assert_allclose(uv[0], [128, 128], atol=1e-9)  # origin at the image centre
    assert uv[1, 0] > 128 and abs(uv[1, 1] - 128) < 1e-9  # +X is to the right in the front view
    assert uv[2, 1] < 128  # +Z is up (smaller row)
    np.testing.assert_allclose(z, 3.0)


def test_rig_geometry_matches_design() -> None:
    cams = rig_cameras(256)
    right = cams[1]  # azimuth 90 looks from +X
    assert right.center[0] > 2.8 and abs(right.center[1]) < 1e-9
    for cam in cams:
        np.testing.assert_allclose(np.linalg.norm(cam.center), 3.0)
        elevation = np.degrees(np.arcsin(cam.center[2] / 3.0))
        np.testing.assert_allclose(elevation, 15.0)
        # vertical FOV 40°: a point at the top edge of the view is 20° above the optical axis
        f = cam.K[1, 1]
        np.testing.assert_allclose(np.degrees(np.arctan(128 / f)), 20.0)
        R = cam.w2c[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(R), 1.0)
    assert len(rig_cameras(64, HELDOUT_AZIMUTHS_DEG)) == 4


def test_cameras_json_round_trip(tmp_path) -> None:
    cams = rig_cameras(32)
    save_cameras(tmp_path / "cameras.json", cams)
    back = load_cameras(tmp_path / "cameras.json")
    for a, b in zip(cams, back):
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_allclose(a.w2c, b.w2c)
        assert isinstance(b, Camera) and b.width == 32
