"""Blender cameras <-> the project's OpenCV camera convention, and the conditioning rig.

The backend (``track4dgen.cameras``) describes every camera as an OpenCV world->camera 4x4
(x right, y down, z forward) plus pixel intrinsics K, with pixel (0, 0) the top-left corner of the
top-left pixel. Blender cameras look down their local -Z with +Y up, and their projection depends
on lens, sensor size/fit, shift, render size and pixel aspect. All of that is turned into (K, w2c)
in exactly one function, :func:`blender_camera_to_opencv`, so there is one place to get it right
(tested against ``bpy_extras.object_utils.world_to_camera_view``).

The rig mirrors ``track4dgen.cameras.rig_cameras`` (Animate3D's conditioning views): azimuth 0
looks at the object's front from -Y, azimuth 90 from +X, elevation lifts the camera toward +Z,
distance 3 to the origin of the normalised object, vertical field of view 40 degrees.
"""

from __future__ import annotations

import math
from typing import Sequence

import bpy
import numpy as np
from mathutils import Matrix, Vector

RIG_ELEVATION_DEG = 15.0
RIG_AZIMUTHS_DEG = (0.0, 90.0, 180.0, 270.0)
RIG_DISTANCE = 3.0
RIG_FOV_Y_DEG = 40.0

# Blender camera axes (x right, y up, -z forward) -> OpenCV (x right, y down, z forward).
_BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """Output size in pixels, including the resolution percentage (what a render writes)."""
    r = scene.render
    scale = r.resolution_percentage / 100.0
    return int(r.resolution_x * scale), int(r.resolution_y * scale)


def blender_camera_to_opencv(cam_obj: bpy.types.Object, scene: bpy.types.Scene) -> tuple[np.ndarray, np.ndarray]:
    """Return (K 3x3 in pixels, w2c 4x4 OpenCV) for a perspective Blender camera in ``scene``.

    Follows Blender's own view-plane computation (``BKE_camera_params_compute_viewplane``):
    the sensor fit decides whether the sensor size spans the image width or height (AUTO picks
    the larger side, with pixel aspect), shift moves the principal point in units of that side,
    and a non-square pixel aspect stretches fy. Object scale is removed from the extrinsics.
    """
    cam = cam_obj.data
    if cam.type != "PERSP":
        raise ValueError(f"camera {cam_obj.name!r} is {cam.type}; only perspective cameras can be converted")
    width, height = render_size(scene)
    xasp, yasp = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
    fit = cam.sensor_fit
    if fit == "AUTO":
        horizontal = xasp * width >= yasp * height
        sensor = cam.sensor_width
    else:
        horizontal = fit == "HORIZONTAL"
        sensor = cam.sensor_width if horizontal else cam.sensor_height
    ycor = yasp / xasp
    viewfac = width if horizontal else ycor * height
    # The view plane spans `viewfac` units across the fitted side; one pixel column is one unit
    # wide and one pixel row is `ycor` units tall.
    fx = cam.lens * viewfac / sensor
    fy = fx / ycor
    cx = 0.5 * width - cam.shift_x * viewfac
    cy = 0.5 * height + cam.shift_y * viewfac / ycor
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    loc, rot, _scale = cam_obj.matrix_world.decompose()
    c2w_bl = Matrix.LocRotScale(loc, rot, None)
    w2c = _BLENDER_TO_OPENCV @ np.array(c2w_bl.inverted(), dtype=np.float64)
    return K, w2c


def orbit_eye(azimuth_deg: float, elevation_deg: float, distance: float) -> Vector:
    """Camera position on the rig orbit: azimuth 0 = front (-Y), 90 = right (+X)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return Vector((distance * math.cos(e) * math.sin(a), -distance * math.cos(e) * math.cos(a), distance * math.sin(e)))


def make_rig_camera(
    name: str,
    azimuth_deg: float,
    elevation_deg: float = RIG_ELEVATION_DEG,
    distance: float = RIG_DISTANCE,
    fov_y_deg: float = RIG_FOV_Y_DEG,
) -> bpy.types.Object:
    """A Blender camera object on the orbit looking at the origin with +Z up (not linked to a scene)."""
    data = bpy.data.cameras.new(name)
    data.type = "PERSP"
    data.sensor_fit = "VERTICAL"
    data.sensor_height = 24.0
    data.lens = 0.5 * data.sensor_height / math.tan(math.radians(fov_y_deg) / 2.0)
    data.clip_start = 0.01
    data.clip_end = 100.0
    obj = bpy.data.objects.new(name, data)
    eye = orbit_eye(azimuth_deg, elevation_deg, distance)
    rot = (-eye).to_track_quat("-Z", "Y")  # camera -Z toward the origin, camera +Y toward world +Z
    obj.matrix_world = Matrix.LocRotScale(eye, rot, None)
    return obj


def make_rig(
    azimuths_deg: Sequence[float] = RIG_AZIMUTHS_DEG,
    elevation_deg: float = RIG_ELEVATION_DEG,
    distance: float = RIG_DISTANCE,
    fov_y_deg: float = RIG_FOV_Y_DEG,
    prefix: str = "T4DG_rig",
) -> list[bpy.types.Object]:
    return [make_rig_camera(f"{prefix}_{i}", a, elevation_deg, distance, fov_y_deg) for i, a in enumerate(azimuths_deg)]


def cameras_json(cam_objs: Sequence[bpy.types.Object], scene: bpy.types.Scene) -> dict:
    """The job folder's cameras.json payload (same layout as ``track4dgen.cameras.save_cameras``)."""
    width, height = render_size(scene)
    views = []
    for cam in cam_objs:
        K, w2c = blender_camera_to_opencv(cam, scene)
        views.append({"K": K.tolist(), "w2c": w2c.tolist(), "width": width, "height": height})
    return {"convention": "opencv", "views": views}
