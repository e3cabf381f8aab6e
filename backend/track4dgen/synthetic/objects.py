"""The synthetic animated objects: procedurally built, vertex-coloured meshes with known motion.

Each object is built in its own units, animated over F frames, then normalised with ONE similarity
transform (taken from the rest pose, applied to every frame) so that the rest pose is centred at
the origin and the whole animation stays inside the unit sphere, as the add-on normalises a
Blender object. World frame = Blender's: +Z up, the object's front faces -Y.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from . import motions as mo
from .procedural import heldout_names, procedural_object, seed_of
from .shapes import Part, checker, ellipsoid, limb, merge, place, rotation, stripes


@dataclass
class AnimatedMesh:
    """A triangle mesh whose vertices move per frame; topology and colours are fixed."""

    name: str
    vertices_per_frame: np.ndarray  # [F, V, 3] float64
    faces: np.ndarray  # [T, 3] int64
    colors: np.ndarray  # [V, 3] float32 in [0, 1], on the 8-bit grid
    prompt: str = ""

    @property
    def canonical(self) -> np.ndarray:
        """The rest pose (frame 0), the geometry that ``mesh.glb`` stores."""
        return self.vertices_per_frame[0]

    @property
    def num_frames(self) -> int:
        return int(self.vertices_per_frame.shape[0])

    @property
    def bbox_diagonal(self) -> float:
        v = self.canonical
        return float(np.linalg.norm(v.max(0) - v.min(0)))


# palette (8-bit friendly)
RED, ORANGE, YELLOW = (0.85, 0.2, 0.15), (0.95, 0.55, 0.1), (0.95, 0.85, 0.2)
GREEN, TEAL, BLUE = (0.2, 0.7, 0.3), (0.1, 0.6, 0.6), (0.2, 0.35, 0.85)
PURPLE, PINK, WHITE, DARK = (0.55, 0.25, 0.7), (0.95, 0.5, 0.7), (0.95, 0.95, 0.92), (0.15, 0.15, 0.2)


def _eyes(center_front: np.ndarray, spacing: float, radius: float) -> list[Part]:
    """Two dark eyes on the front (-Y) so every object has a readable facing."""
    eyes = []
    for sx in (-1.0, 1.0):
        e = ellipsoid((radius, radius * 0.6, radius), rings=6, segments=10)
        place(e, None, center_front + np.array([sx * spacing, 0.0, 0.0]))
        eyes.append(checker(e, DARK, WHITE, 1, 1))
    return eyes


# ------------------------------------------------------------------------------------------------
# objects: each returns (vertices [F,V,3], faces, colors, prompt)

Built = tuple[np.ndarray, np.ndarray, np.ndarray, str]


def _waving_arm(t: np.ndarray) -> Built:
    body = checker(ellipsoid((0.45, 0.35, 0.6)), GREEN, YELLOW, 6, 8)
    head = checker(place(ellipsoid((0.28, 0.28, 0.28), 12, 20), None, (0, 0, 0.82)), TEAL, WHITE, 4, 6)
    shoulder = np.array([0.36, 0.0, 0.3])
    arm_len = 0.8
    up_out = rotation("y", np.radians(55.0))  # +Z -> out along +X and up
    arm = stripes(limb(arm_len, 0.11, 0.08, rings=24, segments=14), [RED, ORANGE, WHITE, BLUE], 6)
    arm_s = arm.uv[:, 0].copy()
    place(arm, up_out, shoulder)
    arm.tag = 1
    parts = [body, head, arm, *_eyes(np.array([0.0, -0.26, 0.9]), 0.1, 0.05)]
    verts, faces, cols, tags = merge(parts)
    is_arm = tags == 1
    elbow = shoulder + up_out @ np.array([0.0, 0.0, arm_len * 0.5])
    axis = np.array([0.0, 1.0, 0.0])  # rotation in the XZ plane: seen face-on from the front view
    frames = []
    for ti in t:
        a = 0.45 * np.sin(2 * np.pi * 1.5 * ti)
        b = 0.7 * (np.sin(2 * np.pi * 1.5 * ti + 0.8) - np.sin(0.8))
        v = verts.copy()
        v[is_arm] = mo.two_bone_skin(verts[is_arm], arm_s, axis, shoulder, elbow, a, b)
        frames.append(v)
    return np.stack(frames), faces, cols, "a green striped creature waving its arm up and down"


def _hopper(t: np.ndarray) -> Built:
    body = checker(ellipsoid((0.55, 0.45, 0.5), 18, 28), ORANGE, PURPLE, 5, 8)
    ears = []
    for sx in (-1.0, 1.0):
        ear = stripes(limb(0.35, 0.08, 0.05, rings=10, segments=10), [PINK, WHITE], 3)
        ears.append(place(ear, rotation("y", sx * np.radians(20.0)), (sx * 0.22, 0.0, 0.38)))
    parts = [body, *ears, *_eyes(np.array([0.0, -0.42, 0.15]), 0.16, 0.07)]
    verts, faces, cols, _ = merge(parts)
    ground = verts[:, 2].min()
    center_xy = verts[:, :2].mean(0)
    frames = []
    for ti in t:
        phi = (2.0 * ti) % 1.0  # two hops per clip
        if phi < 0.5:  # airborne: parabola, a little stretch in the air
            a = phi / 0.5
            height = 0.35 * 4.0 * a * (1.0 - a)
            amount = -0.12 * np.sin(np.pi * a)
        else:  # landed: squash and recover (half the hop, so the squash spans several frames)
            height = 0.0
            amount = 0.3 * np.sin(np.pi * (phi - 0.5) / 0.5) ** 2
        v = mo.squash(verts, amount, ground, center_xy)
        v[:, 2] += height
        frames.append(v)
    return np.stack(frames), faces, cols, "an orange ball-shaped bunny hopping twice, squashing on each landing"


def _spinner(t: np.ndarray) -> Built:
    base = checker(place(ellipsoid((0.6, 0.6, 0.12), 8, 32), None, (0, 0, 0.0)), DARK, WHITE, 2, 12)
    pole = stripes(limb(0.7, 0.09, 0.07, rings=8, segments=12), [BLUE, WHITE], 4)
    place(pole, None, (0, 0, 0.05))
    hub = checker(place(ellipsoid((0.14, 0.14, 0.1), 8, 16), None, (0, 0, 0.8)), YELLOW, RED, 2, 4)
    hub.tag = 1
    blades = []
    for i, col in enumerate([(RED, WHITE), (GREEN, WHITE), (BLUE, YELLOW)]):
        blade = ellipsoid((0.09, 0.03, 0.3), 14, 12)  # long along its own z
        checker(blade, col[0], col[1], 5, 2)
        R = rotation("z", 2 * np.pi * i / 3) @ rotation("x", np.radians(15.0)) @ rotation("y", np.pi / 2)
        place(blade, R, np.array([0.0, 0.0, 0.8]) + rotation("z", 2 * np.pi * i / 3) @ np.array([0.38, 0.0, 0.0]))
        blade.tag = 1
        blades.append(blade)
    verts, faces, cols, tags = merge([base, pole, hub, *blades])
    spin = tags == 1
    pivot = np.array([0.0, 0.0, 0.8])
    frames = []
    for ti in t:
        v = verts.copy()
        v[spin] = mo.rotate_about(verts[spin], rotation("z", 2 * np.pi * ti), pivot)  # one turn per clip
        frames.append(v)
    return np.stack(frames), faces, cols, "a toy propeller on a stand, its three coloured blades spinning"


def _squash_stretch(t: np.ndarray) -> Built:
    blob = ellipsoid((0.6, 0.6, 0.65), 24, 32)
    ang = blob.uv[:, 1] * 2 * np.pi
    bump = 1.0 + 0.06 * np.sin(3 * ang) * np.sin(np.pi * blob.uv[:, 0])
    blob.vertices[:, :2] *= bump[:, None]
    checker(blob, PINK, BLUE, 6, 10)
    verts, faces, cols, _ = merge([blob, *_eyes(np.array([0.0, -0.56, 0.2]), 0.18, 0.08)])
    ground = verts[:, 2].min()
    center_xy = verts[:, :2].mean(0)
    h = verts[:, 2].max() - ground
    frames = []
    for ti in t:
        amount = 0.35 * np.sin(2 * np.pi * 1.5 * ti)  # squash (>0) and stretch (<0) alternately
        v = mo.squash(verts, amount, ground, center_xy)
        lean = 0.25 * np.sin(2 * np.pi * ti)  # and a sideways lean growing with height
        v[:, 0] += lean * ((v[:, 2] - ground) / h) ** 2
        frames.append(v)
    return np.stack(frames), faces, cols, "a pink jelly blob squashing and stretching while leaning side to side"


def _tail_wag(t: np.ndarray) -> Built:
    body = checker(ellipsoid((0.32, 0.55, 0.32), 16, 24), YELLOW, ORANGE, 4, 8)
    head = checker(place(ellipsoid((0.25, 0.25, 0.25), 12, 18), None, (0, -0.62, 0.22)), YELLOW, DARK, 3, 6)
    legs = []
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            leg = stripes(limb(0.3, 0.07, 0.06, rings=6, segments=10), [DARK, YELLOW], 2)
            legs.append(place(leg, rotation("x", np.pi), (sx * 0.18, sy * 0.3, -0.12)))
    tail_len = 0.75
    tail = stripes(limb(tail_len, 0.07, 0.03, rings=24, segments=12), [RED, WHITE, TEAL], 7)
    tail_s = tail.uv[:, 0].copy()
    base = np.array([0.0, 0.5, 0.1])
    place(tail, rotation("x", -np.radians(55.0)), base)  # +Z -> back (+Y) and up
    tail.tag = 1
    parts = [body, head, *legs, tail, *_eyes(np.array([0.0, -0.84, 0.3]), 0.09, 0.045)]
    verts, faces, cols, tags = merge(parts)
    is_tail = tags == 1
    frames = []
    for ti in t:
        amp = 0.9 * np.sin(2 * np.pi * 1.5 * ti)  # one and a half wags per clip
        v = verts.copy()
        v[is_tail] = mo.bend_about_z(verts[is_tail], base, amp * tail_s**1.5)
        frames.append(v)
    return np.stack(frames), faces, cols, "a yellow dog-like toy wagging its striped tail"


OBJECTS: dict[str, Callable[[np.ndarray], Built]] = {
    "waving_arm": _waving_arm,
    "hopper": _hopper,
    "spinner": _spinner,
    "squash_stretch": _squash_stretch,
    "tail_wag": _tail_wag,
}


def list_objects() -> list[str]:
    """The tuning set: the named objects Stage Two's settings were tuned on. ``make_object`` also
    accepts ``proc_<seed>`` for any integer seed (``procedural.py``; ``list_heldout`` names the
    benchmark's held-out ones)."""
    return list(OBJECTS)


def list_heldout() -> list[str]:
    """The benchmark's held-out objects: procedurally varied, never used for tuning."""
    return heldout_names()


def _builder(name: str) -> Callable[[np.ndarray], Built]:
    if name in OBJECTS:
        return OBJECTS[name]
    seed = seed_of(name)
    if seed is None:
        raise ValueError(f"unknown synthetic object {name!r}; choose one of {list_objects()} or proc_<seed> (e.g. {list_heldout()[0]})")
    return lambda t: procedural_object(seed, t)


NORMALISE_PHASES = 128  # dense, fixed sampling of the motion that sets the normalisation


def normalisation(reference_frames: np.ndarray, radius: float = 1.0) -> tuple[np.ndarray, float]:
    """(centre, scale): centre of the rest pose's bounding box, and the scale that brings every
    reference frame inside a sphere of ``radius``. One transform for all frames, so the motion
    itself is unchanged; the reference is a fixed dense sampling of the clip so the rest pose is
    identical whatever the number of frames written."""
    rest = reference_frames[0]
    center = 0.5 * (rest.min(0) + rest.max(0))
    extent = np.linalg.norm(reference_frames - center, axis=-1).max()
    return center, radius / extent


@lru_cache(maxsize=None)
def _cached_normalisation(name: str) -> tuple[np.ndarray, float]:
    return normalisation(_builder(name)(mo.phases(NORMALISE_PHASES))[0])


def make_object(name: str, frames: int = 16) -> AnimatedMesh:
    """Build a synthetic object animated over ``frames`` frames (frame 0 = rest pose)."""
    build = _builder(name)
    center, scale = _cached_normalisation(name)
    verts, faces, cols, prompt = build(mo.phases(frames))
    return AnimatedMesh(name, (verts - center) * scale, faces.astype(np.int64), cols, prompt)
