"""Foreground masks of generated videos (stage1.run.foreground_alpha): a grey object on the grey
background keeps its mask while it moves, and soft edges get soft alpha."""

from __future__ import annotations

import torch

from track4dgen.stage1.run import BACKGROUND, foreground_alpha, straight_rgb

SIZE, SS, FRAMES = 48, 4, 6


def coverage(frame: int) -> torch.Tensor:
    """[H, W] antialiased coverage of a static body (disc) and an arm sliding right 2 px per frame."""
    n = SIZE * SS
    ys, xs = torch.meshgrid((torch.arange(n) + 0.5) / SS, (torch.arange(n) + 0.5) / SS, indexing="ij")
    body = (xs - 18) ** 2 + (ys - 24) ** 2 < 9.0**2
    arm = (xs > 24 + 2 * frame) & (xs < 36 + 2 * frame) & (ys > 20) & (ys < 26)
    hit = (body | arm).float()
    return hit.reshape(SIZE, SS, SIZE, SS).mean(dim=(1, 3))


def grey_object_video(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(videos [1, F, 3, H, W] composited on grey with generation-like noise, true alpha [1, F, 1, H, W])."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    frames, alphas = [], []
    for f in range(FRAMES):
        a = coverage(f)
        u = torch.where(xs > 23, xs - 2 * f, xs)  # texture coordinates: the arm's move with it
        shade = 0.53 + 0.01 * torch.sin(u / 3.0) * torch.cos(ys / 4.0)  # grey, within 0.04 of the background
        rgb = shade[None].expand(3, -1, -1).clone()
        rgb[0] += 0.25 * ((xs > 14) & (xs < 17)).float()  # one reddish stripe on the body
        comp = rgb * a + BACKGROUND * (1 - a) + 0.004 * torch.randn(3, SIZE, SIZE, generator=g)
        frames.append(comp)
        alphas.append(a[None])
    return torch.stack(frames)[None], torch.stack(alphas)[None]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


def test_a_moving_grey_object_keeps_its_mask():
    videos, truth = grey_object_video()
    alpha = foreground_alpha(videos, truth[:, 0])
    assert alpha.shape == truth.shape
    for f in range(FRAMES):
        naive = ((videos[0, f] - BACKGROUND).abs().amax(0) > 0.04).float()  # the old rule
        if f > 0:
            assert iou(naive, truth[0, f, 0]) < 0.3  # this really is an object the old rule loses
        assert iou(alpha[0, f, 0], truth[0, f, 0]) > 0.95, f
    # the arm's new place counts, its old place (background again) does not
    assert float(alpha[0, -1, 0, 23, 44]) > 0.9 and float(alpha[0, -1, 0, 23, 26]) > 0.9
    assert float(alpha[0, -1, 0, 23, 30]) < 0.1


def test_soft_edges_get_soft_alpha_and_compositing_gives_the_frame_back():
    videos, truth = grey_object_video(seed=1)
    alpha = foreground_alpha(videos, truth[:, 0])
    edge = (truth > 0.1) & (truth < 0.9)
    assert float((alpha - truth)[edge].abs().mean()) < 0.2
    rgb = straight_rgb(videos, alpha)
    recomposed = rgb * alpha + BACKGROUND * (1 - alpha)
    solid = (alpha >= 0.5).expand_as(videos)
    assert torch.allclose(recomposed.expand_as(videos)[solid], videos[solid], atol=1e-5)
