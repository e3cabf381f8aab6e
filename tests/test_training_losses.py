"""L_corr (eq. 4), soft-argmax and L_pos (eq. 5), L_diff and the loss switches."""

from __future__ import annotations

import pytest
import torch

from training.losses import (LossWeights, corr_loss, diffusion_loss, pixels_to_feature, pos_loss,
                             sample_features, soft_argmax, stage1_loss)


pytestmark = pytest.mark.usefixtures("single_thread")  # see conftest.single_thread


def _tracks(N=2, F=3, K=4, h=8, w=8):
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(N, F, K, 2, generator=g) * torch.tensor([w - 2.0, h - 2.0]) + 1.0
    return pts, torch.ones(N, F, K, dtype=torch.bool), torch.ones(N, K)


def test_corr_loss_zero_for_identical_features_positive_otherwise():
    pts, vis, w = _tracks()
    static = torch.randn(2, 1, 16, 8, 8).expand(2, 3, 16, 8, 8)
    still = pts[:, :1].expand_as(pts)  # a point that does not move sees identical features
    assert corr_loss(static, still, vis, w).abs() < 1e-6
    moving = torch.randn(2, 3, 16, 8, 8)
    assert corr_loss(moving, pts, vis, w) > 0.1
    # invisible frames are ignored
    vis2 = vis.clone()
    vis2[:, 1:] = False
    assert corr_loss(moving, pts, vis2, w) == 0


def test_sampling_uses_corner_convention():
    feat = torch.arange(16.0).view(1, 1, 1, 4, 4)  # value = 4*y + x at cell (x, y)
    pts = torch.tensor([[[[2.5, 1.5], [0.5, 3.5]]]])  # centres of cells (2, 1) and (0, 3)
    out = sample_features(feat, pts)[0, 0, :, 0]
    assert torch.allclose(out, torch.tensor([6.0, 12.0]))
    assert torch.allclose(pixels_to_feature(torch.tensor([64.0, 32.0]), (64, 128), (8, 8)), torch.tensor([4.0, 4.0]))


def test_soft_argmax_recovers_planted_peak_subpixel():
    h, w = 16, 20
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for x0, y0 in [(7.3, 8.6), (11.81, 5.25)]:
        scores = -((xs - x0) ** 2 + (ys - y0) ** 2) / 2.0
        p = soft_argmax(scores, temperature=1.0)
        assert torch.allclose(p, torch.tensor([x0, y0]), atol=0.05), p


def test_pos_loss_gradient_moves_features_toward_the_track():
    """One gradient step on frame 2's features moves the soft-argmax toward the tracked point."""
    torch.manual_seed(0)
    C, h, w = 8, 6, 6
    feat = torch.randn(1, 2, C, h, w) * 0.1
    target = torch.tensor([4.5, 1.5])
    pts = torch.stack([torch.tensor([1.5, 3.5]), target]).view(1, 2, 1, 2)
    vis, wq = torch.ones(1, 2, 1, dtype=torch.bool), torch.ones(1, 1)
    f2 = feat[:, 1:].clone().requires_grad_(True)

    def run(f):
        full = torch.cat([feat[:, :1], f], dim=1)
        desc = sample_features(full[:, :1], pts[:, :1])[:, 0]
        from training.losses import cosine_maps

        return pos_loss(full, pts, vis, wq, temperature=0.1), soft_argmax(cosine_maps(full[:, 1:], desc), 0.1)[0, 0, 0]

    loss0, p0 = run(f2)
    loss0.backward()
    assert f2.grad is not None and f2.grad.abs().sum() > 0
    with torch.no_grad():
        f_new = f2 - 0.5 * f2.grad / f2.grad.abs().max()
    loss1, p1 = run(f_new)
    assert loss1 < loss0
    assert (p1 - target).norm() < (p0 - target).norm()


def test_diffusion_loss_ignores_the_conditional_frame_and_switches_work():
    noise = torch.randn(1, 2, 4, 4, 2, 2)
    pred = noise.clone()
    pred[:, :, 0] += 10.0  # frame 1 is the condition: not supervised
    assert diffusion_loss(pred, noise) == 0
    pred[:, :, 2] += 1.0
    assert diffusion_loss(pred, noise) > 0
    feat = torch.randn(2, 4, 8, 4, 4, requires_grad=True)
    pts, vis, w = _tracks(2, 4, 3, 4, 4)
    px = pts * 16  # image 64x64 -> feature 4x4
    full = stage1_loss(pred, noise, feat, px, vis, w, (64, 64), LossWeights())
    assert torch.allclose(full.total, full.diff + 0.1 * full.corr + 10 * full.pos)
    no_corr = stage1_loss(pred, noise, feat, px, vis, w, (64, 64), LossWeights(), use_corr=False)
    assert torch.allclose(no_corr.total, no_corr.diff + 10 * no_corr.pos) and no_corr.corr > 0
    no_pos = stage1_loss(pred, noise, feat, px, vis, w, (64, 64), LossWeights(), use_pos=False)
    no_pos.total.backward()
    g_corr_only = feat.grad.clone()
    assert g_corr_only.abs().sum() > 0
