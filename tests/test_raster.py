"""Rasterizer tests: our torch backend against a brute-force float64 reference (values and
gradients), against closed-form images, depth ordering, culling, backend selection, and
against gsplat when a CUDA machine with gsplat is available."""

from __future__ import annotations

import numpy as np
import math

import pytest
import torch

from track4dgen.cameras import rig_cameras
from track4dgen.stage2.raster import rasterize, select_backend
from track4dgen.stage2.raster.gsplat import gsplat_available
from track4dgen.stage2.raster.reference import render_reference
from track4dgen.stage2.raster.torch_cpu import rasterize_torch

RES = 24


def _cams(azimuths=(0.0, 90.0), res=RES):
    cams = rig_cameras(res, azimuths_deg=azimuths)
    vm = torch.tensor(np.stack([c.w2c for c in cams]), dtype=torch.float32)
    K = torch.tensor(np.stack([c.K for c in cams]), dtype=torch.float32)
    return vm, K


def _random_scene(seed: int, n: int = 40, per_camera_colors: bool = False, dim: int = 3):
    """Overlapping Gaussians at many depths, some straddling the image border, one cluster of
    opaque Gaussians stacked along a view ray (saturates transmittance), and a few placed
    behind / at the near plane of camera 0."""
    g = torch.Generator().manual_seed(seed)
    vm, K = _cams()
    means = (torch.rand(n, 3, generator=g) - 0.5) * 1.8  # the rig sees about +-1.1 at 24 px
    means[:6] = torch.tensor([[0.0, -0.2 * i, 0.05 * i] for i in range(6)])  # stacked in depth
    # camera 0 sits at the rig's front; put two Gaussians behind it and one inside the near plane
    eye0 = torch.linalg.inv(vm[0].double())[:3, 3].float()
    fwd0 = vm[0, 2, :3]
    means[6] = eye0 - 0.3 * fwd0
    means[7] = eye0 - 1.0 * fwd0 + 0.1
    means[8] = eye0 + 0.005 * fwd0
    means[9] = torch.tensor([1.15, 0.0, 0.0])  # straddles the left/right border of camera 0
    means[10] = torch.tensor([1.9, 0.0, 1.0])  # centre outside the Jacobian's 1.3x frustum clamp
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.12 + 0.01
    scales[:6] = 0.15
    scales[10] = 0.5
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    opac[:6] = 0.98
    opac[:2] = 0.9995  # above the 0.999 alpha clamp
    C = vm.shape[0]
    shape = (C, n, dim) if per_camera_colors else (n, dim)
    colors = torch.rand(*shape, generator=g)
    bg = torch.rand(C, dim, generator=g)
    return [means, quats, scales, opac, colors], vm, K, bg


def _grads(fn, params, weights_seed=123):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    img, alpha = fn(params)
    gw = torch.Generator().manual_seed(weights_seed)
    w_img = torch.rand(img.shape, generator=gw, dtype=torch.float64)
    w_alpha = torch.rand(alpha.shape, generator=gw, dtype=torch.float64)
    loss = (img.double() * w_img).sum() + (alpha.double() * w_alpha).sum()
    return img.detach().double(), alpha.detach().double(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize(
    "seed,per_camera_colors,dim,mode",
    [(0, False, 3, "classic"), (1, False, 3, "classic"), (2, True, 3, "classic"), (3, False, 5, "classic"),
     (4, False, 3, "antialiased"), (5, True, 3, "antialiased")],
)
def test_torch_backend_matches_reference_values_and_gradients(seed, per_camera_colors, dim, mode):
    params, vm, K, bg = _random_scene(seed, per_camera_colors=per_camera_colors, dim=dim)
    ours = _grads(lambda p: rasterize(*p, vm, K, RES, RES, bg, backend="torch", rasterize_mode=mode), params)
    ref = _grads(lambda p: render_reference(*p, vm, K, RES, RES, bg, rasterize_mode=mode), params)
    img, alpha, grads = ours
    rimg, ralpha, rgrads = ref
    # the scene must exercise what it claims: coverage, near-opaque and empty pixels
    assert ralpha.max() > 0.99 and (ralpha == 0).any() and ralpha.mean() > 0.2
    torch.testing.assert_close(img, rimg, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha, ralpha, atol=2e-5, rtol=0)
    names = ["means", "quats", "scales", "opacities", "colors"]
    for name, g, rg in zip(names, grads, rgrads):
        scale = rg.abs().max().item()
        assert scale > 0, f"reference gradient for {name} is zero: the test scene is degenerate"
        err = (g.double() - rg).abs().max().item()
        assert err <= 1e-4 * scale + 1e-6, f"{name}: max grad error {err:.3g} vs scale {scale:.3g}"


def _wall_scene(seed: int = 11):
    """Camera-frame scene: a two-layer opaque wall of splats at z ~ 1 over the left part of the
    image, and small splats behind it everywhere (some hidden, some straddling the edge)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.meshgrid(torch.linspace(-0.7, -0.1, 7), torch.linspace(-0.7, 0.7, 15), indexing="ij")
    wall = torch.stack([xs.flatten(), ys.flatten(), torch.ones(xs.numel())], 1)
    wall = torch.cat([wall, wall + 0.05])
    n_wall, n_back = wall.shape[0], 100
    back = torch.cat([(torch.rand(n_back, 2, generator=g) - 0.5) * 2.2, 2.5 + torch.rand(n_back, 1, generator=g)], 1)
    n = n_wall + n_back
    params = [
        torch.cat([wall, back]),
        torch.randn(n, 4, generator=g),
        torch.cat([torch.full((n_wall, 3), 0.1), torch.rand(n_back, 3, generator=g) * 0.05 + 0.03]),
        torch.cat([torch.full((n_wall,), 0.99), torch.rand(n_back, generator=g) * 0.5 + 0.5]),
        torch.rand(n, 3, generator=g),
    ]
    K = torch.tensor([[[20.0, 0, 12.0], [0, 20.0, 12.0], [0, 0, 1.0]]])
    return params, torch.eye(4)[None], K


def test_occlusion_culling_path_matches_reference(monkeypatch):
    """With depth slicing forced on (small scenes normally skip it), Gaussians hidden behind
    an opaque wall are culled before enumeration, and the image and gradients still equal the
    reference: culling only drops work that could not contribute."""
    from track4dgen.stage2.raster import torch_cpu

    monkeypatch.setattr(torch_cpu, "_MIN_CELLS_TO_SLICE", 0)
    monkeypatch.setattr(torch_cpu, "_DEPTH_SLICES", (0.0, 0.35, 0.7, 1.0))
    params, vm, K = _wall_scene()
    bg = torch.ones(1, 3)
    stats: dict = {}
    img, alpha, grads = _grads(lambda p: rasterize_torch(*p, vm, K, RES, RES, bg, stats=stats), params)
    rimg, ralpha, rgrads = _grads(lambda p: render_reference(*p, vm, K, RES, RES, bg), params)
    assert stats["culled"] >= 20, stats  # the hidden back splats were really skipped
    assert (ralpha > 0.999).float().mean() > 0.3
    torch.testing.assert_close(img, rimg, atol=2e-5, rtol=0)
    torch.testing.assert_close(alpha, ralpha, atol=2e-5, rtol=0)
    for gr, rg in zip(grads, rgrads):
        assert (gr.double() - rg).abs().max().item() <= 1e-4 * rg.abs().max().item() + 1e-6


def test_analytic_projection_backward_equals_autograd():
    """The projection's hand-written backward (used whenever the cameras need no gradient)
    agrees with autograd through the same maths, including Gaussians beyond the Jacobian's
    frustum clamp; camera gradients, when asked for, come from the autograd path."""
    from track4dgen.stage2.raster.torch_cpu import project_gaussians

    params, vm, K, _ = _random_scene(6, n=60)
    ps = [p.double().requires_grad_(True) for p in params[:4]]
    results = []
    for force in (False, True):
        proj = project_gaussians(*ps, vm.double(), K.double(), RES, RES, force_autograd=force)
        gw = torch.Generator().manual_seed(2)
        keep = proj.valid[None]
        loss = (proj.means2d * torch.randn(proj.means2d.shape, generator=gw, dtype=torch.float64) * keep).sum()
        loss = loss + (proj.conics * torch.randn(proj.conics.shape, generator=gw, dtype=torch.float64) * keep).sum()
        results.append(torch.autograd.grad(loss, ps[:3]))
    for fused, auto in zip(*results):
        torch.testing.assert_close(fused, auto, atol=1e-10, rtol=1e-9)
    vm_req = vm.clone().requires_grad_(True)
    img, _ = rasterize(*params, vm_req, K, RES, RES)
    img.sum().backward()
    assert vm_req.grad is not None and vm_req.grad.abs().sum() > 0


def test_reference_gradients_match_finite_differences():
    """Anchors the reference itself: its autograd gradients equal central differences."""
    g = torch.Generator().manual_seed(7)
    n = 2
    vm, K = _cams((0.0,), res=8)
    means = ((torch.rand(n, 3, generator=g) - 0.5) * 0.6).double()
    quats = torch.randn(n, 4, generator=g).double()
    scales = (torch.rand(n, 3, generator=g) * 0.2 + 0.15).double()
    opac = (torch.rand(n, generator=g) * 0.5 + 0.3).double()
    colors = torch.rand(n, 3, generator=g).double()
    inputs = tuple(t.requires_grad_(True) for t in (means, quats, scales, opac, colors))

    def f(*p):
        img, alpha = render_reference(*p, vm.double(), K.double(), 8, 8)
        return img.sum(-1).flatten()[::3], alpha.flatten()[::3]

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("o,cx,cy", [(0.8, 16.3, 14.1), (1.0, 16.5, 14.5)])
def test_single_isotropic_gaussian_matches_closed_form(o, cx, cy):
    """On the optical axis the Jacobian is diag(f/z), so the splat is an isotropic 2D Gaussian
    of variance (f s / z)^2 + 0.3 centred on the principal point (the second case puts the
    centre on a pixel centre with opacity 1, where the 0.999 alpha clamp decides)."""
    W, H, f, z, s = 33, 29, 40.0, 2.0, 0.05
    K = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1.0]]])
    vm = torch.eye(4)[None]
    means = torch.tensor([[0.0, 0.0, z]])
    color = torch.tensor([[0.2, 0.6, 1.0]])
    bg = torch.tensor([[1.0, 0.5, 0.0]])
    img, alpha = rasterize(means, torch.tensor([[0.3, -0.2, 0.5, 0.1]]), torch.full((1, 3), s),
                           torch.tensor([o]), color, vm, K, W, H, bg, backend="torch")
    var = (f * s / z) ** 2 + 0.3
    xs, ys = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    a = np.minimum(0.999, o * np.exp(-0.5 * ((xs - cx) ** 2 + (ys - cy) ** 2) / var))
    a = np.where(a >= 1 / 255, a, 0.0)
    expected = a[..., None] * color.numpy() + (1 - a[..., None]) * bg.numpy()
    np.testing.assert_allclose(alpha[0, ..., 0].numpy(), a, atol=1e-6)
    np.testing.assert_allclose(img[0].numpy(), expected, atol=1e-6)
    assert alpha[0, 0, 0] == 0  # the 1/255 cut-off leaves the far corner empty


def _two_on_axis(z_red: float, z_blue: float):
    vm = torch.eye(4)[None]
    K = torch.tensor([[[30.0, 0, 8.0], [0, 30.0, 8.0], [0, 0, 1.0]]])
    means = torch.tensor([[0.0, 0.0, z_red], [0.0, 0.0, z_blue]])
    args = (torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.2), torch.tensor([0.95, 0.95]),
            torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), vm, K, 16, 16)
    return means, args


def test_front_gaussian_occludes_back_one_whatever_the_input_order():
    means, args = _two_on_axis(1.0, 2.0)
    img, _ = rasterize(means, *args, backend="torch")
    centre = img[0, 8, 8]
    assert centre[0] > 0.9 and centre[2] < 0.1  # red in front
    means, args = _two_on_axis(2.0, 1.0)
    img, _ = rasterize(means, *args, backend="torch")
    centre = img[0, 8, 8]
    assert centre[2] > 0.9 and centre[0] < 0.1  # blue in front
    # permuting the input order does not change the image
    perm = torch.tensor([1, 0])
    img_p, _ = rasterize(means[perm], *[a[perm] for a in args[:4]], *args[4:], backend="torch")
    torch.testing.assert_close(img_p, img)


def test_behind_camera_and_near_plane_are_culled():
    vm = torch.eye(4)[None]
    K = torch.tensor([[[30.0, 0, 8.0], [0, 30.0, 8.0], [0, 0, 1.0]]])
    means = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 0.005]], requires_grad=True)
    img, alpha = rasterize(means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 3), 0.3),
                           torch.tensor([0.9, 0.9]), torch.ones(2, 3), vm, K, 16, 16,
                           torch.zeros(1, 3), backend="torch")
    assert alpha.abs().max() == 0 and img.abs().max() == 0
    img.sum().backward()
    assert torch.isfinite(means.grad).all() and means.grad.abs().max() == 0


def test_chunked_pair_enumeration_gives_identical_results():
    params, vm, K, bg = _random_scene(4)
    full = rasterize_torch(*params, vm, K, RES, RES, bg)
    chunked = rasterize_torch(*params, vm, K, RES, RES, bg, max_cells_per_chunk=97)
    torch.testing.assert_close(chunked[0], full[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(chunked[1], full[1], atol=1e-6, rtol=0)


def test_fitting_a_target_image_moves_the_gaussians():
    """Gradient descent through the rasterizer recovers a shifted Gaussian's position."""
    vm = torch.eye(4)[None]
    K = torch.tensor([[[30.0, 0, 8.0], [0, 30.0, 8.0], [0, 0, 1.0]]])
    fixed = (torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.12), torch.tensor([0.9]),
             torch.tensor([[1.0, 1.0, 1.0]]), vm, K, 16, 16)
    target, _ = rasterize(torch.tensor([[0.1, -0.05, 2.0]]), *fixed, backend="torch")
    means = torch.tensor([[-0.05, 0.05, 2.0]], requires_grad=True)
    opt = torch.optim.Adam([means], lr=0.01)
    losses = []
    for _ in range(40):
        img, _ = rasterize(means, *fixed, backend="torch")
        loss = ((img - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert torch.allclose(means.detach()[0, :2], torch.tensor([0.1, -0.05]), atol=0.01)


def test_backend_selection_and_errors():
    assert select_backend(torch.device("cpu"), "auto") == "torch"
    assert select_backend(torch.device("cpu"), "torch") == "torch"
    with pytest.raises(RuntimeError, match="CUDA"):
        select_backend(torch.device("cpu"), "gsplat")
    if not gsplat_available():
        with pytest.raises(RuntimeError, match=r"pip install gsplat==1\.5\.3"):
            select_backend(torch.device("cuda"), "gsplat")
        assert select_backend(torch.device("cuda"), "auto") == "torch"
    with pytest.raises(ValueError, match="unknown rasterizer backend"):
        select_backend(torch.device("cpu"), "opengl")


def test_bad_shapes_are_named():
    params, vm, K, bg = _random_scene(0)
    means, quats, scales, opac, colors = params
    with pytest.raises(ValueError, match="quats must be"):
        rasterize(means, quats[:, :3], scales, opac, colors, vm, K, RES, RES)
    with pytest.raises(ValueError, match="backgrounds must be"):
        rasterize(means, quats, scales, opac, colors, vm, K, RES, RES, bg[:1])
    with pytest.raises(ValueError, match="colors must be"):
        rasterize(means, quats, scales, opac, colors[:5], vm, K, RES, RES)


@pytest.mark.skipif(not (torch.cuda.is_available() and gsplat_available()), reason="needs CUDA and gsplat")
@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_torch_backend_matches_gsplat(mode):
    params, vm, K, bg = _random_scene(5, n=200)
    dev = torch.device("cuda")
    ours = _grads(lambda p: rasterize(*p, vm, K, RES, RES, bg, backend="torch", rasterize_mode=mode), params)
    theirs = _grads(
        lambda p: rasterize(*[t.to(dev) for t in p], vm.to(dev), K.to(dev), RES, RES, bg.to(dev), backend="gsplat",
                            rasterize_mode=mode),
        params,
    )
    torch.testing.assert_close(ours[0], theirs[0].cpu(), atol=1e-4, rtol=0)
    torch.testing.assert_close(ours[1], theirs[1].cpu(), atol=1e-4, rtol=0)
    for g, gg in zip(ours[2], theirs[2]):
        scale = gg.abs().max().item()
        assert (g - gg.cpu()).abs().max().item() <= 1e-3 * scale + 1e-5


def test_benchmark_row_runs_and_reports_real_timings():
    from benchmarks.bench_raster import bench_one

    row = bench_one(n=300, res=16, cameras=2, backend="torch", device=torch.device("cpu"), repeats=1)
    assert row["backend"] == "torch" and row["cameras"] == 2
    assert row["fwd_bwd_ms"] >= row["forward_ms"] > 0
    assert 0 < row["coverage"] < 1


@pytest.mark.parametrize("sigma_px", [0.3, 0.5, 1.5])
def test_antialiased_mode_keeps_a_small_splats_coverage(sigma_px):
    """The eps2d low-pass widens a splat; "antialiased" scales its opacity so the summed alpha
    (the coverage it adds to the image) stays that of the true, unblurred footprint,
    o * 2 pi sigma^2, whatever its size. "classic" inflates it, most for the smallest splats:
    that inflation is what made fitted silhouettes pull surface Gaussians inward."""
    f, res, o = 20.0, 24, 0.9  # opaque enough that the 1/255 alpha cut-off trims < 1% of the mass
    K = torch.tensor([[[f, 0, res / 2], [0, f, res / 2], [0, 0, 1.0]]])
    args = (torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), sigma_px / f),
            torch.tensor([o]), torch.ones(1, 3), torch.eye(4)[None], K, res, res)
    true_mass = o * 2 * math.pi * sigma_px**2
    _, a_aa = rasterize(*args, backend="torch", rasterize_mode="antialiased")
    _, a_cl = rasterize(*args, backend="torch", rasterize_mode="classic")
    assert a_aa.sum().item() == pytest.approx(true_mass, rel=0.03)
    blurred_mass = o * 2 * math.pi * (sigma_px**2 + 0.3)
    assert a_cl.sum().item() == pytest.approx(blurred_mass, rel=0.03)
    with pytest.raises(ValueError, match="rasterize_mode"):
        rasterize(*args, backend="torch", rasterize_mode="mip")
