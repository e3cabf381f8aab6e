"""The manifest claims Blender 4.2+, but only bpy 5.0.1 runs here. What changed between 4.2 and 5.0
and what the add-on does about it is listed in data/blender_4_2_api.json (read from the 4.2 API
docs); these tests keep the code and that list in step, and run the version shims both ways."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import bpy
import pytest

from addon import import_result as ir
from addon import render_views

HERE = Path(__file__).resolve().parent
API = json.loads((HERE / "data" / "blender_4_2_api.json").read_text())
GENERIC = {"bl_icon", "warning_propagation", "color_tag"}  # bpy.types.Node's own, not the node type's


def _used_enums(node: bpy.types.Node) -> dict[str, str]:
    """Enum settings of ``node`` that differ from the type's defaults (properties, and menu input
    sockets under the snake_case name the property had before 5.0)."""
    used = {}
    for prop in node.bl_rna.properties:
        if prop.type == "ENUM" and not prop.is_readonly and prop.identifier not in GENERIC:
            value = getattr(node, prop.identifier)
            if value != prop.default or prop.identifier in API["nodes"].get(node.bl_idname, {}):
                used[prop.identifier] = value
    for sock in node.inputs:
        if sock.type == "MENU":
            used[sock.name.lower().replace(" ", "_")] = str(sock.default_value).upper()
    return used


def test_manifest_minimum_is_the_checked_version():
    manifest = tomllib.loads((HERE.parents[1] / "blender_manifest.toml").read_text())
    assert manifest["blender_version_min"] == API["blender_version_min"]


def test_importer_uses_only_checked_nodes_and_values(fresh_scene):
    trees = [ir.ensure_node_group()] + [bpy.data.materials[m].node_tree for m in (ir.SPLAT_MATERIAL, ir.POINT_MATERIAL)]
    unchecked = []
    for tree in trees:
        for node in tree.nodes:
            allowed = API["nodes"].get(node.bl_idname)
            if allowed is None:
                unchecked.append(node.bl_idname)
                continue
            for prop, value in _used_enums(node).items():
                if value not in allowed.get(prop, ()):
                    unchecked.append(f"{node.bl_idname}.{prop}={value}")
    assert not unchecked, f"check these against the {API['blender_version_min']} API docs, then list them: {sorted(set(unchecked))}"


def test_eevee_engine_id_is_resolved_for_this_version(fresh_scene):
    """4.2-4.x call EEVEE BLENDER_EEVEE_NEXT, 5.0 BLENDER_EEVEE: either name selects it."""
    r = fresh_scene.render
    for name in render_views.EEVEE_IDS:
        r.engine = "CYCLES"
        render_views.set_engine(r, name)
        assert r.engine in render_views.EEVEE_IDS
    with pytest.raises(TypeError):
        render_views.set_engine(r, "NO_SUCH_ENGINE")
