"""Our own implementation of the CoTracker3 *offline* point tracker.

Why our own: the official ``cotracker`` package is not on PyPI and pulls its own torch hub code;
we only need the offline model's forward pass to label ground-truth videos once. The module
names below are chosen so that ``load_state_dict(strict=True)`` accepts the official checkpoint
``scaled_offline.pth`` (hub repo ``facebook/cotracker3``) unchanged — the names, shapes and the
function it computes were checked against the public reference (see tests/test_tracking_cotracker3.py
and ../shared/fixtures/cotracker3/README.md).

License: CoTracker3's architecture and weights are released under CC-BY-NC 4.0 (non-commercial).
This file re-implements the architecture; using the official weights binds you to that license.

Conventions inside this module follow CoTracker: pixel coordinates with (0, 0) at the *centre* of
the top-left pixel (``align_corners=True``), videos as float [B, T, 3, H, W] in 0..255, queries as
(t, x, y). ``track4dgen.tracking.base`` converts to the project's corner-origin convention.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ClipContext, TrackResult, Tracker, check_inputs
from .convblocks import ResidualBlock

MODEL_RESOLUTION = (384, 512)
HUB_REPO = "facebook/cotracker3"
HUB_FILENAME = "scaled_offline.pth"
LICENSE_NOTE = "CoTracker3 code and weights: CC-BY-NC 4.0 (non-commercial use only)"


# --------------------------------------------------------------------------------------------
# Small numerical helpers
# --------------------------------------------------------------------------------------------
def sincos_time_embedding(dim: int, length: int) -> torch.Tensor:
    """[1, length, dim] sinusoidal embedding (sin half then cos half), as the checkpoint's buffer."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / (dim / 2.0))
    pos = torch.arange(length, dtype=torch.float64)
    ang = pos[:, None] * omega[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)[None].float()


def fourier_encode(x: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """x concatenated with sin(2^k x) for k < num_freqs and their cosines (as sin(. + pi/2))."""
    scales = 2.0 ** torch.arange(num_freqs, dtype=x.dtype, device=x.device)
    xb = (x[..., None, :] * scales[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(torch.cat([xb, xb + 0.5 * math.pi], dim=-1))], dim=-1)


def sample_at(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear sample fmap [B, C, H, W] at pixel-centre coords xy [B, ..., 2] -> [B, C, ...].

    Border padding and align_corners=True, i.e. x = 0 is the centre of the first column.
    """
    B, C, H, W = fmap.shape
    shape = xy.shape[1:-1]
    grid = xy.reshape(B, -1, 1, 2)
    scale = torch.tensor([2.0 / max(W - 1, 1), 2.0 / max(H - 1, 1)], device=xy.device, dtype=xy.dtype)
    grid = grid * scale - 1.0
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(B, C, *shape)


def support_offsets(radius: int, device: torch.device) -> torch.Tensor:
    """[(2r+1)^2, 2] (dx, dy) offsets of the correlation window.

    CoTracker's window is row-major with the *x* offset varying along the first (slow) index and
    the y offset along the second; the corr MLP's weights depend on that order, so we keep it.
    """
    d = torch.linspace(-radius, radius, 2 * radius + 1, device=device)
    dx, dy = torch.meshgrid(d, d, indexing="ij")
    return torch.stack([dx, dy], dim=-1).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# Feature encoder (names match the checkpoint: fnet.*)
# --------------------------------------------------------------------------------------------
def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Two of RAFT's residual blocks with instance norm (CoTracker3's fnet), the first strided."""
    return nn.Sequential(ResidualBlock(cin, cout, "instance", stride), ResidualBlock(cout, cout, "instance"))


class FeatureEncoder(nn.Module):
    """Multi-scale CNN -> 128-d features at 1/stride resolution."""

    def __init__(self, output_dim: int = 128, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride
        d = output_dim
        self.conv1 = nn.Conv2d(3, d // 2, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(d // 2)
        self.layer1 = _stage(d // 2, d // 2, 1)
        self.layer2 = _stage(d // 2, d // 4 * 3, 2)
        self.layer3 = _stage(d // 4 * 3, d, 2)
        self.layer4 = _stage(d, d, 2)
        self.conv2 = nn.Conv2d(d * 3 + d // 4, d * 2, 3, padding=1)
        self.norm2 = nn.InstanceNorm2d(d * 2)
        self.conv3 = nn.Conv2d(d * 2, d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        x = F.relu(self.norm1(self.conv1(x)))
        a = self.layer1(x)
        b = self.layer2(a)
        c = self.layer3(b)
        e = self.layer4(c)
        size = (H // self.stride, W // self.stride)
        feats = [F.interpolate(t, size, mode="bilinear", align_corners=True) for t in (a, b, c, e)]
        x = F.relu(self.norm2(self.conv2(torch.cat(feats, dim=1))))
        return self.conv3(x)


# --------------------------------------------------------------------------------------------
# Transformer (names match the checkpoint: updateformer.*, corr_mlp.*)
# --------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, tanh_gelu: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cin, hidden)
        self.act = nn.GELU(approximate="tanh" if tanh_gelu else "none")
        self.fc2 = nn.Linear(hidden, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head attention with a fused key/value projection (8 heads x 48 dims)."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        self.heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        context = x if context is None else context
        B, N1, C = x.shape
        N2 = context.shape[1]
        h = self.heads
        q = self.to_q(x).reshape(B, N1, h, C // h).transpose(1, 2)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(B, N2, h, C // h).transpose(1, 2)
        v = v.reshape(B, N2, h, C // h).transpose(1, 2)
        attn = ((q @ k.transpose(-2, -1)) * (C // h) ** -0.5).softmax(dim=-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(B, N1, C))


class SelfAttnBlock(nn.Module):
    """Pre-norm transformer block (non-affine LayerNorms, tanh-GELU MLP)."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, tanh_gelu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Queries attend to an (affinely) normalised context."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim, tanh_gelu=True)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(self.norm1(x), self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateFormer(nn.Module):
    """Alternating attention over time (per track) and over tracks via 64 virtual tracks."""

    def __init__(
        self,
        input_dim: int = 1110,
        hidden: int = 384,
        depth: int = 3,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
    ) -> None:
        super().__init__()
        # (sic) the checkpoint spells it "virual_tracks"
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden))
        self.input_transform = nn.Linear(input_dim, hidden)
        self.flow_head = nn.Linear(hidden, 2)
        self.vis_conf_head = nn.Linear(hidden, 2)
        self.time_blocks = nn.ModuleList([SelfAttnBlock(hidden, num_heads) for _ in range(depth)])
        self.space_virtual_blocks = nn.ModuleList([SelfAttnBlock(hidden, num_heads) for _ in range(depth)])
        self.space_point2virtual_blocks = nn.ModuleList([CrossAttnBlock(hidden, num_heads) for _ in range(depth)])
        self.space_virtual2point_blocks = nn.ModuleList([CrossAttnBlock(hidden, num_heads) for _ in range(depth)])
        self.num_virtual = num_virtual_tracks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, N, T, input_dim] -> [B, N, T, 4] = (dx, dy, dvis, dconf)."""
        tokens = self.input_transform(x)
        B, _, T, C = tokens.shape
        tokens = torch.cat([tokens, self.virual_tracks.repeat(B, 1, T, 1)], dim=1)
        N = tokens.shape[1]
        P = N - self.num_virtual
        for i in range(len(self.time_blocks)):
            tokens = self.time_blocks[i](tokens.reshape(B * N, T, C)).reshape(B, N, T, C)
            space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, C)
            points, virtual = space[:, :P], space[:, P:]
            virtual = self.space_virtual2point_blocks[i](virtual, points)
            virtual = self.space_virtual_blocks[i](virtual)
            points = self.space_point2virtual_blocks[i](points, virtual)
            tokens = torch.cat([points, virtual], dim=1).reshape(B, T, N, C).permute(0, 2, 1, 3)
        tokens = tokens[:, :P]
        return torch.cat([self.flow_head(tokens), self.vis_conf_head(tokens)], dim=-1)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class CoTracker3Offline(nn.Module):
    """CoTracker3 offline: all frames in one window, iterative refinement of tracks."""

    def __init__(
        self,
        window_len: int = 60,
        stride: int = 4,
        corr_radius: int = 3,
        corr_levels: int = 4,
        num_virtual_tracks: int = 64,
        model_resolution: Sequence[int] = MODEL_RESOLUTION,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.corr_radius = corr_radius
        self.corr_levels = corr_levels
        self.latent_dim = 128
        self.model_resolution = tuple(model_resolution)
        r = 2 * corr_radius + 1
        self.input_dim = 2 + corr_levels * 256 + 4 * (1 + 2 * 10)  # vis, conf, corr, posenc = 1110
        self.register_buffer("time_emb", sincos_time_embedding(self.input_dim, window_len))
        self.fnet = FeatureEncoder(self.latent_dim, stride)
        self.updateformer = UpdateFormer(self.input_dim, 384, 3, 8, num_virtual_tracks)
        self.corr_mlp = Mlp(r**4, 384, 256, tanh_gelu=False)

    # -- pieces ---------------------------------------------------------------------------
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, T, 3, H, W] in 0..255 -> raw fnet output [B*T, 128, H/s, W/s]."""
        B, T, C, H, W = video.shape
        return self.fnet((2.0 * (video / 255.0) - 1.0).reshape(B * T, C, H, W))

    def _time_embedding(self, T: int, dtype: torch.dtype) -> torch.Tensor:
        if T == self.time_emb.shape[1]:
            return self.time_emb.to(dtype)
        emb = F.interpolate(self.time_emb.float().permute(0, 2, 1), size=T, mode="linear")
        return emb.permute(0, 2, 1).to(dtype)

    def forward(
        self, video: torch.Tensor, queries: torch.Tensor, iters: int = 4
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """video [B,T,3,H,W] 0..255 at model resolution, queries [B,N,3] (t, x, y) pixels.

        Returns coords [B,T,N,2] (pixels), visibility and confidence [B,T,N] (probabilities).
        """
        B, T, _, H, W = video.shape
        N = queries.shape[1]
        s, rad = self.stride, self.corr_radius
        r = 2 * rad + 1
        if H % s or W % s:
            raise ValueError(f"video size {H}x{W} must be divisible by the stride {s}")
        D = self.latent_dim

        fmaps = self.encode(video)
        fmaps = fmaps / fmaps.square().sum(dim=1, keepdim=True).clamp_min(1e-12).sqrt()
        h, w = fmaps.shape[-2:]
        pyramid = [fmaps.reshape(B, T, D, h, w)]
        for _ in range(self.corr_levels - 1):
            prev = pyramid[-1]
            pooled = F.avg_pool2d(prev.flatten(0, 1), 2, stride=2)
            pyramid.append(pooled.reshape(B, T, D, *pooled.shape[-2:]))

        q_frames = queries[:, :, 0].long()
        q_xy = queries[:, :, 1:3] / s
        offsets = support_offsets(rad, video.device)  # [r*r, 2]
        bidx = torch.arange(B, device=video.device)[:, None]

        # Features of the r x r neighbourhood around every query, per pyramid level.
        supports = []
        for lvl, fm in enumerate(pyramid):
            frames = fm[bidx, q_frames]  # [B, N, D, h, w]
            pts = (q_xy / 2**lvl)[:, :, None, :] + offsets  # [B, N, r*r, 2]
            feat = sample_at(frames.flatten(0, 1), pts.reshape(B * N, 1, r * r, 2))  # [B*N, D, 1, r*r]
            supports.append(feat.reshape(B, N, D, r * r).permute(0, 1, 3, 2))  # [B, N, r*r, D]

        coords = q_xy[:, None].expand(B, T, N, 2).float()
        vis = torch.zeros(B, T, N, device=video.device)
        conf = torch.zeros(B, T, N, device=video.device)
        norm = torch.tensor([self.model_resolution[1], self.model_resolution[0]], device=video.device) / s
        time_emb = self._time_embedding(T, video.dtype)

        for _ in range(iters):
            coords = coords.detach()
            corr_embs = []
            for lvl, fm in enumerate(pyramid):
                pts = (coords / 2**lvl)[:, :, :, None, :] + offsets  # [B, T, N, r*r, 2]
                local = sample_at(fm.flatten(0, 1), pts.reshape(B * T, N, r * r, 2))  # [B*T, D, N, r*r]
                local = local.reshape(B, T, D, N, r * r)
                corr = torch.einsum("btcnk,bnjc->btnkj", local, supports[lvl])  # [B,T,N,r*r,r*r]
                corr_embs.append(self.corr_mlp(corr.reshape(B * T * N, r**4)))
            corr_embs = torch.cat(corr_embs, dim=-1).reshape(B, T, N, -1)

            fwd = F.pad(coords[:, :-1] - coords[:, 1:], (0, 0, 0, 0, 0, 1)) / norm
            bwd = F.pad(coords[:, 1:] - coords[:, :-1], (0, 0, 0, 0, 1, 0)) / norm
            motion = fourier_encode(torch.cat([fwd, bwd], dim=-1), 10)

            x = torch.cat([vis[..., None], conf[..., None], corr_embs, motion], dim=-1)
            x = x.permute(0, 2, 1, 3).reshape(B * N, T, -1) + time_emb
            delta = self.updateformer(x.reshape(B, N, T, -1)).permute(0, 2, 1, 3)  # [B, T, N, 4]
            coords = coords + delta[..., :2]
            vis = vis + delta[..., 2]
            conf = conf + delta[..., 3]

        return coords * float(s), torch.sigmoid(vis), torch.sigmoid(conf)


# --------------------------------------------------------------------------------------------
# User-level predictor (resize, support grid, query correction)
# --------------------------------------------------------------------------------------------
def grid_points(size: int, extent: Sequence[int]) -> torch.Tensor:
    """[size*size, 2] (x, y) grid over an (H, W) extent with a W/64 margin, row-major."""
    H, W = extent
    m = W / 64
    ys = torch.linspace(m, H - m, size)
    xs = torch.linspace(m, W - m, size)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


class CoTracker3Predictor(nn.Module):
    """Runs the offline model the way the official predictor does, at 384x512.

    A 6x6 helper grid queried on frame 0 (the official predictor's choice) is tracked along
    with the user's points and dropped from the output.  (The shared fixture cannot tell frame 0
    from the last frame with its degenerate weights; with real weights they differ by ~0.02 px.)
    """

    def __init__(
        self,
        model: Optional[CoTracker3Offline] = None,
        iters: int = 6,
        vis_threshold: float = 0.9,
        support_grid_size: int = 6,
    ) -> None:
        super().__init__()
        self.model = model if model is not None else CoTracker3Offline()
        self.model.eval()
        self.iters = iters
        self.vis_threshold = vis_threshold
        self.support_grid_size = support_grid_size

    @torch.no_grad()
    def forward(
        self,
        video: torch.Tensor,
        queries: Optional[torch.Tensor] = None,
        segm_mask: Optional[torch.Tensor] = None,
        grid_size: int = 0,
        grid_query_frame: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B,T,3,H,W] 0..255; queries [B,N,3] (t,x,y) pixel-centre coords of the input.

        Returns tracks [B,T,N,2] in input pixels and visibility [B,T,N] bool.
        """
        B, T, C, H, W = video.shape
        mh, mw = self.model.model_resolution
        v = F.interpolate(video.reshape(B * T, C, H, W).float(), (mh, mw), mode="bilinear", align_corners=True)
        v = v.reshape(B, T, C, mh, mw)
        to_model = video.new_tensor([(mw - 1) / (W - 1), (mh - 1) / (H - 1)]).float()
        if queries is not None:
            q = queries.clone().float()
            q[:, :, 1:] = q[:, :, 1:] * to_model
        elif grid_size > 0:
            pts = grid_points(grid_size, (mh, mw)).to(video.device)
            if segm_mask is not None:
                m = F.interpolate(segm_mask.float(), (mh, mw), mode="nearest")[0, 0]
                keep = m[pts[:, 1].round().long(), pts[:, 0].round().long()].bool()
                pts = pts[keep]
            q = torch.cat([torch.full_like(pts[:, :1], float(grid_query_frame)), pts], dim=1)
            q = q[None].repeat(B, 1, 1)
        else:
            raise ValueError("give queries or a grid_size > 0")
        n_user = q.shape[1]
        add_support = grid_size == 0 or segm_mask is not None  # as the official predictor
        if add_support:
            sg = grid_points(self.support_grid_size, (mh, mw)).to(video.device)
            sg = torch.cat([torch.zeros_like(sg[:, :1]), sg], dim=1)[None].repeat(B, 1, 1)  # frame 0
            q_all = torch.cat([q, sg], dim=1)
        else:
            q_all = q
        tracks, vis, _ = self.model(v, q_all, iters=self.iters)
        tracks, vis = tracks[:, :, :n_user].clone(), vis[:, :, :n_user] > self.vis_threshold
        # The query point itself is known exactly on its own frame.
        for b in range(B):
            t = q[b, :, 0].long()
            idx = torch.arange(n_user, device=video.device)
            tracks[b, t, idx] = q[b, :, 1:]
            vis[b, t, idx] = True
        tracks = tracks * video.new_tensor([(W - 1) / (mw - 1), (H - 1) / (mh - 1)]).float()
        return tracks, vis


# --------------------------------------------------------------------------------------------
# Checkpoint loading
# --------------------------------------------------------------------------------------------
def load_checkpoint_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint file (plain or wrapped under "model")."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_cotracker3(checkpoint: Optional[str | Path] = None, download: Optional[bool] = None) -> CoTracker3Offline:
    """Build the model and load weights strictly from a file, or from the HF hub (cache).

    ``download=None`` downloads unless ``HF_HUB_OFFLINE`` is set (tests set it: never online).
    """
    import os

    model = CoTracker3Offline()
    if checkpoint is None:
        from huggingface_hub import hf_hub_download

        if download is None:
            download = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("1", "true", "yes", "on")
        try:
            checkpoint = hf_hub_download(HUB_REPO, HUB_FILENAME, local_files_only=not download)
        except Exception as exc:  # noqa: BLE001 - hub raises several types for "not cached"
            raise FileNotFoundError(
                f"CoTracker3 weights {HUB_REPO}/{HUB_FILENAME} are not available locally ({exc}). "
                "Fetch them with `huggingface-cli download facebook/cotracker3 scaled_offline.pth` "
                "(CC-BY-NC 4.0), pass a local path, or use the oracle tracker on synthetic data."
            ) from exc
    model.load_state_dict(load_checkpoint_state(checkpoint), strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------
# Tracker adapter
# --------------------------------------------------------------------------------------------
def run_predictor_on_views(predictor, video: np.ndarray, queries: np.ndarray, device: str = "cpu") -> TrackResult:
    """Track queries [V, P, 2] (corner-origin pixels, frame 0) through video [V, F, H, W, 3] in [0, 1]
    with any CoTracker-style predictor (ours or the official one): one call per view."""
    check_inputs(video, queries)
    out_t, out_v = [], []
    for v in range(video.shape[0]):
        frames = torch.from_numpy(np.ascontiguousarray(video[v])).float().to(device)
        frames = (frames * 255.0).permute(0, 3, 1, 2)[None]  # [1, F, 3, H, W] in 0..255
        q = torch.from_numpy(np.asarray(queries[v], dtype=np.float32)).to(device) - 0.5  # -> centre origin
        q = torch.cat([torch.zeros_like(q[:, :1]), q], dim=1)[None]
        tracks, vis = predictor(frames, queries=q)
        out_t.append(tracks[0].cpu().numpy() + 0.5)
        out_v.append(vis[0].cpu().numpy().astype(bool))
    return TrackResult(np.stack(out_t), np.stack(out_v))


class CoTracker3Tracker(Tracker):
    """CoTracker3 offline, our implementation (loads the official checkpoint). CC-BY-NC 4.0 weights."""

    name = "cotracker3"
    version = "1"

    def __init__(self, checkpoint: Optional[str | Path] = None, device: Optional[str] = None,
                 model: Optional[CoTracker3Offline] = None) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model if model is not None else build_cotracker3(checkpoint)
        self.predictor = CoTracker3Predictor(model.to(self.device))

    def track(self, video, queries, context: Optional[ClipContext] = None) -> TrackResult:
        return run_predictor_on_views(self.predictor, video, queries, self.device)
