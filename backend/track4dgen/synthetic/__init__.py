"""Synthetic animated objects with exact ground truth (no Blender, no GPU).

``list_objects()`` / ``make_object(name, frames)`` give procedurally built, vertex-coloured meshes
with known per-frame vertices; ``write_job(name, job_dir, ...)`` writes one as a Stage-Two-only job
folder (renders of the conditioning rig, cameras, mesh.glb) plus ground truth in ``gt/`` (exact
animation, exact 2D tracks with visibility, held-out views), which ``load_gt`` reads back.
``make_object("proc_<seed>")`` builds a procedurally varied object (``list_heldout()``: the
benchmark's held-out set, never tuned on), and ``write_job(..., degrade=DEGRADATIONS[...])`` makes
the input videos look generated (noise, flicker, jitter, one view mis-animated, soft edges).
"""

from .degrade import PRESETS as DEGRADATIONS, Degradation
from .objects import AnimatedMesh, list_heldout, list_objects, make_object
from .render import render_animation, render_mesh
from .tracks import compute_tracks
from .writer import GroundTruth, load_gt, load_videos, write_job

__all__ = [
    "AnimatedMesh",
    "DEGRADATIONS",
    "Degradation",
    "GroundTruth",
    "compute_tracks",
    "list_heldout",
    "list_objects",
    "load_gt",
    "load_videos",
    "make_object",
    "render_animation",
    "render_mesh",
    "write_job",
]
