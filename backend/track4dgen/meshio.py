"""Mesh loading for jobs: a GLB/OBJ/PLY file -> vertices, faces, per-vertex colours (numpy).

trimesh does the parsing; this module only flattens scenes, turns textures into vertex colours
and checks the data is usable, so Stage Two and validation see one simple structure.

Job meshes come from other machines (the server's uploads), so a glTF's buffer and image URIs are
refused unless they are embedded ``data:`` URIs -- checked here, before trimesh sees the file,
whatever trimesh's own resolver does (some trimesh releases followed ``/dev/zero`` or ``../..``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MeshError(ValueError):
    """The mesh file cannot be used; the message says what is wrong."""


@dataclass
class MeshData:
    vertices: np.ndarray  # [V, 3] float64, world units (Blender frame, +Z up)
    faces: np.ndarray  # [T, 3] int64
    colors: np.ndarray  # [V, 3] float32 in [0, 1]

    @property
    def bbox_diagonal(self) -> float:
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))


def _vertex_colors(mesh) -> np.ndarray:
    visual = mesh.visual
    try:
        if getattr(visual, "kind", None) == "texture":
            visual = visual.to_color()
        vc = np.asarray(visual.vertex_colors, dtype=np.float32)
        if vc.shape[0] == len(mesh.vertices) and vc.ndim == 2:
            return vc[:, :3] / 255.0
    except Exception:  # no usable colour data: fall back to neutral grey
        pass
    return np.full((len(mesh.vertices), 3), 0.7, dtype=np.float32)


MAX_GLTF_JSON_BYTES = 64 << 20


def refuse_external_uris(path: Path) -> None:
    """Raise MeshError when a glTF/GLB names any buffer or image outside itself."""
    with open(path, "rb") as f:
        head = f.read(20)
        if head[:4] == b"glTF":
            if len(head) < 20:
                raise MeshError(f"mesh {path.name} is a truncated GLB file")
            length, kind = struct.unpack("<I4s", head[12:20])
            if kind != b"JSON" or length > MAX_GLTF_JSON_BYTES:
                raise MeshError(f"mesh {path.name} has no valid GLB JSON chunk")
            raw = f.read(length)
        elif path.suffix.lower() == ".gltf":
            raw = f.read(MAX_GLTF_JSON_BYTES + 1)
        else:
            return
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MeshError(f"mesh {path.name} has an unreadable glTF JSON chunk: {exc}") from exc
    if not isinstance(doc, dict):
        raise MeshError(f"mesh {path.name} has an unreadable glTF JSON chunk")
    for key in ("buffers", "images"):
        items = doc.get(key) or []
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            uri = item.get("uri") if isinstance(item, dict) else None
            if uri is not None and not (isinstance(uri, str) and uri.startswith("data:")):
                raise MeshError(f"mesh {path.name}: {key}[{i}] refers to an external file {str(uri)[:80]!r}; "
                                "export a self-contained .glb (embedded buffers and textures)")


def load_mesh(path: str | Path) -> MeshData:
    """Load and check a mesh. Raises MeshError naming the problem (missing, empty, NaN...)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh file {path} does not exist")
    refuse_external_uris(path)
    try:
        # glTF is Y-up; our exporters write Blender's Z-up frame and we keep coordinates as stored.
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for broken files
        raise MeshError(f"cannot read mesh {path.name}: {exc}") from exc
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        if not meshes:
            raise MeshError(f"mesh {path.name} contains no triangle geometry")
        parts = [(m.vertices, m.faces, _vertex_colors(m)) for m in meshes]
    elif isinstance(loaded, trimesh.Trimesh):
        parts = [(loaded.vertices, loaded.faces, _vertex_colors(loaded))]
    else:
        raise MeshError(f"mesh {path.name} contains no triangle geometry (got {type(loaded).__name__})")
    verts, faces, cols, offset = [], [], [], 0
    for v, f, c in parts:
        verts.append(np.asarray(v, dtype=np.float64))
        faces.append(np.asarray(f, dtype=np.int64) + offset)
        cols.append(c)
        offset += len(v)
    mesh = MeshData(np.concatenate(verts), np.concatenate(faces), np.concatenate(cols))
    check_mesh(mesh, path.name)
    return mesh


def check_mesh(mesh: MeshData, name: str = "mesh") -> None:
    if len(mesh.vertices) == 0 or len(mesh.faces) == 0:
        raise MeshError(f"{name} is empty ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces)")
    if not np.isfinite(mesh.vertices).all():
        bad = int((~np.isfinite(mesh.vertices)).any(1).sum())
        raise MeshError(f"{name} has {bad} vertices with NaN or infinite coordinates")
    if mesh.faces.min() < 0 or mesh.faces.max() >= len(mesh.vertices):
        raise MeshError(f"{name} has faces that index missing vertices")
    v = mesh.vertices
    areas = 0.5 * np.linalg.norm(np.cross(v[mesh.faces[:, 1]] - v[mesh.faces[:, 0]], v[mesh.faces[:, 2]] - v[mesh.faces[:, 0]]), axis=1)
    if not (areas > 0).any():
        raise MeshError(f"{name} has only degenerate (zero-area) faces")
