"""Stage Two settings. Defaults are the paper's (DESIGN.md §Stage Two); every field can be
overridden from ``job.json``'s ``"stage2"`` object, and unknown keys are rejected so a typo
never silently falls back to a default."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Stage2Config:
    # schedule: reconstruction, then reconstruction + 4D-SDS (ARAP in both; see optimize.py)
    iters_rec: int = 750
    iters_sds: int = 250
    # Progressive frame unlocking in the reconstruction phase (Animate3D: 50 iterations per frame).
    # Frame 0 (the mesh's pose) trains alone first, then frame k joins the pool at iteration k * s
    # with s = min(this, iters_rec / frames), so every frame is in before the SDS phase (with 16
    # frames and 750 iterations s = 46.9). Batches are drawn from the unlocked frames only.
    # 0 = every frame from the start. Sensible range 0 or 10..100.
    progressive_iters_per_frame: int = 50
    # True: canonical means, scales, opacities and rotations stop learning once frame 1 joins
    # (Animate3D freezes its static model); frame 0's warm-up is their only fit. False: they keep
    # learning in the motion phases (SH colour always does). Measured in DESIGN.md "Decisions".
    freeze_canonical: bool = False
    batch_images: int = 64  # images (view, frame pairs) per iteration; 4x16 = all of them
    resolution: int | None = None  # training render size; None = the job's video size
    # canonical Gaussians
    num_gaussians: int = 20000
    init_flat_ratio: float = 1.0  # <1: surfels flattened along the mesh normal (see gaussians.py); 1 = isotropic
    init_opacity: float = 0.3  # sigmoid(opacity) at start (3DGS uses 0.1; a surface-tight cloud can start denser)
    # HexPlane: planes xy xz yz xt yt zt; [spatial, spatial, temporal] resolution, dim per plane
    hexplane_resolution: list[int] = field(default_factory=lambda: [100, 100, 8])
    hexplane_dim: int = 16
    hexplane_multires: list[float] = field(default_factory=lambda: [1.0])  # extra grid scales (4DGaussians: [1, 2])
    head_hidden: int = 64
    anchor_first_frame: bool = True  # motion measured from frame 0 (= the mesh's pose), see stage2/model.py
    head_last_init_std: float = 1e-3  # with anchoring: tiny random last layers (see deformation.py)
    head_depth: int = 1  # Linear layers in the shared trunk before the three heads
    use_diffusion_features: bool = True  # used only when the job carries features
    feature_pca_dim: int = 32  # diffusion maps are PCA-reduced to this many channels before sampling
    feature_proj_dim: int = 16  # learned Linear(feature_pca_dim -> this), concatenated with HexPlane
    # 4D SH: degree L, W cosine coefficients per SH coefficient
    sh_degree: int = 1
    sh_time_basis: int = 4
    # learning rates
    lr_hexplane: float = 0.01
    lr_heads: float = 1e-4
    lr_means: float = 1.6e-4
    # True: canonical centres (the tracked surface points) slide along the mesh (their source
    # triangle's plane) but never off it, and each Gaussian renders at a learned offset along the
    # normal instead (optimize.Trainer.keep_on_surface, gaussians.CanonicalGaussians.surface_offset;
    # default since 2026-11-29: without it the field sinks later frames, DESIGN.md "Drift of still parts")
    means_on_surface: bool = True
    # learning rate of that offset, world units per step (objects are ~2 units across)
    lr_surface_offset: float = 3e-3
    lr_sh: float = 2.5e-3
    lr_opacity: float = 0.05
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    # loss weights
    w_rec: float = 100.0
    rec_pyramid_levels: int = 0  # >0 adds L2 on images blurred by 1, 2, 4.. px (long-range motion signal)
    w_sds: float = 0.01
    # ARAP (SC-GS / Animate3D form, losses.arap_loss), in both phases. 10 = Animate3D's 12 rescaled
    # to our per-image mean and relative strain (DESIGN.md "Decisions"); range 0..1000
    w_arap: float = 10.0
    arap_k: int = 3  # neighbours per node (Animate3D: 3); range 2..16
    arap_samples: int = 512  # nodes sampled per step (Animate3D: 512); range 64..N
    arap_relative: bool = True  # residual / mean neighbour distance (scale-free strain)
    # frame 0's alpha vs the mesh's own silhouette from cameras turned by these azimuth offsets
    # (stage2/mesh_silhouettes.py); 0 = off
    w_silhouette: float = 0.0
    silhouette_offsets_deg: list[float] = field(default_factory=lambda: [22.5, 67.5])
    # 2D point tracks of the videos (stage2/tracks.py, losses.track_loss): used only when the job has
    # tracks (a given tracks.npz, or ``tracker``); weight of the robust track term (30: chosen on the
    # tuning objects with tracker-like noisy tracks, 10..300 swept; 100+ follows track noise on slow
    # parts, benchmarks/RESULTS.md "2D-track loss"), the query points each Gaussian follows and how far
    # (px at the training resolution) they may be from it
    w_track: float = 30.0
    # a track-only warm-up of the motion field before the schedule (optimize.Trainer.warm_up_on_tracks;
    # all frames and views at once, no rendering), only with tracks: without it look-alike parts (a
    # propeller's blades) settle in the images' wrong phase (spinner 0.95 -> 0.12 of still). Iterations
    # (0 = none); residuals below the dead zone (training px) are left to the images, so tracker noise
    # does not move still parts (2 px: tail_wag 0.49, 3 px: 0.43, none: 0.81); its ARAP weight fixes
    # depth along single-view rays without fighting the tracks (50: spinner's blades lag, 0: depth
    # drifts). Chosen on the tuning objects, benchmarks/RESULTS.md "Track warm-up"
    track_warmup_iters: int = 300
    # w_track decays exponentially to this fraction over the schedule; 1 = constant. 0.1 helps slow detail
    # (tail_wag 0.152 -> 0.085 %) but hurts whole-body motion and the held-out objects (proc_5 0.118 ->
    # 0.133 of still), so it is not the default (benchmarks/RESULTS.md)
    track_final_ratio: float = 1.0
    track_warmup_deadzone_px: float = 3.0
    track_warmup_w_arap: float = 5.0
    # weight of a tracker's estimate of a point while it is hidden in that view (stage2/tracks.py; 0 =
    # hidden frames give no target). Without it a part that turns behind another is cut short
    # (spinner's blade tips: 1.8 % of the mesh's faces flipped vs 0.36 %); it costs the held-out
    # objects 0.01-0.03 points of err3d under our pessimistic drift model (benchmarks/RESULTS.md)
    track_occluded_weight: float = 0.5
    track_k: int = 3  # the Gaussians that carry each tracked point (nearest in 3D)
    # track the videos with this tracker before fitting ("cotracker3" needs its weights; "none" = only a
    # given tracks.npz); ``track_grid`` x ``track_grid`` query points per view on frame 0's mask
    tracker: str = "none"
    track_grid: int = 32
    lr_final_ratio: float = 0.1  # HexPlane/heads/means lr decay exponentially to this fraction
    # background the videos were composited on (RGB in [0, 1]); renders use the same
    background: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    raster_backend: str = "auto"  # auto | gsplat | torch
    # "antialiased" (gsplat's mode): opacity compensated for the 0.3 px^2 low-pass, so surfels keep
    # the mesh's silhouette instead of rendering it ~1 px wider (stage2/raster/torch_cpu.py);
    # "classic" is 3DGS / 4DGaussians' original rasterization
    raster_mode: str = "antialiased"
    checkpoint_every: int = 100
    fps: int = 8  # frame rate written into gaussians4d.npz and the render videos
    device: str = "auto"  # auto | cpu | cuda
    # --- mesh animation written next to the Gaussians (issue 14, stage2/vertex_animation.py):
    # how the input mesh's vertices follow the fitted field, and the ARAP clean-up on its edges
    vertex_motion: str = "bind"  # "bind": the 8 nearest Gaussians carry each vertex; "field": the field evaluated at it
    vertex_arap_weight: float = 1.0  # lambda of the ARAP solve: larger follows the field, smaller stays rigid (DESIGN.md)
    vertex_arap_iters: int = 2  # local/global ARAP iterations per frame; 0 = the field's positions as they are
    # how far (fraction) each one-ring may stretch or squash in the ARAP solve; 0 = rigid rings (classic
    # ARAP), which fights a squashing body (squash_stretch: mesh 2.659 vs Gaussians 2.630; 0.2: 2.615)
    vertex_arap_max_stretch: float = 0.2
    write_frame_plys: bool = True  # ply/frame_{f:03d}.ply, standard 3DGS files for splat viewers

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> "Stage2Config":
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown stage2 setting(s) {unknown}; known settings: {sorted(known)}"
            )
        return cls(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_iters(self) -> int:
        return self.iters_rec + self.iters_sds


# Overrides tuned on the synthetic set at 64x64 on CPU (2026-11-25, 750+250 iterations; numbers in
# benchmarks/RESULTS.md). The paper's numbers assume 20k Gaussians, 256 px and batch 64 on a GPU; these
# make the motion learnable with few Gaussians and small batches. Merge with job overrides. The motion
# gate and the rigid rotation search were dropped on 2026-11-29: they helped only on the objects they
# were tuned on (docs/DESIGN.md, "Benchmark-fitted heuristics").
SYNTHETIC_64_OVERRIDES: dict[str, Any] = {
    "num_gaussians": 3000,
    "batch_images": 4,
    # every frame from the start: with 4 images per step the progressive schedule starves the last
    # frames (waving_arm, 400 iterations: err3d 0.24 -> 0.48 %, PSNR 28.1 -> 25.8; DESIGN.md "Decisions")
    "progressive_iters_per_frame": 0,
    "lr_heads": 1e-3,
    "hexplane_resolution": [100, 100, 16],  # one time cell per frame for 16-frame clips
    "hexplane_multires": [0.25, 0.5],  # coarse grids: smooth, coherent motion fields
    "rec_pyramid_levels": 3,  # blurred comparisons pull parts that moved farther than their width
    # 5x the paper's: thin parts (a tail) bend as one piece instead of smearing. Was 100 until the
    # rendered offset (2026-11-29); then 500 it: waving_arm err3d/still 0.45 / 0.46 / 0.51 and
    # tail_wag 0.49 / 0.44 / 0.35 at 30 / 50 / 100 (DESIGN.md "Drift of still parts")
    "w_arap": 50.0,
    "init_flat_ratio": 0.2,  # surfels: centres stay on the surface instead of sinking ~1 sigma
    # the mesh's silhouette between the video views (stage2/mesh_silhouettes.py); 80 = the 20 tuned
    # when the term was wrongly multiplied by the batch size (4)
    "w_silhouette": 80.0,
}
# The CPU demo: the same at a reduced iteration count.
CPU_DEMO_OVERRIDES: dict[str, Any] = {**SYNTHETIC_64_OVERRIDES, "iters_rec": 500, "iters_sds": 0}
