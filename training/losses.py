"""Stage One losses (paper §3.2): diffusion, track correspondence (eq. 4), track position (eq. 5).

L1 = w_diff * L_diff + w_corr * L_corr + w_pos * L_pos, weights 1.0 / 0.1 / 10 by default; any
term can be switched off (ablations ``--no-corr`` / ``--no-pos``).

Shapes: features ``h`` are the U-Net's up-block temporal features ``[N, F, C, h, w]`` with
N = batch x views; tracks are pixel coordinates ``[N, F, K, 2]`` of the K sampled queries in the
image (corner-origin convention), visibility ``[N, F, K]`` bool, per-query weight ``[N, K]``
(0 for padding queries of views without any valid query). Pixel -> feature coordinates is a plain
scale (w / W): with the corner convention a feature cell covers the pixels it pools.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    diff: float = 1.0
    corr: float = 0.1
    pos: float = 10.0
    pos_temperature: float = 0.1  # softmax temperature over cosine similarities (cos in [-1, 1])
    huber_delta: float = 1.0  # in feature cells


# ------------------------------------------------------------------------------------ diffusion
def noise_condition_frame(z0: torch.Tensor, beta: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Paper eq. 2 for frame 0 (the conditional frame): z + beta_t * eps' (beta per batch item)."""
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    return z0 + beta.view(-1, *([1] * (z0.ndim - 1))).to(z0.dtype) * eps


def diffusion_loss(noise_pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """epsilon-prediction MSE on frames 2..F of ``[B, V, F, C, h, w]`` (frame 1 is the condition)."""
    return F.mse_loss(noise_pred[:, :, 1:].float(), noise[:, :, 1:].float())


# ------------------------------------------------------------------------------------ sampling
def pixels_to_feature(points: torch.Tensor, image_size: tuple[int, int], feature_size: tuple[int, int]) -> torch.Tensor:
    """Pixel coords [..., 2] (x, y) -> feature-map coords (same corner-origin convention)."""
    H, W = image_size
    h, w = feature_size
    return points * points.new_tensor([w / W, h / H])


def sample_features(feat: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear features at feature-map coords: feat [N, F, C, h, w], points [N, F, K, 2] -> [N, F, K, C]."""
    N, Fr, C, h, w = feat.shape
    K = points.shape[2]
    grid = points / points.new_tensor([w, h]) * 2.0 - 1.0  # corner convention <-> align_corners=False
    out = F.grid_sample(feat.reshape(N * Fr, C, h, w), grid.reshape(N * Fr, K, 1, 2).to(feat.dtype),
                        mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(N, Fr, C, K).permute(0, 1, 3, 2)


def soft_argmax(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """scores [..., h, w] -> expected (x, y) [..., 2] in feature coords (cell centres at +0.5)."""
    h, w = scores.shape[-2:]
    prob = torch.softmax(scores.flatten(-2) / temperature, dim=-1).reshape(scores.shape)
    xs = torch.arange(w, device=scores.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(h, device=scores.device, dtype=prob.dtype) + 0.5
    x = (prob.sum(-2) * xs).sum(-1)
    y = (prob.sum(-1) * ys).sum(-1)
    return torch.stack([x, y], dim=-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------ tracking
def corr_loss(feat: torch.Tensor, points: torch.Tensor, vis: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 4: mean over views, adjacent frames and visible tracks of 1 - cos(h_j(p_j), h_{j+1}(p_{j+1})).

    feat [N, F, C, h, w]; points in feature coords [N, F, K, 2]; vis [N, F, K]; weight [N, K].
    """
    desc = sample_features(feat.float(), points.float())  # [N, F, K, C]
    cos = F.cosine_similarity(desc[:, :-1], desc[:, 1:], dim=-1, eps=1e-6)  # [N, F-1, K]
    mask = vis[:, :-1] & vis[:, 1:] & (weight[:, None, :] > 0)
    return _masked_mean(1.0 - cos, mask)


def cosine_maps(feat: torch.Tensor, desc: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each descriptor [N, K, C] with every cell of feat [N, F, C, h, w] -> [N, F, K, h, w]."""
    f = F.normalize(feat.float(), dim=2, eps=1e-6)
    d = F.normalize(desc.float(), dim=-1, eps=1e-6)
    return torch.einsum("nfchw,nkc->nfkhw", f, d)


def pos_loss(
    feat: torch.Tensor,
    points: torch.Tensor,
    vis: torch.Tensor,
    weight: torch.Tensor,
    temperature: float = 0.1,
    huber_delta: float = 1.0,
) -> torch.Tensor:
    """Eq. 5: Huber(p_j - p̂_j) with p̂_j the soft-argmax of frame j's cosine map against h_1(p_1).

    Frames 2..F (frame 1 holds the query itself); visible tracks only; feature-map coordinates.
    """
    desc = sample_features(feat[:, :1].float(), points[:, :1].float())[:, 0]  # [N, K, C]
    maps = cosine_maps(feat[:, 1:], desc)  # [N, F-1, K, h, w]
    pred = soft_argmax(maps, temperature)  # [N, F-1, K, 2]
    err = F.huber_loss(pred, points[:, 1:].float(), reduction="none", delta=huber_delta).sum(-1)
    mask = vis[:, 1:] & (weight[:, None, :] > 0)
    return _masked_mean(err, mask)


@dataclass
class LossTerms:
    total: torch.Tensor
    diff: torch.Tensor
    corr: torch.Tensor
    pos: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "diff", "corr", "pos")}


def stage1_loss(
    noise_pred: torch.Tensor,
    noise: torch.Tensor,
    feat: torch.Tensor | None,
    tracks_px: torch.Tensor | None,
    vis: torch.Tensor | None,
    weight: torch.Tensor | None,
    image_size: tuple[int, int],
    w: LossWeights = LossWeights(),
    use_corr: bool = True,
    use_pos: bool = True,
) -> LossTerms:
    """L1 of the paper. Tracking terms are computed (for logging) whenever tracks are given, but
    only enter the total when switched on, so ablation runs still report all three numbers."""
    l_diff = diffusion_loss(noise_pred, noise)
    zero = l_diff.new_zeros(())
    l_corr, l_pos = zero, zero
    if feat is not None and tracks_px is not None:
        pts = pixels_to_feature(tracks_px, image_size, tuple(feat.shape[-2:]))
        l_corr = corr_loss(feat if use_corr else feat.detach(), pts, vis, weight)
        l_pos = pos_loss(feat if use_pos else feat.detach(), pts, vis, weight, w.pos_temperature, w.huber_delta)
    total = w.diff * l_diff
    if use_corr:
        total = total + w.corr * l_corr
    if use_pos:
        total = total + w.pos * l_pos
    return LossTerms(total, l_diff, l_corr, l_pos)


@torch.no_grad()
def nn_track_error(feat: torch.Tensor, tracks_px: torch.Tensor, vis: torch.Tensor, weight: torch.Tensor,
                   image_size: tuple[int, int]) -> torch.Tensor:
    """Tracking quality of features (paper Table 4's probe): for each query, the frame-1
    descriptor's nearest neighbour (max cosine) on every later frame, vs the true track.

    Returns the mean pixel distance over visible (query, frame) pairs, frames 2..F.
    """
    h, w = feat.shape[-2:]
    H, W = image_size
    pts = pixels_to_feature(tracks_px, image_size, (h, w))
    desc = sample_features(feat[:, :1].float(), pts[:, :1].float())[:, 0]
    maps = cosine_maps(feat[:, 1:], desc)  # [N, F-1, K, h, w]
    flat = maps.flatten(-2).argmax(-1)
    pred = torch.stack([(flat % w).float() + 0.5, (flat // w).float() + 0.5], dim=-1)
    pred_px = pred * pred.new_tensor([W / w, H / h])
    err = (pred_px - tracks_px[:, 1:].float()).norm(dim=-1)
    return _masked_mean(err, vis[:, 1:] & (weight[:, None, :] > 0))
