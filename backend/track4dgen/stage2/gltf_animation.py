"""``animated.glb``: the job's input mesh with one morph target per frame and a glTF animation.

The input GLB is edited, not re-exported: its JSON and binary chunk are kept byte for byte and
only appended to (targets, accessors, one animation), so materials, textures, UVs, normals and the
node hierarchy are exactly the input's. Each primitive's POSITION is matched to the trajectories'
frame-0 vertices by position (world space, after node transforms, which is what
``track4dgen.meshio.load_mesh`` flattened), so the primitive's own vertex order and seam copies
need not be known. Morph target ``f`` holds frame f's displacement in the node's local frame; the
animation drives the weights one-hot per frame, keyframed at ``f / fps`` seconds with LINEAR
interpolation, so players blend neighbouring frames. Meshes that are not GLB (OBJ, PLY) are
converted to GLB by trimesh first. Coordinates stay as stored (the project's Z-up frame, like
mesh.glb).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
FLOAT = 5126  # glTF componentType for float32
ARRAY_BUFFER = 34962


def read_glb(data: bytes) -> tuple[dict[str, Any], bytearray]:
    """(JSON, binary chunk) of a GLB file; raises ValueError naming what is wrong."""
    if len(data) < 20:
        raise ValueError("file is too short to be a GLB")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC or version != 2:
        raise ValueError(f"not a glTF 2 binary (magic {magic:#x}, version {version}); export the mesh as .glb")
    offset, gltf, binary = 12, None, bytearray()
    while offset + 8 <= min(length, len(data)):
        size, kind = struct.unpack_from("<II", data, offset)
        chunk = data[offset + 8 : offset + 8 + size]
        if kind == CHUNK_JSON:
            gltf = json.loads(chunk.decode("utf-8"))
        elif kind == CHUNK_BIN and not binary:
            binary = bytearray(chunk)
        offset += 8 + size
    if gltf is None:
        raise ValueError("GLB has no JSON chunk")
    return gltf, binary


def write_glb(gltf: dict[str, Any], binary: bytes) -> bytes:
    """Serialise JSON + binary chunk as GLB (both padded to 4 bytes as the spec requires)."""
    js = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    js += b" " * (-len(js) % 4)
    bn = bytes(binary) + b"\x00" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + (8 + len(bn) if bn else 0)
    out = struct.pack("<III", GLB_MAGIC, 2, total) + struct.pack("<II", len(js), CHUNK_JSON) + js
    if bn:
        out += struct.pack("<II", len(bn), CHUNK_BIN) + bn
    return out


def _node_matrix(node: dict[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    t = np.array(node.get("translation", [0, 0, 0]), dtype=np.float64)
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    s = np.array(node.get("scale", [1, 1, 1]), dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = r * s[None, :]
    m[:3, 3] = t
    return m


def mesh_nodes(gltf: dict[str, Any]) -> dict[int, tuple[int, np.ndarray]]:
    """mesh index -> (first node showing it, that node's world matrix) for the default scene."""
    nodes = gltf.get("nodes", [])
    scenes = gltf.get("scenes", [])
    roots = scenes[gltf.get("scene", 0)]["nodes"] if scenes else list(range(len(nodes)))
    found: dict[int, tuple[int, np.ndarray]] = {}
    stack = [(i, np.eye(4)) for i in roots]
    while stack:
        i, parent = stack.pop()
        world = parent @ _node_matrix(nodes[i])
        if "mesh" in nodes[i] and nodes[i]["mesh"] not in found:
            found[nodes[i]["mesh"]] = (i, world)
        stack.extend((c, world) for c in nodes[i].get("children", []))
    return found


def read_positions(gltf: dict[str, Any], binary: bytes, accessor_index: int) -> np.ndarray:
    """A float32 VEC3 accessor as [n, 3] (strided views handled; sparse/quantised rejected)."""
    acc = gltf["accessors"][accessor_index]
    if acc.get("componentType") != FLOAT or acc.get("type") != "VEC3" or "sparse" in acc or "bufferView" not in acc:
        raise ValueError("POSITION must be a plain float32 VEC3 accessor (no Draco, quantisation or sparse data); "
                         "re-export the mesh without compression")
    view = gltf["bufferViews"][acc["bufferView"]]
    if view.get("buffer", 0) != 0 or "uri" in gltf["buffers"][view.get("buffer", 0)]:
        raise ValueError("POSITION data lives outside the GLB's binary chunk; export a self-contained .glb")
    stride = view.get("byteStride", 12)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    n = acc["count"]
    raw = np.frombuffer(bytes(binary), dtype=np.uint8, count=(n - 1) * stride + 12, offset=start)
    return np.lib.stride_tricks.as_strided(raw, shape=(n, 12), strides=(stride, 1)).copy().view(np.float32).reshape(n, 3)


class _Appender:
    """Appends float32 arrays to the binary chunk as new bufferViews + accessors."""

    def __init__(self, gltf: dict[str, Any], binary: bytearray) -> None:
        self.gltf, self.binary = gltf, binary
        gltf.setdefault("bufferViews", [])
        gltf.setdefault("accessors", [])

    def add(self, array: np.ndarray, kind: str, target: int | None = None, bounds: bool = True) -> int:
        data = np.ascontiguousarray(array, dtype=np.float32)
        self.binary.extend(b"\x00" * (-len(self.binary) % 4))
        view = {"buffer": 0, "byteOffset": len(self.binary), "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        self.binary.extend(data.tobytes())
        self.gltf["bufferViews"].append(view)
        rows = data.reshape(len(data), -1)
        acc: dict[str, Any] = {"bufferView": len(self.gltf["bufferViews"]) - 1, "componentType": FLOAT,
                               "count": int(len(data)), "type": kind}
        if bounds:
            acc["min"] = [float(x) for x in rows.min(0)]
            acc["max"] = [float(x) for x in rows.max(0)]
        self.gltf["accessors"].append(acc)
        return len(self.gltf["accessors"]) - 1


def input_glb_bytes(mesh_path: str | Path) -> bytes:
    """The job mesh as GLB bytes (GLB read as is; other formats converted by trimesh)."""
    path = Path(mesh_path)
    if path.suffix.lower() == ".glb":
        return path.read_bytes()
    import trimesh

    return trimesh.load(path, process=False).export(file_type="glb")


def add_morph_animation(glb: bytes, positions: np.ndarray, fps: float, tolerance: float = 1e-5) -> bytes:
    """``glb`` with one morph target per frame of ``positions`` [F, V, 3] (frame 0 = the GLB's
    vertices in world space) and an animation playing them at ``fps``."""
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    pos = np.asarray(positions, dtype=np.float64)
    frames = pos.shape[0]
    gltf, binary = read_glb(glb)
    if not binary:
        raise ValueError("GLB has no binary chunk to hold mesh data")
    rest = pos[0]
    tree = cKDTree(rest)
    limit = tolerance * max(float(np.linalg.norm(rest.max(0) - rest.min(0))), 1e-12)
    app = _Appender(gltf, binary)
    used = mesh_nodes(gltf)
    if not used:
        raise ValueError("GLB has no mesh node in its scene")
    names = [f"frame_{f:03d}" for f in range(frames)]
    for mesh_index, (_, world) in used.items():
        mesh = gltf["meshes"][mesh_index]
        to_local = np.linalg.inv(world[:3, :3])
        for prim in mesh["primitives"]:
            if "POSITION" not in prim["attributes"]:
                continue
            if prim.get("targets"):
                raise ValueError("the input mesh already has morph targets; apply or remove its shape keys first")
            local = read_positions(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
            world_pts = local @ world[:3, :3].T + world[:3, 3]
            dist, idx = tree.query(world_pts)
            if float(dist.max()) > limit:
                raise ValueError(f"a vertex of mesh {mesh_index} is {float(dist.max()):.3g} from every animated vertex: "
                                 "the animation was computed for another mesh")
            disp = (pos[:, idx] - rest[idx][None]) @ to_local.T  # [F, n, 3] in the node's frame
            prim["targets"] = [{"POSITION": app.add(disp[f], "VEC3", ARRAY_BUFFER)} for f in range(frames)]
        mesh["weights"] = [0.0] * frames
        mesh.setdefault("extras", {})["targetNames"] = names  # shape-key names in Blender's importer
    times = np.arange(frames, dtype=np.float32) / np.float32(fps)
    t_acc = app.add(times, "SCALAR")
    w_acc = app.add(np.eye(frames, dtype=np.float32).reshape(-1), "SCALAR", bounds=False)
    gltf.setdefault("animations", []).append({
        "name": "Track4DGen",
        "samplers": [{"input": t_acc, "output": w_acc, "interpolation": "LINEAR"}],
        "channels": [{"sampler": 0, "target": {"node": node, "path": "weights"}} for node, _ in used.values()],
    })
    gltf["buffers"][0]["byteLength"] = len(binary) + (-len(binary) % 4)
    return write_glb(gltf, binary)


def write_animated_glb(path: str | Path, mesh_path: str | Path, positions: np.ndarray, fps: float) -> Path:
    """Write ``animated.glb`` (module doc) for the job mesh at ``mesh_path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(add_morph_animation(input_glb_bytes(mesh_path), positions, fps))
    return path
