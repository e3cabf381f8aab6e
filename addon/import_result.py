"""Import a backend result (``gaussians4d.npz``) as one animated point object. numpy + bpy only.

What gets created
-----------------
* one mesh object, one vertex per Gaussian, with point attributes ``color`` (RGBA, scene-linear:
  the file's sRGB colours are converted), ``opacity``, ``scale`` (linear, per axis) and ``rot``
  (quaternion) holding frame 0, and per-frame copies ``t4d_pos_{f}``, ``t4d_rot_{f}``,
  ``t4d_scale_{f}``, ``t4d_color_{f}`` for every result frame f;
* a Geometry Nodes modifier (shared node group ``T4DG Gaussians``) that maps the scene's current
  frame to a result frame (linear interpolation between neighbours, so a frame range longer than
  the result plays slowed down smoothly), moves the points there, stores the current ``color`` /
  ``opacity`` / ``scale`` / ``rot``, and shows them either as Gaussian splats (default: one
  icosphere instance per Gaussian, rotated and scaled by its sigmas, with a shader that draws the
  Gaussian falloff times the fitted opacity -- see :func:`ensure_splat_material`; works in EEVEE
  and Cycles) or as fast preview points;
* placement by :func:`placement.place_result`: the transform that undoes the add-on's
  normalisation, parenting to the source, its collection, selection, the frame range.

Why per-frame attributes and Geometry Nodes rather than shape keys: shape keys carry positions
only (no per-frame rotation, scale or colour), and the material could not follow the per-frame
colours. Measured here (bpy 5.0.1, CPU, 100 000 Gaussians x 16 frames):
this importer 0.78 s, 22 ms to evaluate a frame, 60 MiB .blend with all attributes; shape keys
(positions only) 0.29 s, 12 ms per frame, 19 MiB. Both play in real time; only this one carries
the whole Gaussian. With splats (2026-11-29, 2-core CPU shared, load ~18): import 1.14 s, 44 ms
per frame change (preview points 30 ms). The attribute set is plain mesh data, so the .blend plays and renders without
the add-on installed (tests/blender/test_import_result.py reloads it in a Python without the add-on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from .errors import AddonError
from .placement import place_result

NODE_GROUP = "T4DG Gaussians"
NODE_GROUP_VERSION = 3
SPLAT_MATERIAL = "T4DG Gaussian Splat"
POINT_MATERIAL = "T4DG Gaussian Point"
# Splat icosphere radius in standard deviations: the backend's rasterizer cuts each Gaussian off
# at 3 sigma (exp(-4.5) = 1 %); 3.2 because the 42-vertex icosphere's faces lie inside its
# vertices' sphere (their planes down to 0.934 of the radius), so the mesh covers 2.99 sigma.
SPLAT_EXTENT = 3.2
SPLAT_SUBDIVISIONS = 2
ALPHA_MAX = 0.999  # the backend's (gsplat's) alpha clamp
ALPHA_MIN = 1.0 / 255.0  # ... and its skip threshold
TRANSPARENT_BOUNCES = 256  # Cycles' transparent-hit limit the importer raises the scene to
MODIFIER = "Track4DGen"
PREFIX = "t4d_"
# The material reads the current colour under this name as well as ``color``: measured with
# Cycles in Blender 5.0, a point-cloud attribute literally named "color" renders black (the name is
# taken for Cycles' standard colour slot), while any other name works.
RENDER_COLOR = "t4d_color"


@dataclass
class GaussianSequence:
    """Per-frame Gaussians read from gaussians4d.npz (float32)."""

    means: np.ndarray  # [F, N, 3]
    quats: np.ndarray  # [F, N, 4] wxyz, normalised here
    scales: np.ndarray  # [F, N, 3] linear
    rgb: np.ndarray  # [F, N, 3] in [0, 1], sRGB-encoded as in the file
    opacity: np.ndarray  # [N] in [0, 1]
    fps: float

    @property
    def frames(self) -> int:
        return int(self.means.shape[0])

    @property
    def count(self) -> int:
        return int(self.means.shape[1])


def _npz_path(result_dir: Path) -> Path:
    if result_dir.is_file() and result_dir.suffix == ".npz":
        return result_dir
    return result_dir / "gaussians4d.npz"


def load_result(result_dir: str | Path) -> GaussianSequence:
    """Read and check the npz; every problem names the key and the expected shape."""
    path = _npz_path(Path(result_dir))
    if not path.is_file():
        raise AddonError(f"no gaussians4d.npz in {Path(result_dir)}",
                         "Pick a Track4DGen result folder (it holds gaussians4d.npz and COMPLETE).", "bad_result")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise AddonError(f"{path} cannot be read: {exc}", "Re-run or re-download the job.", "bad_result") from exc
    with z:
        need = ("frame_means", "frame_quats", "frame_log_scales", "frame_rgb", "opacity")
        missing = [k for k in need if k not in z.files]
        if missing:
            raise AddonError(f"{path.name} lacks {missing}", "The result was written by an incompatible backend; re-run the job.", "bad_result")
        means = np.asarray(z["frame_means"], dtype=np.float32)
        quats = np.asarray(z["frame_quats"], dtype=np.float32)
        log_scales = np.asarray(z["frame_log_scales"], dtype=np.float32)
        rgb = np.asarray(z["frame_rgb"], dtype=np.float32)
        opacity = np.asarray(z["opacity"], dtype=np.float32).reshape(-1)
        fps = float(z["fps"]) if "fps" in z.files else 8.0
    if means.ndim != 3 or means.shape[2] != 3 or means.shape[0] < 1:
        raise AddonError(f"frame_means has shape {means.shape}, expected [F, N, 3]", "Re-run the job.", "bad_result")
    F, N = means.shape[:2]
    for name, arr, last in (("frame_quats", quats, 4), ("frame_log_scales", log_scales, 3), ("frame_rgb", rgb, 3)):
        if arr.shape != (F, N, last):
            raise AddonError(f"{name} has shape {arr.shape}, expected {(F, N, last)}", "Re-run the job.", "bad_result")
    if opacity.shape != (N,):
        raise AddonError(f"opacity has shape {opacity.shape}, expected ({N},)", "Re-run the job.", "bad_result")
    if not (np.isfinite(means).all() and np.isfinite(quats).all() and np.isfinite(log_scales).all()):
        raise AddonError(f"{path.name} contains NaN or infinite values", "The optimisation diverged; re-run with the preview preset.", "bad_result")
    norm = np.linalg.norm(quats, axis=-1, keepdims=True)
    quats = np.where(norm > 1e-12, quats / np.maximum(norm, 1e-12), np.array([1, 0, 0, 0], np.float32))
    return GaussianSequence(means, quats.astype(np.float32), np.exp(log_scales).astype(np.float32),
                            np.clip(rgb, 0.0, 1.0), np.clip(opacity, 0.0, 1.0), fps)


# --------------------------------------------------------------------------------------------
# mesh with attributes


def _set_attr(mesh: bpy.types.Mesh, name: str, kind: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name) or mesh.attributes.new(name, kind, "POINT")
    key = "color" if kind == "FLOAT_COLOR" else "value" if kind in ("FLOAT", "QUATERNION") else "vector"
    attr.data.foreach_set(key, np.ascontiguousarray(values, dtype=np.float32).reshape(-1))


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> scene-linear (the IEC 61966-2-1 curve Blender's "sRGB"
    colour space and "Standard" view transform use). The backend fits ``frame_rgb`` against
    sRGB images, so its colours are display values; Blender colour attributes and emission
    are scene-linear, and storing the display values as they are renders them washed out."""
    rgb = np.asarray(rgb, dtype=np.float32)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.ones(rgb.shape[:-1] + (1,), np.float32)], axis=-1)


def build_mesh(name: str, seq: GaussianSequence) -> bpy.types.Mesh:
    """Vertices at frame 0 plus the attribute set described in the module docstring."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(seq.count)
    mesh.vertices.foreach_set("co", seq.means[0].reshape(-1))
    _set_attr(mesh, "color", "FLOAT_COLOR", _rgba(srgb_to_linear(seq.rgb[0])))
    _set_attr(mesh, "opacity", "FLOAT", seq.opacity)
    _set_attr(mesh, "scale", "FLOAT_VECTOR", seq.scales[0])
    _set_attr(mesh, "rot", "QUATERNION", seq.quats[0])
    for f in range(seq.frames):
        _set_attr(mesh, f"{PREFIX}pos_{f}", "FLOAT_VECTOR", seq.means[f])
        _set_attr(mesh, f"{PREFIX}rot_{f}", "QUATERNION", seq.quats[f])
        _set_attr(mesh, f"{PREFIX}scale_{f}", "FLOAT_VECTOR", seq.scales[f])
        _set_attr(mesh, f"{PREFIX}color_{f}", "FLOAT_COLOR", _rgba(srgb_to_linear(seq.rgb[f])))
    mesh.update()
    return mesh


# --------------------------------------------------------------------------------------------
# materials


def _feed_inputs(nt: bpy.types.NodeTree, node: bpy.types.Node, values) -> None:
    """Set ``node``'s first inputs from ``values``: a number becomes the default value, a socket is
    linked, None leaves the input alone (shader and Geometry Nodes trees alike)."""
    for i, v in enumerate(values):
        if v is None:
            continue
        if isinstance(v, (int, float)):
            node.inputs[i].default_value = float(v)
        else:
            nt.links.new(v, node.inputs[i])


def _shader_math(nt: bpy.types.NodeTree, op: str, a, b=None, vector: bool = False) -> bpy.types.NodeSocket:
    """One Math / Vector Math node; ``a``/``b`` are sockets or numbers. Returns its main output."""
    n = nt.nodes.new("ShaderNodeVectorMath" if vector else "ShaderNodeMath")
    n.operation = op
    _feed_inputs(nt, n, (a, b))
    return n.outputs["Value"] if (not vector or op == "DOT_PRODUCT") else n.outputs["Vector"]


def _new_material(name: str) -> tuple[bpy.types.Material, bpy.types.NodeTree]:
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5 creates materials without nodes
        mat.use_nodes = True
    mat.node_tree.nodes.clear()
    mat.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    if hasattr(mat, "surface_render_method"):  # EEVEE (4.2+): stochastic, order-independent alpha
        mat.surface_render_method = "DITHERED"
    return mat, mat.node_tree


def _emit_with_alpha(nt: bpy.types.NodeTree, color, alpha) -> None:
    """Surface = emission(colour) over transparency by ``alpha``: the splat colour is radiance,
    as in the backend's renders, so scene lights do not change it."""
    emit = nt.nodes.new("ShaderNodeEmission")
    transp = nt.nodes.new("ShaderNodeBsdfTransparent")
    mix = nt.nodes.new("ShaderNodeMixShader")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(color, emit.inputs["Color"])
    nt.links.new(alpha, mix.inputs["Fac"])
    nt.links.new(transp.outputs["BSDF"], mix.inputs[1])
    nt.links.new(emit.outputs["Emission"], mix.inputs[2])
    nt.links.new(mix.outputs["Shader"], out.inputs["Surface"])
    for i, node in enumerate(nt.nodes):
        node.location = (160 * i - 1600, 0)


def _attribute(nt: bpy.types.NodeTree, name: str, kind: str) -> bpy.types.ShaderNode:
    node = nt.nodes.new("ShaderNodeAttribute")
    node.attribute_type, node.attribute_name = kind, name
    return node


def ensure_splat_material() -> bpy.types.Material:
    """The Gaussian splat shader for the ellipsoid instances (``SPLAT_MATERIAL``).

    Each instance is an icosphere of radius ``SPLAT_EXTENT`` whose instance transform is the
    Gaussian's rotation and per-axis standard deviation, so in the instance's object space the
    Gaussian is the unit isotropic one. For the camera ray through a shading point ``p`` with
    direction ``d`` (both in that space) the shader computes the squared distance of the ray
    from the centre, ``m2 = |p|^2 - (p.d)^2/|d|^2``, and the ray's opacity
    ``alpha = opacity * exp(-m2 / 2)`` -- the peak of the Gaussian along the ray, which is what a
    splatting rasterizer draws at that pixel (the projected 2D Gaussian). Only front faces
    contribute, so each ray picks up each Gaussian once. Alpha is clamped to 0.999 and values
    below 1/255 are dropped, as in the backend's rasterizer (gsplat's constants). Colour and
    opacity are read from the instance attributes (``INSTANCER``).
    """
    mat = bpy.data.materials.get(SPLAT_MATERIAL)
    if mat is not None:
        return mat
    mat, nt = _new_material(SPLAT_MATERIAL)
    p = nt.nodes.new("ShaderNodeTexCoord").outputs["Object"]
    geom = nt.nodes.new("ShaderNodeNewGeometry")
    to_obj = nt.nodes.new("ShaderNodeVectorTransform")
    to_obj.vector_type, to_obj.convert_from, to_obj.convert_to = "VECTOR", "WORLD", "OBJECT"
    nt.links.new(geom.outputs["Incoming"], to_obj.inputs["Vector"])
    d = to_obj.outputs["Vector"]
    pd = _shader_math(nt, "DOT_PRODUCT", p, d, vector=True)
    m2 = _shader_math(nt, "SUBTRACT", _shader_math(nt, "DOT_PRODUCT", p, p, vector=True),
                      _shader_math(nt, "DIVIDE", _shader_math(nt, "MULTIPLY", pd, pd),
                                   _shader_math(nt, "DOT_PRODUCT", d, d, vector=True)))
    gauss = _shader_math(nt, "EXPONENT", _shader_math(nt, "MULTIPLY", m2, -0.5))
    opacity = _attribute(nt, "opacity", "INSTANCER").outputs["Fac"]
    alpha = _shader_math(nt, "MINIMUM", _shader_math(nt, "MULTIPLY", opacity, gauss), ALPHA_MAX)
    alpha = _shader_math(nt, "MULTIPLY", alpha, _shader_math(nt, "GREATER_THAN", alpha, ALPHA_MIN))
    alpha = _shader_math(nt, "MULTIPLY", alpha, _shader_math(nt, "SUBTRACT", 1.0, geom.outputs["Backfacing"]))
    _emit_with_alpha(nt, _attribute(nt, RENDER_COLOR, "INSTANCER").outputs["Color"], alpha)
    return mat


def ensure_point_material() -> bpy.types.Material:
    """The fast preview display (``POINT_MATERIAL``): each Gaussian as a round point with its
    colour and opacity, no falloff."""
    mat = bpy.data.materials.get(POINT_MATERIAL)
    if mat is not None:
        return mat
    mat, nt = _new_material(POINT_MATERIAL)
    _emit_with_alpha(nt, _attribute(nt, RENDER_COLOR, "GEOMETRY").outputs["Color"],
                     _attribute(nt, "opacity", "GEOMETRY").outputs["Fac"])
    return mat


# --------------------------------------------------------------------------------------------
# geometry nodes


class _Tree:
    """Small helper to build a node tree readably: node(), link(), math()."""

    def __init__(self, group: bpy.types.NodeTree) -> None:
        self.g = group
        self.x = 0

    def node(self, kind: str, **props: Any) -> bpy.types.Node:
        n = self.g.nodes.new(kind)
        for k, v in props.items():
            setattr(n, k, v)
        n.location = (self.x, 0)
        self.x += 40
        return n

    def link(self, out_socket, in_socket) -> None:
        self.g.links.new(out_socket, in_socket)

    def math(self, op: str, a, b=None) -> bpy.types.NodeSocket:
        n = self.node("ShaderNodeMath", operation=op)
        _feed_inputs(self.g, n, (a, b))
        return n.outputs[0]

    def name_for(self, prefix: str, index_socket) -> bpy.types.NodeSocket:
        """String ``prefix + str(int(index))`` -- the per-frame attribute name."""
        to_str = self.node("FunctionNodeValueToString")
        to_str.inputs["Decimals"].default_value = 0
        self.link(index_socket, to_str.inputs["Value"])
        # Replace String instead of Join Strings: a multi-input socket's link order is not a
        # stable API, a template with one placeholder is.
        rep = self.node("FunctionNodeReplaceString")
        rep.inputs["String"].default_value = prefix + "#"
        rep.inputs["Find"].default_value = "#"
        self.link(to_str.outputs["String"], rep.inputs["Replace"])
        return rep.outputs["String"]

    def frame_value(self, prefix: str, data_type: str, mix_type: str, i0, i1, w) -> bpy.types.NodeSocket:
        """Named attribute ``prefix{i0}`` mixed toward ``prefix{i1}`` by ``w``."""
        a = self.node("GeometryNodeInputNamedAttribute", data_type=data_type)
        self.link(self.name_for(prefix, i0), a.inputs["Name"])
        b = self.node("GeometryNodeInputNamedAttribute", data_type=data_type)
        self.link(self.name_for(prefix, i1), b.inputs["Name"])
        mix = self.node("ShaderNodeMix", data_type=mix_type)
        if mix_type == "VECTOR":
            mix.factor_mode = "UNIFORM"
        self.link(w, mix.inputs["Factor"] if mix_type != "VECTOR" else mix.inputs[0])
        ins = [s for s in mix.inputs if s.enabled and s.name in ("A", "B")]
        outs = [s for s in mix.outputs if s.enabled]
        self.link(a.outputs["Attribute"], ins[0])
        self.link(b.outputs["Attribute"], ins[1])
        return outs[0]


def _store(t: _Tree, geo, name: str, data_type: str, value) -> bpy.types.NodeSocket:
    st = t.node("GeometryNodeStoreNamedAttribute", data_type=data_type, domain="POINT")
    t.link(geo, st.inputs["Geometry"])
    st.inputs["Name"].default_value = name
    t.link(value, [s for s in st.inputs if s.name == "Value" and s.enabled][0])
    return st.outputs["Geometry"]


def _drop_frame_attributes(t: _Tree, geo) -> bpy.types.NodeSocket:
    """Remove the per-frame attributes once the current frame's values are stored, so the points
    and instances downstream do not carry (and copy) every frame. The wildcard mode is a node
    property up to Blender 4.5 and an input socket from 5.0."""
    for prefix in ("pos", "rot", "scale", "color"):
        rm = t.node("GeometryNodeRemoveAttribute")
        if "Pattern Mode" in rm.inputs:
            rm.inputs["Pattern Mode"].default_value = "Wildcard"
        else:
            rm.pattern_mode = "WILDCARD"
        rm.inputs["Name"].default_value = f"{PREFIX}{prefix}_*"
        t.link(geo, rm.inputs["Geometry"])
        geo = rm.outputs["Geometry"]
    return geo


def ensure_node_group() -> bpy.types.NodeTree:
    """The shared Geometry Nodes group; rebuilt only if missing or from an older version."""
    group = bpy.data.node_groups.get(NODE_GROUP)
    if group is not None and group.get("t4d_version") == NODE_GROUP_VERSION:
        return group
    if group is None:
        group = bpy.data.node_groups.new(NODE_GROUP, "GeometryNodeTree")
    group.nodes.clear()
    group.interface.clear()
    group["t4d_version"] = NODE_GROUP_VERSION
    iface = group.interface
    iface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    s_start = iface.new_socket("Frame Start", in_out="INPUT", socket_type="NodeSocketInt")
    s_end = iface.new_socket("Frame End", in_out="INPUT", socket_type="NodeSocketInt")
    s_frames = iface.new_socket("Result Frames", in_out="INPUT", socket_type="NodeSocketInt")
    s_size = iface.new_socket("Point Size", in_out="INPUT", socket_type="NodeSocketFloat")
    s_splats = iface.new_socket("Gaussian Splats", in_out="INPUT", socket_type="NodeSocketBool")
    s_splats.description = "Render soft Gaussian splats (off: fast preview points)"
    iface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    s_start.default_value, s_end.default_value, s_frames.default_value = 1, 16, 16
    s_frames.min_value = 1
    s_size.default_value, s_size.min_value = 1.5, 0.0
    s_size.description = "Preview points only: radius as a multiple of each Gaussian's mean sigma"
    s_splats.default_value = True

    t = _Tree(group)
    gin = t.node("NodeGroupInput")
    gout = t.node("NodeGroupOutput")
    time = t.node("GeometryNodeInputSceneTime")

    # t = clamp((frame - start) * (F - 1) / max(end - start, 1e-6), 0, F - 1)
    last = t.math("SUBTRACT", gin.outputs["Result Frames"], 1.0)
    span = t.math("MAXIMUM", t.math("SUBTRACT", gin.outputs["Frame End"], gin.outputs["Frame Start"]), 1e-6)
    rel = t.math("SUBTRACT", time.outputs["Frame"], gin.outputs["Frame Start"])
    tt = t.math("MULTIPLY", rel, t.math("DIVIDE", last, span))
    tt = t.math("MINIMUM", t.math("MAXIMUM", tt, 0.0), last)
    i0 = t.math("FLOOR", tt)
    i1 = t.math("MINIMUM", t.math("ADD", i0, 1.0), last)
    w = t.math("SUBTRACT", tt, i0)

    pos = t.frame_value(f"{PREFIX}pos_", "FLOAT_VECTOR", "VECTOR", i0, i1, w)
    rot = t.frame_value(f"{PREFIX}rot_", "QUATERNION", "ROTATION", i0, i1, w)
    scl = t.frame_value(f"{PREFIX}scale_", "FLOAT_VECTOR", "VECTOR", i0, i1, w)
    col = t.frame_value(f"{PREFIX}color_", "FLOAT_COLOR", "RGBA", i0, i1, w)

    setpos = t.node("GeometryNodeSetPosition")
    t.link(gin.outputs["Geometry"], setpos.inputs["Geometry"])
    t.link(pos, setpos.inputs["Position"])
    geo = setpos.outputs["Geometry"]
    geo = _store(t, geo, "rot", "QUATERNION", rot)
    geo = _store(t, geo, "scale", "FLOAT_VECTOR", scl)
    geo = _store(t, geo, "color", "FLOAT_COLOR", col)
    geo = _store(t, geo, RENDER_COLOR, "FLOAT_COLOR", col)
    geo = _drop_frame_attributes(t, geo)

    # preview points: radius = size * mean(scale)
    sep = t.node("ShaderNodeSeparateXYZ")
    scale_attr = t.node("GeometryNodeInputNamedAttribute", data_type="FLOAT_VECTOR")
    scale_attr.inputs["Name"].default_value = "scale"
    t.link(scale_attr.outputs["Attribute"], sep.inputs[0])
    mean = t.math("DIVIDE", t.math("ADD", t.math("ADD", sep.outputs[0], sep.outputs[1]), sep.outputs[2]), 3.0)
    radius = t.math("MULTIPLY", mean, gin.outputs["Point Size"])
    to_points = t.node("GeometryNodeMeshToPoints")
    t.link(geo, to_points.inputs["Mesh"])
    t.link(radius, to_points.inputs["Radius"])
    point_mat = t.node("GeometryNodeSetMaterial")
    t.link(to_points.outputs["Points"], point_mat.inputs["Geometry"])
    point_mat.inputs["Material"].default_value = ensure_point_material()

    # splats: an icosphere of SPLAT_EXTENT per Gaussian, instanced with the Gaussian's rotation
    # and per-axis sigma (kept as instances: the splat shader works in each instance's space)
    ico = t.node("GeometryNodeMeshIcoSphere")
    ico.inputs["Radius"].default_value = SPLAT_EXTENT
    ico.inputs["Subdivisions"].default_value = SPLAT_SUBDIVISIONS
    splat_mat = t.node("GeometryNodeSetMaterial")
    t.link(ico.outputs["Mesh"], splat_mat.inputs["Geometry"])
    splat_mat.inputs["Material"].default_value = ensure_splat_material()
    inst = t.node("GeometryNodeInstanceOnPoints")
    t.link(to_points.outputs["Points"], inst.inputs["Points"])
    t.link(splat_mat.outputs["Geometry"], inst.inputs["Instance"])
    rot_attr = t.node("GeometryNodeInputNamedAttribute", data_type="QUATERNION")
    rot_attr.inputs["Name"].default_value = "rot"
    t.link(rot_attr.outputs["Attribute"], inst.inputs["Rotation"])
    t.link(scale_attr.outputs["Attribute"], inst.inputs["Scale"])

    switch = t.node("GeometryNodeSwitch", input_type="GEOMETRY")
    t.link(gin.outputs["Gaussian Splats"], switch.inputs["Switch"])
    t.link(point_mat.outputs["Geometry"], switch.inputs["False"])
    t.link(inst.outputs["Instances"], switch.inputs["True"])
    t.link(switch.outputs["Output"], gout.inputs["Geometry"])
    return group


def _socket_id(group: bpy.types.NodeTree, name: str) -> str:
    for item in group.interface.items_tree:
        if getattr(item, "in_out", None) == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(name)


def set_modifier_inputs(mod: bpy.types.Modifier, **values: Any) -> None:
    """Set GN modifier inputs by their interface names (Frame Start, Point Size, ...)."""
    for name, value in values.items():
        mod[_socket_id(mod.node_group, name)] = value
    mod.id_data.update_tag()  # ID-property writes do not notify the depsgraph by themselves


# --------------------------------------------------------------------------------------------
# entry point


def import_result(
    result_dir: str | Path,
    scene: bpy.types.Scene | None = None,
    name: str | None = None,
    frame_start: int | None = None,
    frame_end: int | None = None,
    placement: dict[str, Any] | None = None,
    splats: bool = True,
    point_size: float = 1.5,
    timing: str = "REALTIME",
    fit_scene_range: bool = True,
    hide_source: bool = True,
) -> bpy.types.Object:
    """Create the animated Gaussian object for a result folder and place it in ``scene``.

    ``placement`` is blender.json's content (see :func:`placement.place_result`); when None it is
    looked up next to the result, and without one the object stays at the origin with unit scale.
    The frame range, parenting, collection, selection, source hiding and scene range are
    :func:`placement.place_result`'s (``timing``, ``fit_scene_range``, ``hide_source`` are passed
    on). ``splats`` False shows fast preview points (radius ``point_size`` x mean sigma).
    """
    from .job_io import read_blender_json

    result_dir = Path(result_dir)
    scene = scene or bpy.context.scene
    seq = load_result(result_dir)
    if placement is None:
        placement = read_blender_json(result_dir if result_dir.is_dir() else result_dir.parent) or {}
    source = placement.get("source_object")
    name = name or (f"{source}_4D" if source else f"{result_dir.name}_4D")

    mesh = build_mesh(name, seq)
    obj = bpy.data.objects.new(name, mesh)
    rng = place_result(obj, scene, placement, frames=seq.frames, fps=seq.fps, frame_start=frame_start,
                       frame_end=frame_end, timing=timing, fit_scene_range=fit_scene_range, hide_source=hide_source)
    mod = obj.modifiers.new(MODIFIER, "NODES")
    mod.node_group = ensure_node_group()
    set_modifier_inputs(mod, **{"Frame Start": rng.start, "Frame End": rng.end, "Result Frames": seq.frames,
                                "Point Size": float(point_size), "Gaussian Splats": bool(splats)})
    obj["t4d_result"] = str(result_dir)
    obj["t4d_fps"] = seq.fps
    _raise_transparent_bounces(scene)
    obj.update_tag()
    return obj


def _raise_transparent_bounces(scene: bpy.types.Scene) -> None:
    """Cycles stops a ray after ``transparent_max_bounces`` transparent hits (8 by default) and
    every splat the ray crosses is one, so a dense result would render with holes; and after
    ``min_transparent_bounces`` it ends rays at random (Russian roulette), which shows as white
    speckles where many faint splats overlap. Raise both limits (never lower them)."""
    cycles = getattr(scene, "cycles", None)
    if cycles is None:
        return
    cycles.transparent_max_bounces = max(cycles.transparent_max_bounces, TRANSPARENT_BOUNCES)
    cycles.min_transparent_bounces = max(cycles.min_transparent_bounces, TRANSPARENT_BOUNCES)


def evaluated_points(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph | None = None) -> np.ndarray:
    """Gaussian centres [N, 3] (object space) at the scene's current frame, from the evaluated
    preview points or splat instances."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    if not hasattr(evaluated, "evaluated_geometry"):
        raise AddonError(f"Blender {bpy.app.version_string} cannot read evaluated instances from Python",
                         "Use Blender 5.0 or newer for this helper (the importer itself works from 4.2).", "unsupported")
    geo = evaluated.evaluated_geometry()
    pc = geo.pointcloud
    if pc is not None and len(pc.points):
        pos = np.empty(len(pc.points) * 3, dtype=np.float32)
        pc.attributes["position"].data.foreach_get("vector", pos)
        return pos.reshape(-1, 3)
    inst = geo.instances_pointcloud()
    if inst is None or len(inst.points) == 0:
        raise AddonError(f"{obj.name} evaluates to no Gaussians", f"Check its '{MODIFIER}' modifier.", "bad_result")
    # instances: the centres are the transforms' translations (their "position" reads back as
    # garbage in bpy 5.0.1); the 4x4 matrices are stored column-major
    mats = np.empty(len(inst.points) * 16, dtype=np.float32)
    inst.attributes["instance_transform"].data.foreach_get("value", mats)
    return mats.reshape(-1, 16)[:, 12:15].copy()
