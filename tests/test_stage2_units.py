"""Stage Two building blocks: HexPlane, 4D SH, ARAP, deformation heads, canonical sampling,
diffusion-feature visibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from track4dgen.stage2.deformation import DeformationField, quat_multiply
from track4dgen.stage2.diffusion_features import mesh_visibility, sample_features
from track4dgen.stage2.gaussians import CanonicalGaussians, sample_surface
from track4dgen.stage2.hexplane import PLANE_AXES, HexPlane
from track4dgen.stage2.losses import arap_loss, knn_indices, reconstruction_loss
from track4dgen.stage2.sh4d import SH_C0, SH_C1, coeffs_at, eval_rgb, sh_basis, time_basis


def random_quat(n: int = 1) -> torch.Tensor:
    q = torch.randn(n, 4, dtype=torch.float64)
    return q / q.norm(dim=-1, keepdim=True)


def quat_to_R(q: torch.Tensor) -> torch.Tensor:
    w, x, y, z = q
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=q.dtype,
    )


# ------------------------------------------------------------------------------------ HexPlane


def test_hexplane_shapes_and_time_independent_at_init():
    hp = HexPlane([-1, -1, -1], [1, 1, 1], resolution=[20, 20, 8], dim=16, multires=[1, 0.5])
    assert len(hp.grids) == 2 and all(len(g) == 6 for g in hp.grids)
    assert tuple(hp.grids[0][0].shape) == (1, 16, 20, 20)  # xy plane
    assert tuple(hp.grids[0][3].shape) == (1, 16, 8, 20)  # xt plane: rows = time
    for p in hp.spatial_parameters():
        assert 0.1 <= float(p.detach().min()) and float(p.detach().max()) <= 0.5
    for p in hp.time_parameters():
        assert torch.all(p == 1)
    x = torch.rand(50, 3) * 2 - 1
    f0, f1 = hp(x, 0.0), hp(x, 1.0)
    assert f0.shape == (50, 32)
    torch.testing.assert_close(f0, f1)  # time planes = 1: a static field at start


def test_hexplane_bilinear_interpolation_is_exact_for_linear_planes():
    hp = HexPlane([0, 0, 0], [2, 4, 6], resolution=[11, 11, 5], dim=2, margin=0.0)
    with torch.no_grad():
        for plane in hp.grids[0]:
            plane.fill_(1.0)
        xy = hp.grids[0][0]  # width axis = x, height axis = y, both [-1, 1]
        gx = torch.linspace(-1, 1, 11)
        xy[0, 0] = gx[None, :].expand(11, 11)  # channel 0 = normalised x
        xy[0, 1] = gx[:, None].expand(11, 11)  # channel 1 = normalised y
        yt = hp.grids[0][4]  # (y, t): rows = time
        yt[0, 1] = torch.linspace(1, 3, 5)[:, None].expand(5, 11)  # channel 1 also scaled by 1 + t*2
    pts = torch.rand(40, 3) * torch.tensor([2.0, 4.0, 6.0])
    t = torch.rand(40)
    out = hp(pts, t)
    torch.testing.assert_close(out[:, 0], pts[:, 0] / 2 * 2 - 1, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], (pts[:, 1] / 4 * 2 - 1) * (1 + 2 * t), atol=1e-5, rtol=0)


def test_hexplane_gradient_reaches_every_plane():
    hp = HexPlane([-1, -1, -1], [1, 1, 1], resolution=[10, 10, 4], dim=4)
    x = torch.rand(30, 3) * 2 - 1
    hp(x, torch.rand(30)).pow(2).sum().backward()
    for planes in hp.grids:
        for p, axes in zip(planes, PLANE_AXES):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for plane {axes}"


# ------------------------------------------------------------------------------------ 4D SH


def test_sh_basis_is_orthonormal_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    Y = sh_basis(d, 3)  # [M, 16]
    gram = 4 * math.pi * (Y.T @ Y) / d.shape[0]
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


def test_time_basis_is_the_cosine_series():
    tb = time_basis(torch.tensor([0.0, 0.25, 0.5, 1.0]), 4)
    expected = torch.tensor([[math.cos(i * math.pi * tau) for i in range(4)] for tau in (0.0, 0.25, 0.5, 1.0)])
    torch.testing.assert_close(tb, expected)
    sh4d = torch.zeros(1, 4, 3, 4)
    sh4d[0, 2, 1, 3] = 2.0  # only the i=3 term of one coefficient
    c = coeffs_at(sh4d, 0.25)
    assert c[0, 2, 1] == pytest.approx(2.0 * math.cos(3 * math.pi * 0.25), abs=1e-6)
    assert c.abs().sum() == pytest.approx(abs(2.0 * math.cos(3 * math.pi * 0.25)), abs=1e-6)


def test_4d_sh_with_one_basis_is_static_sh():
    torch.manual_seed(1)
    sh4d = torch.randn(5, 4, 3, 1) * 0.3
    dirs = torch.randn(2, 5, 3)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    static = sh4d[..., 0]
    x, y, z = dirs.unbind(-1)
    manual = (
        SH_C0 * static[:, 0]
        - SH_C1 * y[..., None] * static[:, 1]
        + SH_C1 * z[..., None] * static[:, 2]
        - SH_C1 * x[..., None] * static[:, 3]
        + 0.5
    ).clamp_min(0)
    for tau in (0.0, 0.37, 1.0):
        torch.testing.assert_close(eval_rgb(coeffs_at(sh4d, tau), dirs), manual)


# ------------------------------------------------------------------------------------ ARAP


def test_best_fit_rotations_recover_a_known_rotation():
    from track4dgen.stage2.losses import best_fit_rotations

    torch.manual_seed(0)
    src = torch.randn(5, 4, 3, dtype=torch.float64)
    Rs = torch.stack([quat_to_R(q) for q in random_quat(5)])
    dst = src @ Rs.transpose(1, 2)
    torch.testing.assert_close(best_fit_rotations(src, dst), Rs)
    flipped = best_fit_rotations(src, -dst)  # a point reflection is not a rotation: det stays +1
    assert torch.allclose(torch.det(flipped), torch.ones(5, dtype=torch.float64))


def test_arap_zero_for_rigid_motion_positive_for_non_rigid():
    torch.manual_seed(2)
    x0 = torch.rand(200, 3, dtype=torch.float64)
    nb = knn_indices(x0, 3)
    q = random_quat(1)[0]
    R = quat_to_R(q)
    x_rigid = x0 @ R.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    dq = q.expand(200, 4)
    assert float(arap_loss(x0, x_rigid, nb, dq_t=dq)) < 1e-12
    assert float(arap_loss(x0, x_rigid, nb, dq_t=-dq)) < 1e-12  # q and -q are the same rotation
    x_stretch = x0 * torch.tensor([1.5, 1.0, 1.0], dtype=torch.float64)
    assert float(arap_loss(x0, x_stretch, nb)) > 1e-3
    dq_twist = torch.cat([dq[:100], random_quat(100)])  # same positions, incoherent rotations
    assert float(arap_loss(x0, x_rigid, nb, dq_t=dq_twist)) > 1e-2
    sub = torch.arange(0, 200, 7)
    assert float(arap_loss(x0, x_stretch, nb, sub)) > 0
    # a bend (each half rigid, turned differently) costs only at the joint, far less than a stretch
    half = x0[:, 0] > 0.5
    c, si = math.cos(0.35), math.sin(0.35)  # 20 degrees about the z axis through the joint
    Rz = torch.tensor([[c, -si, 0.0], [si, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    x_bend = torch.where(half[:, None], (x0 - 0.5) @ Rz.T + 0.5, x0)
    assert float(arap_loss(x0, x_bend, nb)) < 0.5 * float(arap_loss(x0, x_stretch, nb))


def test_arap_gradient_pulls_a_stretched_cloud_back_to_a_rigid_shape():
    torch.manual_seed(3)
    x0 = torch.rand(150, 3, dtype=torch.float64)
    nb = knn_indices(x0, 4)
    x = (x0 * torch.tensor([1.4, 0.8, 1.0], dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-2)
    first = float(arap_loss(x0, x, nb).detach())
    for _ in range(150):
        opt.zero_grad()
        loss = arap_loss(x0, x, nb)
        loss.backward()
        opt.step()
    assert float(arap_loss(x0, x, nb).detach()) < 0.1 * first


# ------------------------------------------------------------------------------------ deformation


def test_deformation_starts_at_identity_and_gradients_reach_hexplane_and_heads():
    hp = HexPlane([-1, -1, -1], [1, 1, 1], resolution=[10, 10, 4], dim=8)
    field = DeformationField(hp, hidden=16)
    x = torch.rand(64, 3) * 2 - 1
    for t in (0.0, 0.5, 1.0):
        dx, dq, ds = field(x, t)
        assert torch.all(dx == 0) and torch.all(ds == 0)
        torch.testing.assert_close(dq, torch.tensor([1.0, 0, 0, 0]).expand(64, 4))
    target = torch.randn(64, 3) * 0.1
    opt = torch.optim.SGD(field.parameters(), lr=0.5)
    for step in range(2):
        opt.zero_grad()
        dx, dq, ds = field(x, torch.rand(64))
        loss = (dx - target).pow(2).mean() + (dq[:, 1:] - 0.1).pow(2).mean() + (ds - 0.2).pow(2).mean()
        loss.backward()
        if step == 0:  # zero last layers: only they get gradient at the very first step
            for head in (field.head_x, field.head_r, field.head_s):
                assert head[-1].weight.grad.abs().sum() > 0
        opt.step()
    for p in list(hp.parameters()) + field.head_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_quaternion_delta_composes_with_canonical_rotation():
    q0, dq = random_quat(1)[0], random_quat(1)[0]
    R = quat_to_R(quat_multiply(dq[None], q0[None])[0])
    torch.testing.assert_close(R, quat_to_R(dq) @ quat_to_R(q0))


# ------------------------------------------------------------------------------------ canonical Gaussians


def two_triangles() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]], dtype=np.float64)
    f = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 3.0
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]], dtype=np.float32)
    return v, f, c


def test_surface_sampling_is_area_weighted_with_barycentric_colours():
    v, f, c = two_triangles()
    s = sample_surface(v, f, c, 7000, seed=0)
    frac = (s.face_idx == 1).mean()
    assert abs(frac - 3.0 / 3.5) < 0.02
    on0 = s.face_idx == 0
    np.testing.assert_allclose(s.colors[on0], s.bary[on0], atol=1e-5)  # rgb vertices -> colour = weights
    np.testing.assert_allclose(s.points[on0, 2], 0.0, atol=1e-6)
    np.testing.assert_allclose(s.points[~on0, 2], 1.0, atol=1e-6)
    assert (s.bary >= -1e-6).all() and np.allclose(s.bary.sum(1), 1.0, atol=1e-5)


def test_canonical_gaussians_init():
    v, f, c = two_triangles()
    g = CanonicalGaussians.from_mesh(v, f, c, 500, sh_degree=1, sh_time_basis=3, init_opacity=0.3)
    assert torch.allclose(torch.sigmoid(g.opacity_logit), torch.tensor(0.3))
    assert torch.all(g.quats == torch.tensor([1.0, 0, 0, 0]))
    assert g.sh4d.shape == (500, 4, 3, 3)
    s = torch.exp(g.log_scales).detach()
    assert torch.all(s[:, 0] == s[:, 1]) and 0.005 < float(s.mean()) < 0.3  # isotropic, from kNN spacing
    # DC term reproduces the interpolated vertex colour, any direction, any time
    rgb = eval_rgb(coeffs_at(g.sh4d, 0.4), torch.tensor([[0.0, 0.0, 1.0]]).expand(500, 3))
    on0 = g.face_idx == 0
    torch.testing.assert_close(rgb[on0], g.bary[on0], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------ losses


def test_reconstruction_loss_is_zero_on_match_and_sees_mask_and_colour():
    target = torch.rand(2, 8, 8, 4)
    bg = torch.tensor([1.0, 1.0, 1.0])
    comp = target[..., :3] * target[..., 3:] + bg * (1 - target[..., 3:])
    loss, _ = reconstruction_loss(comp, target[..., 3:], target, bg)
    assert float(loss) < 1e-12
    loss_a, parts = reconstruction_loss(comp, target[..., 3:] * 0.5, target, bg)
    assert parts["rec_mask"] > 0 and parts["rec_rgb"] < 1e-12
    loss_c, parts = reconstruction_loss(comp * 0.5, target[..., 3:], target, bg)
    assert parts["rec_rgb"] > 0 and parts["rec_mask"] < 1e-12


# ------------------------------------------------------------------------------------ visibility


def box(lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed axis-aligned box mesh (12 triangles)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = [t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))]
    return torch.tensor(v, dtype=torch.float32), torch.tensor(f)


def look_at_cameras(eyes, target=(0.0, 0.0, 0.0), size: int = 64, fov_deg: float = 50.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(viewmats [C,4,4], Ks [C,3,3]) of cameras at ``eyes`` looking at ``target``."""
    from track4dgen.cameras import intrinsics_from_fov, look_at_w2c

    vms = [look_at_w2c(np.asarray(e, float), np.asarray(target, float), np.array([0.0, 0.0, 1.0])) for e in eyes]
    K = intrinsics_from_fov(fov_deg, size, size)
    return torch.tensor(np.stack(vms), dtype=torch.float32), torch.tensor(np.stack([K] * len(eyes)), dtype=torch.float32)


def ray_cast_visibility(points: torch.Tensor, verts: torch.Tensor, faces: torch.Tensor, cam_centers: torch.Tensor) -> torch.Tensor:
    """Reference: ``[C, P]`` True where the segment point -> camera centre crosses no triangle
    (Möller-Trumbore against every triangle; hits within 1e-3 of the bbox diagonal of either end ignored)."""
    v = verts.double()
    eps = 1e-3 * float((v.max(0).values - v.min(0).values).norm())
    v0, v1, v2 = (v[faces[:, i]] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    out = torch.ones(len(cam_centers), len(points), dtype=torch.bool)
    for c, cam in enumerate(cam_centers.double()):
        o = points.double()
        seg = cam[None] - o
        length = seg.norm(dim=-1, keepdim=True)
        d = (seg / length)[:, None, :]
        pvec = torch.cross(d.expand(-1, len(e2), -1), e2[None].expand(len(o), -1, -1), dim=-1)
        det = (e1[None] * pvec).sum(-1)
        ok = det.abs() > 1e-12
        inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
        tvec = o[:, None, :] - v0[None]
        uu = (tvec * pvec).sum(-1) * inv
        qvec = torch.cross(tvec, e1[None].expand_as(tvec), dim=-1)
        ww = (d * qvec).sum(-1) * inv
        t = (e2[None] * qvec).sum(-1) * inv
        hit = ok & (uu >= 0) & (ww >= 0) & (uu + ww <= 1) & (t > eps) & (t < length - eps)
        out[c] = ~hit.any(1)
    return out


def test_visibility_point_behind_wall_and_back_of_box():
    # an L-shaped self-occluding object: a wall at y in [-0.1, 0] in front of a block behind it
    wall_v, wall_f = box([-1, -0.1, -1], [1, 0.0, 1])
    blk_v, blk_f = box([-0.3, 0.5, -0.3], [0.3, 1.1, 0.3])
    verts = torch.cat([wall_v, blk_v])
    faces = torch.cat([wall_f, blk_f + len(wall_v)])
    vms, Ks = look_at_cameras([[0.0, -5.0, 0.0], [0.0, 6.0, 0.0], [6.0, 0.8, 0.0]], target=(0.0, 0.4, 0.0))  # front, back, side
    pts = torch.tensor(
        [
            [0.0, 0.5, 0.0],  # block's front face: hidden by the wall from the front
            [0.0, 1.1, 0.0],  # block's back face: visible only from the back
            [0.0, -0.1, 0.5],  # wall's front face: visible from the front
            [0.3, 0.8, 0.1],  # block's +x side face
        ]
    )
    vis = mesh_visibility(pts, verts, faces, vms, Ks, (64, 64))
    # every segment that starts on a face and leaves through the object's interior is blocked
    expected = torch.tensor(
        [
            [False, False, True, False],  # front camera: only the wall's front face
            [False, True, False, False],  # back camera: only the block's back face
            [False, False, False, True],  # side camera (+x): only the block's +x face
        ]
    )
    assert torch.equal(vis, expected), vis


def test_depth_buffer_visibility_agrees_with_ray_casting():
    # a bumpy closed surface with real self-occlusion (a sphere with two lobes), random surface points
    from track4dgen.stage2.gaussians import sample_surface

    n_lat, n_lon = 24, 48
    th = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)
    ph = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)[:-1]
    T, P = torch.meshgrid(th, ph, indexing="ij")
    r = 1.0 + 0.45 * torch.cos(2 * P) * torch.sin(T) ** 2  # two lobes along x hide parts of the waist
    verts = torch.stack([r * torch.sin(T) * torch.cos(P), r * torch.sin(T) * torch.sin(P), r * torch.cos(T)], -1).reshape(-1, 3)
    faces = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [(a, c, b), (b, c, d)]
    faces = torch.tensor(faces)
    samples = sample_surface(verts.numpy(), faces.numpy(), np.zeros((len(verts), 3)), 600, seed=1)
    pts = torch.tensor(samples.points, dtype=torch.float32)
    eyes = [[4.0 * math.cos(a), 4.0 * math.sin(a), 1.0] for a in (0.3, 1.2, 2.5, 4.0)]
    vms, Ks = look_at_cameras(eyes, size=64, fov_deg=45.0)
    zbuf = mesh_visibility(pts, verts.float(), faces, vms, Ks, (64, 64))
    ref = ray_cast_visibility(pts, verts.float(), faces, torch.linalg.inv(vms)[:, :3, 3])
    assert 0.25 < float(ref.float().mean()) < 0.75  # the test really has hidden and visible points
    # the two differ only where the view grazes the surface (both are marginal there)
    to_cam = torch.linalg.inv(vms)[:, None, :3, 3] - pts[None]
    cos = ((to_cam / to_cam.norm(dim=-1, keepdim=True)) * torch.tensor(samples.normals)[None]).sum(-1).abs()
    clear = cos > 0.2
    assert float((zbuf == ref)[clear].float().mean()) > 0.995
    assert float((zbuf == ref).float().mean()) > 0.97


def test_features_average_only_visible_views():
    from track4dgen.cameras import rig_cameras

    cams = rig_cameras(32, azimuths_deg=(0.0, 180.0))
    Ks = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    vms = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    verts, faces = box([-0.5, -0.5, -0.5], [0.5, 0.5, 0.5])
    pts = torch.tensor([[0.0, -0.5, 0.0], [0.0, 0.5, 0.1]])  # front face, back face
    vis = mesh_visibility(pts, verts, faces, vms, Ks, (32, 32))
    assert vis.tolist() == [[True, False], [False, True]]
    feats = torch.zeros(2, 3, 1, 4, 4)
    feats[0] = 1.0  # view 0 (front) says 1, view 1 (back) says 5, frame 2 doubles both
    feats[1] = 5.0
    feats[:, 2] *= 2
    out = sample_features(feats, pts, Ks, vms, (32, 32), vis)
    assert out.shape == (3, 2, 1)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 1.0, 2.0]))
    torch.testing.assert_close(out[:, 1, 0], torch.tensor([5.0, 5.0, 10.0]))
    both = sample_features(feats, pts, Ks, vms, (32, 32), torch.ones_like(vis))
    torch.testing.assert_close(both[0, :, 0], torch.tensor([3.0, 3.0]))


def test_anchored_model_keeps_frame0_at_the_mesh_and_still_learns_motion():
    from track4dgen.stage2.config import Stage2Config
    from track4dgen.stage2.model import Stage2Model

    v, f, c = two_triangles()
    cfg = Stage2Config(num_gaussians=200, hexplane_resolution=[8, 8, 4], hexplane_dim=8, head_hidden=16)
    assert cfg.anchor_first_frame
    model = Stage2Model.build(cfg, v, f, c, num_frames=5, seed=0)
    canon = model.gaussians.means.detach().clone()
    for frame in range(5):  # identity at start
        torch.testing.assert_close(model.frame(frame).means, canon)
    opt = torch.optim.Adam(model.deformation.parameters(), lr=2e-2)
    shift = torch.tensor([0.0, 0.0, 0.3])
    for _ in range(30):  # ask for a lift at frame 3 only
        opt.zero_grad()
        loss = (model.frame(3).means - (canon + shift)).pow(2).mean() + (model.frame(1).means - canon).pow(2).mean()
        loss.backward()
        opt.step()
    lift = (model.frame(3).means - canon).mean(0).detach()
    assert float(lift[2]) > 0.15, lift  # the anchored field is not stuck at its zero-gradient start
    torch.testing.assert_close(model.frame(0).means, canon)  # frame 0 stays exactly on the mesh


def test_pyramid_levels_give_a_long_range_pull_where_full_resolution_has_none():
    ys, xs = torch.meshgrid(torch.arange(32.0) + 0.5, torch.arange(32.0) + 0.5, indexing="ij")

    def blob(cx: torch.Tensor) -> torch.Tensor:  # a 1-px-wide blob at (cx, 16) as [1, H, W, ...]
        a = torch.exp(-((xs - cx) ** 2 + (ys - 16) ** 2) / (2 * 0.7**2))
        return a[None, :, :, None]

    target_alpha = blob(torch.tensor(22.0))
    target = torch.cat([torch.zeros(1, 32, 32, 3), target_alpha], dim=-1)
    bg = torch.zeros(3)
    grads = {}
    for levels in (0, 4):
        cx = torch.tensor(10.0, requires_grad=True)  # 12 px away: no overlap at full resolution
        alpha = blob(cx)
        loss, _ = reconstruction_loss(torch.zeros(1, 32, 32, 3), alpha, target, bg, pyramid_levels=levels)
        loss.backward()
        grads[levels] = float(cx.grad)
    assert grads[4] < 0  # descending moves the blob toward the target (+x)
    assert abs(grads[4]) > 1e4 * abs(grads[0])  # full resolution: no usable pull at all


def test_flat_init_makes_surfels_lying_in_the_triangles():
    v, f, c = two_triangles()
    g = CanonicalGaussians.from_mesh(v, f, c, 50, flat_ratio=0.2)
    s = torch.exp(g.log_scales).detach()
    torch.testing.assert_close(s[:, 2], 0.2 * s[:, 0])
    n0 = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # both triangles lie in z = const planes
    for q in g.quats.detach().double():
        torch.testing.assert_close(quat_to_R(q)[:, 2].abs(), n0, atol=1e-6, rtol=0)
