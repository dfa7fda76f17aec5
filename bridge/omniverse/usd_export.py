"""Scenario -> OpenUSD stage (usd-core), so the same scenario opens in Omniverse / Isaac Sim.

What the stage holds (metres, **z up**, the world frame of :mod:`bridge.frame`):

* ``/World/Rooms/<room>``: floor, four walls and a ceiling as scaled cubes (no doorway cut-outs: the geometry is for
  rendering sensors, not for walking), with ``xrfed:room_type`` and ``xrfed:nominal_lux`` custom data.
* ``/World/Objects/<object>``: a box of the object's size (the embedded scene's category default when the scenario
  gives none), its colour, and Replicator-style semantics (``SemanticsAPI:Semantics``, type ``class``, data = the
  category) so ``semantic_segmentation`` annotators label it by class; ``xrfed:object_id`` is the index used by the
  frame contract's segmentation (the Kit streamer maps ``instance_id_segmentation`` prim paths to it).
* ``/World/Lights/<light>``: a ``UsdLux.SphereLight`` whose ``inputs:intensity`` and ``inputs:color`` are **time
  samples** of the scenario's lighting schedule (evaluated by the embedded scene's own
  :class:`~bridge.embedded.lighting.LightingSchedule`, so flicker and lights-off are the same), one sample per
  simulation step: ``intensity(t) = light_base_intensity * light.intensity * schedule(room, t).intensity`` and
  ``color(t) = cct_to_rgb(schedule(room, t).color_temperature_k)``. Time codes are steps
  (``timeCodesPerSecond`` = the scenario's ``step_hz``).
* ``/World/Avatars/<avatar>/Camera``: a ``UsdGeom.Camera`` at the avatar's start position and eye height
  (0.93 x body height), facing its start yaw, with the horizontal field of view of the device's camera and the render
  aspect ratio -- the head frame of the frame contract *is* USD's camera frame (+x right, +y up, -z forward).
  Avatars are placed at their start pose; their scripted motion is streamed (pose/gaze), not baked into the stage.

usd-core is an optional extra (``pip install xrfed[usd]``) imported when a stage is built.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..devices import get_device
from ..errors import BridgeError
from ..scenario import Scenario, load_scenario

__all__ = ["UsdExportError", "build_stage", "export_scenario_usd", "camera_focal_length", "light_prim_path",
           "avatar_camera_path", "DEFAULT_HORIZONTAL_APERTURE", "prim_name"]

#: USD's default horizontal aperture (35 mm film back, in tenths of a scene unit); the focal length sets the FOV
DEFAULT_HORIZONTAL_APERTURE = 20.955
_WALL_M = 0.1


class UsdExportError(BridgeError):
    """usd-core is missing, or the stage cannot be written."""


def _pxr() -> Any:
    try:
        import pxr  # noqa: F401
        from pxr import Gf, Sdf, Tf, Usd, UsdGeom, UsdLux
    except ImportError as exc:
        raise UsdExportError("USD export needs usd-core: pip install 'xrfed[usd]' (or pip install usd-core)") from exc
    return Usd, UsdGeom, UsdLux, Gf, Sdf, Tf


def prim_name(name: str) -> str:
    """A valid USD prim name for a scenario name (``kitchen-1`` -> ``kitchen_1``)."""
    from pxr import Tf

    return Tf.MakeValidIdentifier(name)


def light_prim_path(light_name: str) -> str:
    return f"/World/Lights/{prim_name(light_name)}"


def avatar_camera_path(avatar_name: str) -> str:
    return f"/World/Avatars/{prim_name(avatar_name)}/Camera"


def camera_focal_length(fov_h_deg: float, horizontal_aperture: float = DEFAULT_HORIZONTAL_APERTURE) -> float:
    """Focal length giving ``fov_h_deg`` across ``horizontal_aperture`` (pinhole: fov = 2 atan(aperture / 2f))."""
    if not 0.0 < fov_h_deg < 180.0:
        raise UsdExportError(f"camera field of view must be in (0, 180) degrees, got {fov_h_deg}")
    return horizontal_aperture / (2.0 * math.tan(math.radians(fov_h_deg) / 2.0))


def _yaw_head_to_world(yaw_deg: float) -> np.ndarray:
    """Rotation head frame -> world for a level head facing ``yaw_deg`` (about world +z, 0 = facing +x).

    Columns are the world images of head +x (right), +y (up), +z (backwards)."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    return np.array([[s, 0.0, -c], [-c, 0.0, -s], [0.0, 1.0, 0.0]])


def _matrix(Gf: Any, rot: np.ndarray, pos: tuple[float, float, float]) -> Any:
    # USD matrices act on row vectors: row i is the image of basis vector i, the last row the translation.
    m = np.eye(4)
    m[:3, :3] = rot.T
    m[3, :3] = pos
    return Gf.Matrix4d(*m.ravel().tolist())


def _box(stage: Any, UsdGeom: Any, Gf: Any, path: str, centre: tuple[float, float, float],
         size: tuple[float, float, float], color: tuple[float, float, float]) -> Any:
    cube = UsdGeom.Cube.Define(stage, path)
    cube.CreateSizeAttr(1.0)
    xf = UsdGeom.Xformable(cube)
    xf.AddTranslateOp().Set(Gf.Vec3d(*centre))
    xf.AddScaleOp().Set(Gf.Vec3f(*size))
    cube.CreateDisplayColorAttr([Gf.Vec3f(*color)])
    return cube


def build_stage(scenario: Scenario | str, stage: Any = None, *, duration_s: float | None = None,
                light_base_intensity: float = 30_000.0) -> Any:
    """Author ``scenario`` into ``stage`` (a new in-memory stage if None) and return the stage.

    ``duration_s``: how long the light time samples run (default: the last keyframe + 1 s, at least 10 s).
    ``light_base_intensity``: USD intensity of a light of relative intensity 1.0 at schedule intensity 1.0.
    """
    Usd, UsdGeom, UsdLux, Gf, Sdf, Tf = _pxr()
    from ..embedded.lighting import LightingSchedule, cct_to_rgb
    from ..embedded.mjcf import CATEGORY_PARTS, MATERIAL_RGBA

    sc = load_scenario(scenario)
    if light_base_intensity <= 0:
        raise UsdExportError(f"light_base_intensity must be > 0, got {light_base_intensity}")
    last_key = max((k.t_s for k in sc.lighting_schedule), default=0.0)
    dur = float(duration_s) if duration_s is not None else max(10.0, last_key + 1.0)
    if dur <= 0:
        raise UsdExportError(f"duration_s must be > 0, got {duration_s}")
    n_steps = int(round(dur * sc.step_hz))

    stage = stage if stage is not None else Usd.Stage.CreateInMemory()
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    stage.SetTimeCodesPerSecond(sc.step_hz)
    stage.SetStartTimeCode(0)
    stage.SetEndTimeCode(n_steps)
    world = UsdGeom.Xform.Define(stage, "/World")
    stage.SetDefaultPrim(world.GetPrim())
    stage.SetMetadataByDictKey("customLayerData", "xrfed:scenario", sc.name)
    stage.SetMetadataByDictKey("customLayerData", "xrfed:digest", sc.digest)
    stage.SetMetadataByDictKey("customLayerData", "xrfed:step_hz", float(sc.step_hz))

    def rgb_of(material: str) -> tuple[float, float, float]:
        c = MATERIAL_RGBA.get(material, (0.8, 0.8, 0.8, 1.0))
        return (float(c[0]), float(c[1]), float(c[2]))

    UsdGeom.Scope.Define(stage, "/World/Rooms")
    for room in sc.rooms:
        base = f"/World/Rooms/{prim_name(room.name)}"
        xf = UsdGeom.Xform.Define(stage, base)
        xf.AddTranslateOp().Set(Gf.Vec3d(room.origin_m[0], room.origin_m[1], 0.0))
        prim = xf.GetPrim()
        prim.SetCustomDataByKey("xrfed:room_type", room.type)
        prim.SetCustomDataByKey("xrfed:nominal_lux", float(room.lux))
        sx, sy, sz = room.size_m
        _box(stage, UsdGeom, Gf, f"{base}/Floor", (sx / 2, sy / 2, -_WALL_M / 2), (sx, sy, _WALL_M), rgb_of(room.floor))
        _box(stage, UsdGeom, Gf, f"{base}/Ceiling", (sx / 2, sy / 2, sz + _WALL_M / 2), (sx, sy, _WALL_M),
             rgb_of(room.ceiling))
        walls = {"WallSouth": ((sx / 2, -_WALL_M / 2, sz / 2), (sx, _WALL_M, sz)),
                 "WallNorth": ((sx / 2, sy + _WALL_M / 2, sz / 2), (sx, _WALL_M, sz)),
                 "WallWest": ((-_WALL_M / 2, sy / 2, sz / 2), (_WALL_M, sy, sz)),
                 "WallEast": ((sx + _WALL_M / 2, sy / 2, sz / 2), (_WALL_M, sy, sz))}
        for name, (centre, size) in walls.items():
            _box(stage, UsdGeom, Gf, f"{base}/{name}", centre, size, rgb_of(room.walls))

    UsdGeom.Scope.Define(stage, "/World/Objects")
    for oid, obj in enumerate(sc.objects):
        room = sc.room(obj.room)
        default_size, parts = CATEGORY_PARTS[obj.category]
        size = obj.size_m or default_size
        rgba = parts[0][3]  # the category's first part's colour
        color = obj.color or (float(rgba[0]), float(rgba[1]), float(rgba[2]))
        x, y = room.to_world(obj.pos_m[:2])
        z0 = obj.pos_m[2] if len(obj.pos_m) == 3 else 0.0
        path = f"/World/Objects/{prim_name(obj.name)}"
        xf = UsdGeom.Xform.Define(stage, path)
        xf.AddTranslateOp().Set(Gf.Vec3d(x, y, z0 + size[2] / 2))
        xf.AddRotateZOp().Set(float(obj.yaw_deg))
        _box(stage, UsdGeom, Gf, f"{path}/Geom", (0.0, 0.0, 0.0), size, color)
        prim = xf.GetPrim()
        prim.SetCustomDataByKey("xrfed:object_id", oid)
        prim.SetCustomDataByKey("xrfed:category", obj.category)
        # Replicator's semantics schema (SemanticsAPI), authored as plain attributes: usd-core lacks the schema
        # class, Kit reads the same attributes.
        prim.AddAppliedSchema("SemanticsAPI:Semantics")
        prim.CreateAttribute("semantic:Semantics:params:semanticType", Sdf.ValueTypeNames.String).Set("class")
        prim.CreateAttribute("semantic:Semantics:params:semanticData", Sdf.ValueTypeNames.String).Set(obj.category)

    UsdGeom.Scope.Define(stage, "/World/Lights")
    schedule = LightingSchedule(sc)
    times = [k / sc.step_hz for k in range(n_steps + 1)]
    for light in sc.lights:
        room = sc.room(light.room)
        x, y = room.to_world(light.pos_m[:2])
        lux = UsdLux.SphereLight.Define(stage, light_prim_path(light.name))
        UsdGeom.Xformable(lux).AddTranslateOp().Set(Gf.Vec3d(x, y, light.pos_m[2]))
        lux.CreateRadiusAttr(0.1)
        intensity = lux.CreateIntensityAttr()
        color = lux.CreateColorAttr()
        for k, t in enumerate(times):
            rl = schedule.at(light.room, t)
            intensity.Set(float(light_base_intensity * light.intensity * rl.intensity), Usd.TimeCode(k))
            color.Set(Gf.Vec3f(*(float(c) for c in cct_to_rgb(rl.color_temperature_k))), Usd.TimeCode(k))
        lux.GetPrim().SetCustomDataByKey("xrfed:room", light.room)
        lux.GetPrim().SetCustomDataByKey("xrfed:relative_intensity", float(light.intensity))

    UsdGeom.Scope.Define(stage, "/World/Avatars")
    w_px, h_px = sc.render.width_px, sc.render.height_px
    for av in sc.avatars:
        prof = get_device(av.device)
        room = sc.room(av.start_room)
        x, y = room.to_world(av.start_pos_m)
        root = f"/World/Avatars/{prim_name(av.name)}"
        axf = UsdGeom.Xform.Define(stage, root)
        axf.GetPrim().SetCustomDataByKey("xrfed:device", av.device)
        if prof.camera is not None:
            fov_h = prof.camera.fov_h_deg
        else:  # no camera on the device: the embedded scene still renders with a 60 degree vertical FOV
            fov_h = math.degrees(2 * math.atan(math.tan(math.radians(60.0) / 2) * w_px / h_px))
        cam = UsdGeom.Camera.Define(stage, avatar_camera_path(av.name))
        cam.CreateHorizontalApertureAttr(DEFAULT_HORIZONTAL_APERTURE)
        cam.CreateVerticalApertureAttr(DEFAULT_HORIZONTAL_APERTURE * h_px / w_px)
        cam.CreateFocalLengthAttr(camera_focal_length(min(fov_h, 170.0)))
        cam.CreateClippingRangeAttr(Gf.Vec2f(0.05, 50.0))
        eye = (x, y, 0.93 * av.user.height_m)
        cam.AddTransformOp().Set(_matrix(Gf, _yaw_head_to_world(av.start_yaw_deg), eye))
        cam.GetPrim().SetCustomDataByKey("xrfed:resolution", Gf.Vec2i(w_px, h_px))
    return stage


def export_scenario_usd(scenario: Scenario | str, path: str | os.PathLike[str], **kw: Any) -> Path:
    """Write ``scenario`` as a USD file (``.usda`` text or ``.usd``/``.usdc`` binary) and return its path."""
    Usd = _pxr()[0]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        stage = Usd.Stage.CreateNew(str(out))
    except Exception as exc:  # pxr raises Tf.ErrorException
        raise UsdExportError(f"cannot create USD stage at {out}: {exc}") from exc
    build_stage(scenario, stage, **kw)
    stage.GetRootLayer().Save()
    return out
