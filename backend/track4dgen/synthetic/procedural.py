"""Held-out synthetic objects, generated from a seed (never used to tune Stage Two).

Why: the five named objects (objects.py) are what Stage Two's settings and heuristics were tuned
on, and each has one moving part on a world axis over a large still body. Real rigged characters
differ, so these differ the same ways: 2-5 thin limbs on a body, several moving at once with their
own phases, joint axes in random directions (never a world axis), fast two-bone swings (walk cycles,
dancing arms, 1-2 swings per clip) and smooth bends (tails, antennae); the whole body sways about a
tilted axis and breathes (squash), so no large part stays exactly still. Colours come from a
palette that includes greys, including grey-on-grey parts (the case foreground masks by
"differs from a grey background" get wrong).

``procedural_object(seed, t)`` returns the same (vertices [F,V,3], faces, colours, prompt) tuple as
the named objects, so ``objects.make_object("proc_<seed>")`` normalises and serves it like them.
Everything is a function of ``seed`` only (numpy's PCG64), so the same seed gives the same object
on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import motions as mo
from .shapes import Part, checker, ellipsoid, limb, merge, place, rotation, stripes

PREFIX = "proc_"
HELDOUT_SEEDS: tuple[int, ...] = (3, 5, 8, 11, 37)  # the benchmark's held-out set

GREYS = [(0.5, 0.5, 0.5), (0.42, 0.42, 0.42), (0.6, 0.6, 0.6), (0.35, 0.36, 0.38)]
COLOURS = [(0.85, 0.2, 0.15), (0.95, 0.55, 0.1), (0.95, 0.85, 0.2), (0.2, 0.7, 0.3), (0.1, 0.6, 0.6),
           (0.2, 0.35, 0.85), (0.55, 0.25, 0.7), (0.95, 0.5, 0.7), (0.95, 0.95, 0.92), (0.15, 0.15, 0.2)]


@dataclass
class LimbSpec:
    """One limb's rest placement and motion (world units before normalisation)."""

    kind: str  # "swing" (two-bone: legs, arms) or "bend" (tail, antenna: bends progressively)
    root: np.ndarray  # [3] where it leaves the body
    direction: np.ndarray  # [3] unit, rest direction root -> tip
    axis: np.ndarray  # [3] unit joint axis, perpendicular to ``direction``
    length: float
    amplitude: float  # radians (shoulder for swings, tip bend for bends)
    elbow: float  # radians, elbow swing amplitude (swings only)
    cycles: float  # swings per clip
    phase: float


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _random_perpendicular(rng: np.random.Generator, d: np.ndarray) -> np.ndarray:
    """A random unit vector perpendicular to ``d``, kept away from the world axes (no component
    above 0.9), so no joint turns about x, y or z."""
    for _ in range(100):
        a = _unit(np.cross(d, rng.normal(size=3)))
        if np.abs(a).max() < 0.9:
            return a
    raise RuntimeError("could not draw a joint axis off the world axes")  # practically unreachable


def _palette_pair(rng: np.random.Generator, grey: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if grey:  # grey on grey: low contrast, and close to Stage One's grey background
        i, j = rng.choice(len(GREYS), size=2, replace=False)
        return GREYS[i], GREYS[j]
    i, j = rng.choice(len(COLOURS), size=2, replace=False)
    return COLOURS[i], COLOURS[j]


def describe(seed: int) -> dict:
    """The random choices of object ``seed`` (for tests and the benchmark's notes)."""
    return _design(np.random.default_rng(int(seed)))


def _design(rng: np.random.Generator) -> dict:
    radii = np.array([rng.uniform(0.32, 0.48), rng.uniform(0.26, 0.4), rng.uniform(0.38, 0.6)])
    grey_body = bool(rng.random() < 0.5)
    n_limbs = int(rng.integers(2, 6))
    limbs = []
    for i in range(n_limbs):
        kind = "swing" if (i < 2 or rng.random() < 0.6) else "bend"
        # attach on the body's surface: swings on the sides/bottom (legs, arms), bends anywhere
        theta = rng.uniform(0.35, 2.6) * np.pi / 2  # polar angle from +Z: top to below the equator
        phi = rng.uniform(0.0, 2.0 * np.pi)
        n = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
        root = 0.85 * radii * n  # slightly inside the body so the joint never shows a gap
        direction = _unit(n / radii + 0.4 * rng.normal(size=3))
        limbs.append(LimbSpec(
            kind=kind, root=root, direction=direction, axis=_random_perpendicular(rng, direction),
            length=float(rng.uniform(0.45, 0.75)),
            amplitude=float(rng.uniform(0.45, 0.9) if kind == "swing" else rng.uniform(0.6, 1.2)),
            elbow=float(rng.uniform(0.2, 0.7)), cycles=float(rng.choice([1.0, 1.5, 2.0])),
            phase=float(rng.uniform(0.0, 2.0 * np.pi)),
        ))
    return {
        "radii": radii, "grey_body": grey_body, "limbs": limbs,
        "limb_radius": [float(rng.uniform(0.045, 0.07)) for _ in limbs],
        "limb_grey": [bool(rng.random() < 0.3) for _ in limbs],
        "body_colours": _palette_pair(rng, grey_body),
        "sway_axis": _random_perpendicular(rng, np.array([0.0, 0.0, 1.0])),
        "sway_deg": float(rng.uniform(3.0, 7.0)), "sway_phase": float(rng.uniform(0, 2 * np.pi)),
        "breath": float(rng.uniform(0.03, 0.07)),
    }


def procedural_object(seed: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Build held-out object ``seed`` animated at clip phases ``t`` (identity at t = 0)."""
    rng = np.random.default_rng(int(seed))
    d = _design(rng)
    body = checker(ellipsoid(tuple(d["radii"]), 18, 28), *d["body_colours"], 4, 8)
    parts: list[Part] = [body]
    for i, (spec, r, grey) in enumerate(zip(d["limbs"], d["limb_radius"], d["limb_grey"])):
        a, b = _palette_pair(rng, grey)
        part = stripes(limb(spec.length, r, 0.7 * r, rings=22, segments=10), [a, b], int(rng.integers(3, 7)))
        R = _rotation_to(spec.direction)
        place(part, R, spec.root)
        part.tag = i + 1
        parts.append(part)
    eye_r = 0.05
    for sx in (-1.0, 1.0):  # a readable front (-Y)
        e = place(ellipsoid((eye_r, eye_r * 0.6, eye_r), 6, 10), None,
                  (sx * 0.3 * d["radii"][0], -0.97 * d["radii"][1], 0.45 * d["radii"][2]))
        parts.append(checker(e, (0.15, 0.15, 0.2), (0.95, 0.95, 0.92), 1, 1))
    verts, faces, cols, tags = merge(parts)
    s_of = {i + 1: p.uv[:, 0] for i, p in enumerate(parts[1:1 + len(d["limbs"])])}
    ground = verts[:, 2].min()
    centre_xy = verts[:, :2].mean(0)
    pivot = np.array([centre_xy[0], centre_xy[1], ground])
    frames = []
    for ti in t:
        v = verts.copy()
        for i, spec in enumerate(d["limbs"]):
            m = tags == i + 1
            w = 2.0 * np.pi * spec.cycles * ti + spec.phase
            swing = spec.amplitude * (np.sin(w) - np.sin(spec.phase))
            if spec.kind == "swing":
                elbow_pt = spec.root + spec.direction * 0.5 * spec.length
                bend = spec.elbow * (np.sin(w + 0.9) - np.sin(spec.phase + 0.9))
                v[m] = mo.two_bone_skin(verts[m], s_of[i + 1], spec.axis, spec.root, elbow_pt, swing, bend)
            else:
                v[m] = mo.bend_about_axis(verts[m], spec.root, spec.axis, swing * s_of[i + 1] ** 1.5)
        v = mo.squash(v, d["breath"] * np.sin(2.0 * np.pi * 2.0 * ti), ground, centre_xy)  # breathing
        sway = np.radians(d["sway_deg"]) * (np.sin(2.0 * np.pi * ti + d["sway_phase"]) - np.sin(d["sway_phase"]))
        frames.append(mo.rotate_about(v, rotation(d["sway_axis"], sway), pivot))
    n_swing = sum(spec.kind == "swing" for spec in d["limbs"])
    prompt = (f"a {'grey' if d['grey_body'] else 'colourful'} creature swaying, moving {n_swing} limbs"
              f" and {len(d['limbs']) - n_swing} bending appendages at once")
    return np.stack(frames), faces, cols, prompt


def _rotation_to(direction: np.ndarray) -> np.ndarray:
    """The rotation taking +Z to ``direction`` (the shortest one)."""
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(z, direction)
    sin = np.linalg.norm(axis)
    angle = float(np.arctan2(sin, float(direction @ z)))
    if sin < 1e-9:
        return np.eye(3) if angle < 1.0 else rotation("x", np.pi)
    return rotation(axis, angle)


def heldout_names() -> list[str]:
    """The benchmark's held-out objects (names ``make_object`` accepts)."""
    return [f"{PREFIX}{s}" for s in HELDOUT_SEEDS]


def seed_of(name: str) -> int | None:
    """The seed of a ``proc_<seed>`` name, or None for any other name."""
    if not name.startswith(PREFIX):
        return None
    try:
        return int(name[len(PREFIX):])
    except ValueError:
        return None
