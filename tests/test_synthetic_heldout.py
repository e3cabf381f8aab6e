"""Held-out synthetic objects (synthetic/procedural.py) and degraded inputs (synthetic/degrade.py):
same seed -> same object, the properties the held-out set exists for (several off-axis joints moving
at once, a swaying body, greys), exact ground truth (tracks and renders agree), and degradations
that touch only the input videos."""

from __future__ import annotations

import json

import numpy as np
import pytest

from track4dgen.cameras import rig_cameras
from track4dgen.synthetic import (DEGRADATIONS, Degradation, compute_tracks, list_heldout, list_objects, load_gt, load_videos,
                                  make_object, render_animation, render_mesh, write_job)
from track4dgen.synthetic.degrade import degrade_videos, scaled_motion
from track4dgen.synthetic.procedural import describe, seed_of
from track4dgen.synthetic.writer import load_png


@pytest.fixture(scope="module")
def heldout():
    return {name: make_object(name) for name in list_heldout()}


def test_same_seed_same_object_and_seeds_differ():
    a, b, c = make_object("proc_5"), make_object("proc_5"), make_object("proc_6")
    assert np.array_equal(a.vertices_per_frame, b.vertices_per_frame)
    assert np.array_equal(a.faces, b.faces) and np.array_equal(a.colors, b.colors) and a.prompt == b.prompt
    assert a.vertices_per_frame.shape != c.vertices_per_frame.shape or not np.allclose(a.vertices_per_frame, c.vertices_per_frame)
    assert seed_of("proc_12") == 12 and seed_of("hopper") is None and seed_of("proc_x") is None
    with pytest.raises(ValueError, match="proc_<seed>"):
        make_object("proc_x")


def test_heldout_set_is_disjoint_from_tuning_and_varied(heldout):
    assert not set(list_heldout()) & set(list_objects())
    designs = [describe(seed_of(n)) for n in heldout]
    counts = {len(d["limbs"]) for d in designs}
    assert len(counts) >= 3 and min(counts) >= 2 and max(counts) <= 5
    assert any(d["grey_body"] for d in designs) and not all(d["grey_body"] for d in designs)
    kinds = {spec.kind for d in designs for spec in d["limbs"]}
    assert kinds == {"swing", "bend"}
    for d in designs:
        for spec in d["limbs"]:
            assert np.abs(spec.axis).max() < 0.9  # no joint turns about a world axis
            assert abs(spec.axis @ spec.direction) < 1e-9
        assert np.abs(d["sway_axis"]).max() < 0.9


def test_heldout_objects_move_everywhere_several_parts_at_once(heldout):
    for name, a in heldout.items():
        v = a.vertices_per_frame
        assert v.shape[0] == 16 and np.array_equal(a.canonical, v[0])
        assert np.linalg.norm(v, axis=-1).max() <= 1.0 + 1e-9  # normalised into the unit sphere
        disp = np.linalg.norm(v - v[:1], axis=-1).max(0)  # [V] largest displacement over the clip
        assert (disp > 0.005).mean() > 0.98, name  # whole-body sway: nothing large stays still
        # several limbs move at once: in the middle frame, vertices far apart all moved a lot
        moving = np.linalg.norm(v[8] - v[0], axis=-1) > 0.15
        assert moving.sum() > 50, name
        pts = v[0][moving]
        assert np.linalg.norm(pts.max(0) - pts.min(0)) > 0.6, name
        # fast limbs: some vertex moves more than 0.15 (7.5 % of the sphere) between two frames
        assert np.linalg.norm(np.diff(v, axis=0), axis=-1).max() > 0.15, name


def test_heldout_ground_truth_tracks_land_on_their_colour(heldout):
    """Exact ground truth on a held-out object: visible track points show their own colour in the
    render of that frame (tracks, visibility and renders come from the same vertices)."""
    a = heldout["proc_8"]
    R, f = 96, 5
    cams = rig_cameras(R)
    tr = compute_tracks(a, cams, num_points=400)
    verts = a.vertices_per_frame[f]
    tri = verts[a.faces[tr["face_ids"]]]
    assert np.allclose(tr["points"][f], (tri * tr["barycentrics"][:, :, None]).sum(1))
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    for k, cam in enumerate(cams):
        img = render_mesh(verts, a.faces, a.colors, cam, supersample=1, shading=False)
        uv, vis = tr["tracks"][k, f], tr["visibility"][k, f]
        assert np.allclose(uv, cam.project(tr["points"][f])[0], atol=1e-3)
        ix, iy = np.clip(np.floor(uv).astype(int), 0, R - 1).T
        match = np.abs(img[iy, ix, :3] - tr["point_colors"]).max(1) < 0.15
        d = cam.center - tr["points"][f]
        facing = (fn * d).sum(1) / np.linalg.norm(d, axis=1) > 0.5  # not grazing (pixel = one colour)
        assert (vis & facing).sum() > 40 and match[vis & facing].mean() > 0.9
        assert match[~vis].mean() < 0.6  # hidden points mostly show another colour


def test_degradations_touch_only_the_input_videos(tmp_path):
    clean = write_job("proc_3", tmp_path / "clean", resolution=32, frames=4, num_points=32)
    deg = DEGRADATIONS["under"]
    bad = write_job("proc_3", tmp_path / "bad", resolution=32, frames=4, num_points=32, degrade=deg)
    vc, vb = load_videos(clean), load_videos(bad)
    # conditioning views and ground truth are exact
    for k in range(4):
        assert np.array_equal(load_png(clean / "views" / f"{k}.png"), load_png(bad / "views" / f"{k}.png"))
    gc, gb = load_gt(clean), load_gt(bad)
    assert np.array_equal(gc.vertices, gb.vertices) and np.array_equal(gc.tracks, gb.tracks)
    assert np.array_equal(gc.heldout_videos(), gb.heldout_videos())
    assert json.loads((bad / "gt" / "degradation.json").read_text()) == deg.to_dict()
    assert not (clean / "gt" / "degradation.json").exists()
    # frame 0 keeps its exact mask; later frames get soft edges (more partial-alpha pixels)
    assert np.array_equal(vc[:, 0, ..., 3], vb[:, 0, ..., 3])
    partial = lambda v: ((v[..., 3] > 0.05) & (v[..., 3] < 0.95)).sum()  # noqa: E731
    assert partial(vb[:, 1:]) > 1.3 * partial(vc[:, 1:])
    inside = vc[..., 3] > 0.99
    noise = (vb[..., :3] - vc[..., :3])[inside & (vb[..., 3] > 0.99)]
    assert 0.02 < noise.std() < 0.2  # pixel noise + flicker
    # the under-animated view shows 0.6 x the motion, the others the true one (masks, before blur)
    a = make_object("proc_3", 4)
    cams = rig_cameras(32)
    under = render_animation(scaled_motion(a.vertices_per_frame, 0.6), a.faces, a.colors, [cams[1]])[0]
    true = render_animation(a.vertices_per_frame, a.faces, a.colors, [cams[1]])[0]
    err_under = np.abs(vb[1, 1:, ..., 3] - under[1:, ..., 3]).mean()
    err_true = np.abs(vb[1, 1:, ..., 3] - true[1:, ..., 3]).mean()
    assert err_under < err_true


def test_degrade_is_deterministic_and_validates():
    rng = np.random.default_rng(0)
    vid = rng.random((2, 3, 8, 8, 4)).astype(np.float32)
    d = Degradation(noise=0.05, flicker=0.05, jitter_px=0.5, soft_edge_px=0.5, seed=4)
    out = degrade_videos(vid, d)
    assert np.array_equal(out, degrade_videos(vid, d))
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.array_equal(out, vid)
    assert np.array_equal(degrade_videos(vid, Degradation()), vid)  # nothing asked, nothing done
    with pytest.raises(ValueError, match="animate_view"):
        Degradation(animate_view=4).validate(4)
    with pytest.raises(ValueError, match="noise"):
        Degradation(noise=-0.1).validate(4)
