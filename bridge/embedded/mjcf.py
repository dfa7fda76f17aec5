"""Build a MuJoCo model (MJCF) of a scenario: rooms with walls and doorways, furniture, lights, avatar heads/torsos
with egocentric cameras.

Each avatar has two mocap bodies: ``head_<i>`` whose frame *is* the device's head frame (OpenXR view space: +x right,
+y up, -z forward; the camera sits at its origin and looks down -z) and ``torso_<i>`` (yaw only). The head sphere sits
behind the camera so it never enters the avatar's own view. Geom names encode what they belong to, and
:class:`SceneIndex` maps geom ids to scenario objects for ray-cast ground truth and segmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..devices import get_device
from ..errors import ScenarioError
from ..scenario import Room, Scenario, SceneObject

if TYPE_CHECKING:
    import mujoco

__all__ = ["build_mjcf", "SceneIndex", "CATEGORY_PARTS", "MATERIAL_RGBA", "MAX_LIGHTS"]

MAX_LIGHTS = 8  # MuJoCo's fixed-function renderer draws at most 8 lights (mjMAXLIGHT)
WALL_T = 0.1
DOOR_W, DOOR_H = 1.0, 2.1

MATERIAL_RGBA: dict[str, tuple[float, float, float, float]] = {
    "plaster": (0.86, 0.84, 0.80, 1), "wood": (0.55, 0.38, 0.22, 1), "carpet": (0.35, 0.40, 0.55, 1),
    "tile": (0.85, 0.88, 0.90, 1), "concrete": (0.55, 0.55, 0.53, 1), "metal": (0.62, 0.65, 0.68, 1),
    "vinyl": (0.75, 0.82, 0.78, 1), "glass": (0.70, 0.80, 0.85, 1), "brick": (0.60, 0.30, 0.22, 1),
    "curtain": (0.50, 0.25, 0.30, 1),
}
_TEXTURED = {"tile": "checker", "wood": "gradient", "carpet": None, "concrete": None, "vinyl": "checker",
             "brick": "gradient"}

# category -> (default footprint size x, y, height), parts: (type, half-size/params, centre as fraction of size, rgba)
# Part centres/sizes are in units of the object's size so ``size_m`` overrides scale the whole object.
CATEGORY_PARTS: dict[str, tuple[tuple[float, float, float], list[tuple[str, tuple, tuple, tuple]]]] = {
    "table": ((1.2, 0.8, 0.74), [
        ("box", (0.5, 0.5, 0.03), (0, 0, 0.97), (0.60, 0.42, 0.25, 1)),
        *[("box", (0.03, 0.04, 0.47), (sx * 0.45, sy * 0.43, 0.47), (0.45, 0.30, 0.18, 1))
          for sx in (-1, 1) for sy in (-1, 1)],
    ]),
    "chair": ((0.45, 0.45, 0.9), [
        ("box", (0.5, 0.5, 0.04), (0, 0, 0.5), (0.15, 0.25, 0.55, 1)),
        ("box", (0.06, 0.5, 0.25), (-0.44, 0, 0.75), (0.15, 0.25, 0.55, 1)),
        *[("box", (0.05, 0.05, 0.24), (sx * 0.4, sy * 0.4, 0.24), (0.1, 0.1, 0.1, 1)) for sx in (-1, 1) for sy in (-1, 1)],
    ]),
    "sofa": ((2.0, 0.9, 0.85), [
        ("box", (0.5, 0.5, 0.25), (0, 0, 0.25), (0.55, 0.12, 0.15, 1)),
        ("box", (0.5, 0.12, 0.25), (0, 0.38, 0.75), (0.50, 0.10, 0.13, 1)),
        ("box", (0.06, 0.5, 0.15), (-0.47, 0, 0.6), (0.50, 0.10, 0.13, 1)),
        ("box", (0.06, 0.5, 0.15), (0.47, 0, 0.6), (0.50, 0.10, 0.13, 1)),
    ]),
    "lamp": ((0.4, 0.4, 1.6), [
        ("cylinder", (0.05, 0.45), (0, 0, 0.45), (0.2, 0.2, 0.2, 1)),
        ("cylinder", (0.5, 0.1), (0, 0, 0.88), (0.98, 0.90, 0.55, 1)),
        ("cylinder", (0.4, 0.02), (0, 0, 0.01), (0.2, 0.2, 0.2, 1)),
    ]),
    "mug": ((0.1, 0.1, 0.11), [
        ("cylinder", (0.5, 0.5), (0, 0, 0.5), (0.95, 0.95, 0.92, 1)),
        ("box", (0.15, 0.1, 0.3), (0.6, 0, 0.5), (0.95, 0.95, 0.92, 1)),
    ]),
    "book": ((0.24, 0.17, 0.05), [("box", (0.5, 0.5, 0.5), (0, 0, 0.5), (0.10, 0.50, 0.20, 1))]),
    "plant": ((0.45, 0.45, 1.1), [
        ("cylinder", (0.45, 0.18), (0, 0, 0.18), (0.60, 0.35, 0.20, 1)),
        ("ellipsoid", (0.5, 0.5, 0.32), (0, 0, 0.68), (0.15, 0.55, 0.15, 1)),
    ]),
    "screen": ((1.3, 0.08, 1.3), [
        ("box", (0.5, 0.35, 0.28), (0, 0, 0.68), (0.05, 0.05, 0.07, 1)),
        ("box", (0.47, 0.05, 0.25), (0, -0.4, 0.68), (0.15, 0.30, 0.55, 1)),
        ("box", (0.05, 0.3, 0.2), (0, 0, 0.2), (0.1, 0.1, 0.1, 1)),
    ]),
    "cabinet": ((0.9, 0.45, 1.8), [
        ("box", (0.5, 0.5, 0.5), (0, 0, 0.5), (0.70, 0.62, 0.50, 1)),
        ("box", (0.02, 0.52, 0.02), (0, 0, 0.5), (0.3, 0.25, 0.2, 1)),
    ]),
    "bed": ((2.0, 1.4, 0.55), [
        ("box", (0.5, 0.5, 0.35), (0, 0, 0.35), (0.85, 0.88, 0.95, 1)),
        ("box", (0.1, 0.35, 0.1), (-0.38, 0, 0.8), (0.98, 0.98, 0.98, 1)),
        ("box", (0.03, 0.5, 0.6), (-0.49, 0, 0.6), (0.40, 0.28, 0.18, 1)),
    ]),
    "machine": ((1.2, 1.0, 1.6), [
        ("box", (0.5, 0.5, 0.45), (0, 0, 0.45), (0.85, 0.70, 0.10, 1)),
        ("box", (0.35, 0.35, 0.05), (0, 0, 0.95), (0.3, 0.3, 0.32, 1)),
        ("cylinder", (0.15, 0.1), (0.3, -0.51, 0.7), (0.8, 0.1, 0.1, 1)),
    ]),
    "conveyor": ((4.0, 0.8, 0.9), [
        ("box", (0.5, 0.5, 0.04), (0, 0, 0.96), (0.15, 0.15, 0.15, 1)),
        ("box", (0.5, 0.05, 0.45), (0, 0.45, 0.45), (0.45, 0.47, 0.50, 1)),
        ("box", (0.5, 0.05, 0.45), (0, -0.45, 0.45), (0.45, 0.47, 0.50, 1)),
    ]),
    "crate": ((0.8, 0.8, 0.8), [
        ("box", (0.5, 0.5, 0.5), (0, 0, 0.5), (0.78, 0.55, 0.25, 1)),
        ("box", (0.52, 0.06, 0.52), (0, 0, 0.5), (0.55, 0.35, 0.15, 1)),
    ]),
    "toolbox": ((0.55, 0.3, 0.8), [
        ("box", (0.5, 0.5, 0.3), (0, 0, 0.3), (0.20, 0.20, 0.22, 1)),
        ("box", (0.5, 0.5, 0.2), (0, 0, 0.8), (0.85, 0.10, 0.10, 1)),
    ]),
    "monitor": ((0.6, 0.2, 0.45), [
        ("box", (0.5, 0.08, 0.36), (0, 0, 0.62), (0.08, 0.08, 0.08, 1)),
        ("box", (0.46, 0.05, 0.32), (0, -0.09, 0.62), (0.10, 0.60, 0.45, 1)),
        ("box", (0.06, 0.1, 0.13), (0, 0, 0.13), (0.2, 0.2, 0.2, 1)),
    ]),
    "cart": ((0.9, 0.55, 0.95), [
        ("box", (0.5, 0.5, 0.03), (0, 0, 0.4), (0.20, 0.35, 0.75, 1)),
        ("box", (0.5, 0.5, 0.03), (0, 0, 0.9), (0.20, 0.35, 0.75, 1)),
        *[("cylinder", (0.05, 0.45), (sx * 0.45, sy * 0.45, 0.5), (0.7, 0.7, 0.7, 1)) for sx in (-1, 1) for sy in (-1, 1)],
    ]),
    "sink": ((0.7, 0.55, 0.9), [
        ("box", (0.5, 0.5, 0.45), (0, 0, 0.45), (0.92, 0.92, 0.95, 1)),
        ("box", (0.35, 0.3, 0.03), (0, 0, 0.96), (0.55, 0.60, 0.65, 1)),
        ("cylinder", (0.04, 0.15), (0, 0.35, 1.1), (0.7, 0.7, 0.75, 1)),
    ]),
}

AVATAR_COLORS = [(0.85, 0.35, 0.25), (0.25, 0.55, 0.85), (0.30, 0.70, 0.35), (0.75, 0.55, 0.20),
                 (0.60, 0.35, 0.75), (0.20, 0.65, 0.65), (0.80, 0.45, 0.60), (0.45, 0.45, 0.45)]


@dataclass
class SceneIndex:
    """Lookups from the compiled model back to the scenario."""

    geom_object: np.ndarray  # [ngeom] scenario object index, -1 = structure / avatar
    head_body: list[int]  # mocap body id of each avatar's head
    torso_body: list[int]
    head_mocap: list[int]  # mocap index of each head
    torso_mocap: list[int]
    camera: list[int]
    light: list[int]  # light ids in scenario light order
    light_room: list[str]


def _f(v: float) -> str:
    return f"{v:.4g}"


def _vec(v) -> str:
    return " ".join(_f(x) for x in v)


def _object_geoms(idx: int, obj: SceneObject, room: Room) -> list[str]:
    dflt, parts = CATEGORY_PARTS[obj.category]
    size = obj.size_m or dflt
    sx, sy, sz = size
    x, y = room.to_world(obj.pos_m[:2])
    z0 = obj.pos_m[2] if len(obj.pos_m) == 3 else 0.0
    out = [f'<body name="obj{idx}" pos="{_f(x)} {_f(y)} {_f(z0)}" euler="0 0 {_f(obj.yaw_deg)}">']
    for k, (typ, hs, c, rgba) in enumerate(parts):
        if obj.color is not None and k == 0:
            rgba = (*obj.color, 1.0)
        pos = (c[0] * sx, c[1] * sy, c[2] * sz)
        if typ == "box":
            size_s = _vec((hs[0] * sx, hs[1] * sy, hs[2] * sz))
        elif typ == "cylinder":
            size_s = _vec((hs[0] * min(sx, sy), hs[1] * sz))
        else:  # ellipsoid
            size_s = _vec((hs[0] * sx, hs[1] * sy, hs[2] * sz))
        out.append(f'  <geom name="o{idx}_{k}" type="{typ}" size="{size_s}" pos="{_vec(pos)}" rgba="{_vec(rgba)}"/>')
    out.append("</body>")
    return out


def _room_geoms(ri: int, room: Room) -> list[str]:
    ox, oy = room.origin_m
    sx, sy, h = room.size_m
    out = [
        f'<geom name="r{ri}_floor" type="box" size="{_f(sx / 2)} {_f(sy / 2)} 0.02" pos="{_f(ox + sx / 2)} {_f(oy + sy / 2)} -0.02" material="m_{room.floor}"/>',
        f'<geom name="r{ri}_ceiling" type="box" size="{_f(sx / 2)} {_f(sy / 2)} 0.02" pos="{_f(ox + sx / 2)} {_f(oy + sy / 2)} {_f(h + 0.02)}" material="m_{room.ceiling}"/>',
    ]
    # walls: (side, centre, length along the wall, axis). Walls stand just inside the room's footprint, so the
    # shared wall of two adjacent rooms is two back-to-back slabs, never two coplanar faces (z-fighting).
    t = WALL_T / 2
    sides = {
        "south": ((ox + sx / 2, oy + t), sx, "x"), "north": ((ox + sx / 2, oy + sy - t), sx, "x"),
        "west": ((ox + t, oy + sy / 2), sy, "y"), "east": ((ox + sx - t, oy + sy / 2), sy, "y"),
    }
    for side, ((cx, cy), length, axis) in sides.items():
        segs: list[tuple[float, float, float, float]] = []  # (offset of centre along wall, half-length, z centre, half-h)
        if side in room.doors:
            side_len = (length - DOOR_W) / 2
            segs += [(-(DOOR_W / 2 + side_len / 2), side_len / 2, h / 2, h / 2),
                     (DOOR_W / 2 + side_len / 2, side_len / 2, h / 2, h / 2),
                     (0.0, DOOR_W / 2, (h + DOOR_H) / 2, (h - DOOR_H) / 2)]
        else:
            segs.append((0.0, length / 2, h / 2, h / 2))
        for k, (off, hl, zc, hh) in enumerate(segs):
            if axis == "x":
                pos, size = (cx + off, cy, zc), (hl, WALL_T / 2, hh)
            else:
                pos, size = (cx, cy + off, zc), (WALL_T / 2, hl, hh)
            out.append(f'<geom name="r{ri}_{side}{k}" type="box" size="{_vec(size)}" pos="{_vec(pos)}" '
                       f'material="m_{room.walls}"/>')
    return out


def build_mjcf(scenario: Scenario) -> str:
    """The MJCF text of a scenario (static world + mocap avatars + cameras + lights)."""
    if len(scenario.lights) > MAX_LIGHTS:
        raise ScenarioError("lights", f"at most {MAX_LIGHTS} lights (MuJoCo's renderer limit)",
                            value=len(scenario.lights))
    rooms = {r.name: r for r in scenario.rooms}
    xs = [r.origin_m[0] for r in scenario.rooms] + [r.origin_m[0] + r.size_m[0] for r in scenario.rooms]
    ys = [r.origin_m[1] for r in scenario.rooms] + [r.origin_m[1] + r.size_m[1] for r in scenario.rooms]
    extent = max(max(xs) - min(xs), max(ys) - min(ys), 4.0)
    w, h = scenario.render.width_px, scenario.render.height_px
    assets = []
    for name, rgba in MATERIAL_RGBA.items():
        tex = _TEXTURED.get(name)
        if tex:
            r, g, b = rgba[:3]
            assets.append(f'<texture name="t_{name}" type="2d" builtin="{tex}" rgb1="{_vec((r, g, b))}" '
                          f'rgb2="{_vec((r * 0.8, g * 0.8, b * 0.8))}" width="64" height="64"/>')
            assets.append(f'<material name="m_{name}" texture="t_{name}" texrepeat="4 4" texuniform="true" '
                          f'specular="0.1"/>')
        else:
            assets.append(f'<material name="m_{name}" rgba="{_vec(rgba)}" specular="0.05"/>')
    body: list[str] = []
    for ri, room in enumerate(scenario.rooms):
        body += _room_geoms(ri, room)
    for oi, obj in enumerate(scenario.objects):
        body += _object_geoms(oi, obj, rooms[obj.room])
    for li, light in enumerate(scenario.lights):
        room = rooms[light.room]
        x, y = room.to_world(light.pos_m[:2])
        body.append(f'<light name="light{li}" pos="{_f(x)} {_f(y)} {_f(light.pos_m[2])}" dir="0 0 -1" '
                    f'castshadow="{"true" if scenario.render.shadows else "false"}" cutoff="85" exponent="2" '
                    f'attenuation="1 0 0.04" diffuse="0.7 0.7 0.7" specular="0.05 0.05 0.05"/>')
    for ai, av in enumerate(scenario.avatars):
        prof = get_device(av.device)
        fovy = prof.camera.fov_v_deg if prof.camera else 60.0
        if prof.camera:
            # Render images are w x h pixels; keep the device's horizontal FOV when the aspect ratio differs.
            fovy = math.degrees(2 * math.atan(math.tan(math.radians(prof.camera.fov_h_deg) / 2) * h / w))
        col = AVATAR_COLORS[ai % len(AVATAR_COLORS)]
        body.append(f'<body name="head_{ai}" mocap="true" pos="0 0 1.6">'
                    f'<geom name="a{ai}_head" type="sphere" size="0.1" pos="0 0.02 0.11" rgba="0.85 0.7 0.6 1" '
                    f'contype="0" conaffinity="0"/>'
                    f'<geom name="a{ai}_visor" type="box" size="0.09 0.035 0.02" pos="0 0 0.02" '
                    f'rgba="0.1 0.1 0.12 1" contype="0" conaffinity="0"/>'
                    f'<camera name="cam_{ai}" pos="0 0 0" fovy="{_f(min(fovy, 160.0))}"/></body>')
        body.append(f'<body name="torso_{ai}" mocap="true" pos="0 0 0">'
                    f'<geom name="a{ai}_torso" type="capsule" fromto="0 0 0.35 0 0 1.25" size="0.18" '
                    f'rgba="{_vec(col)} 1" contype="0" conaffinity="0"/></body>')
    return "\n".join([
        f'<mujoco model="{scenario.name}">',
        '<compiler angle="degree"/>',
        '<option gravity="0 0 -9.81" timestep="0.01"/>',
        f'<visual><global offwidth="{max(w, 640)}" offheight="{max(h, 480)}"/>'
        f'<map znear="{_f(0.03 / extent)}" zfar="{_f(3.0)}"/>'
        '<headlight ambient="0.12 0.12 0.12" diffuse="0 0 0" specular="0 0 0"/>'
        '<quality shadowsize="1024" numslices="12" numstacks="6" numquads="1"/></visual>',
        f'<statistic extent="{_f(extent)}" center="{_f((max(xs) + min(xs)) / 2)} {_f((max(ys) + min(ys)) / 2)} 1.2"/>',
        "<asset>", *assets, "</asset>",
        "<worldbody>", *body, "</worldbody>",
        "</mujoco>",
    ])


def index_model(model: mujoco.MjModel, scenario: Scenario) -> SceneIndex:
    """Build the :class:`SceneIndex` of a compiled model."""
    import mujoco

    geom_object = np.full(model.ngeom, -1, dtype=np.int32)
    for g in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
        if name.startswith("o") and "_" in name and name[1:name.index("_")].isdigit():
            geom_object[g] = int(name[1:name.index("_")])
    n = len(scenario.avatars)
    head_body = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"head_{i}") for i in range(n)]
    torso_body = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, f"torso_{i}") for i in range(n)]
    return SceneIndex(
        geom_object=geom_object, head_body=head_body, torso_body=torso_body,
        head_mocap=[int(model.body_mocapid[b]) for b in head_body],
        torso_mocap=[int(model.body_mocapid[b]) for b in torso_body],
        camera=[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, f"cam_{i}") for i in range(n)],
        light=[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_LIGHT, f"light{i}") for i in range(len(scenario.lights))],
        light_room=[li.room for li in scenario.lights],
    )
