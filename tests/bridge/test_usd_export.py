"""Scenario -> OpenUSD export, read back with usd-core."""

from __future__ import annotations

import math

import pytest

pxr = pytest.importorskip("pxr", reason="usd-core is not installed (pip install 'xrfed[usd]')")
from pxr import Gf, Usd, UsdGeom, UsdLux  # noqa: E402

from bridge.devices import get_device  # noqa: E402
from bridge.omniverse.usd_export import avatar_camera_path, export_scenario_usd, light_prim_path  # noqa: E402

SCENARIO = """
name: usd_test
step_hz: 10
render: {width_px: 160, height_px: 120}
rooms:
  - {name: lab-1, type: office, origin_m: [2, 3], size_m: [4, 5, 2.8]}
objects:
  - {name: desk, category: table, room: lab-1, pos_m: [1, 1], size_m: [1.0, 0.6, 0.7], color: [0.2, 0.4, 0.6]}
lights:
  - {name: lamp, room: lab-1, pos_m: [2, 2, 2.6], intensity: 0.5}
lighting_schedule:
  - {t_s: 0, intensity: 1.0, color_temperature_k: 6500}
  - {t_s: 10, intensity: 0.2, color_temperature_k: 3000}
  - {t_s: 20, intensity: 0.2, color_temperature_k: 3000, lights_off: true}
avatars:
  - {name: ann, device: meta_quest_3, start_room: lab-1, start_pos_m: [2, 2], start_yaw_deg: 90, user: {height_m: 1.8}}
"""


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    d = tmp_path_factory.mktemp("usd")
    (d / "usd_test.yaml").write_text(SCENARIO)
    path = export_scenario_usd(d / "usd_test.yaml", d / "scene.usda", duration_s=25.0, light_base_intensity=1000.0)
    return Usd.Stage.Open(str(path))


def test_light_intensity_follows_the_schedule_at_sampled_times(stage):
    attr = UsdLux.SphereLight(stage.GetPrimAtPath(light_prim_path("lamp"))).GetIntensityAttr()
    # time code = step (10 per second); 1000 base x 0.5 light x schedule intensity
    assert attr.Get(Usd.TimeCode(0)) == pytest.approx(500.0)
    assert attr.Get(Usd.TimeCode(50)) == pytest.approx(1000 * 0.5 * 0.6)  # t=5 s: halfway from 1.0 to 0.2
    assert attr.Get(Usd.TimeCode(150)) == pytest.approx(1000 * 0.5 * 0.2)  # t=15 s: held at 0.2
    assert attr.Get(Usd.TimeCode(200)) == pytest.approx(0.0)  # t=20 s: lights off
    assert len(attr.GetTimeSamples()) == 251 and stage.GetTimeCodesPerSecond() == 10


def test_light_colour_follows_the_colour_temperature(stage):
    color = UsdLux.SphereLight(stage.GetPrimAtPath(light_prim_path("lamp"))).GetColorAttr()
    daylight, warm = color.Get(Usd.TimeCode(0)), color.Get(Usd.TimeCode(100))
    assert daylight[2] > 0.95  # 6500 K is near white
    assert warm[0] == pytest.approx(1.0) and warm[2] < 0.7  # 3000 K is orange: full red, little blue


def test_avatar_camera_has_the_device_fov_and_faces_its_start_yaw(stage):
    cam_prim = stage.GetPrimAtPath(avatar_camera_path("ann"))
    gf_cam = UsdGeom.Camera(cam_prim).GetCamera(Usd.TimeCode.Default())
    fov_h = get_device("meta_quest_3").camera.fov_h_deg
    assert gf_cam.GetFieldOfView(Gf.Camera.FOVHorizontal) == pytest.approx(fov_h, abs=1e-3)
    assert gf_cam.aspectRatio == pytest.approx(160 / 120, abs=1e-4)
    to_world = UsdGeom.Xformable(cam_prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default())
    eye = to_world.Transform(Gf.Vec3d(0, 0, 0))
    ahead = to_world.Transform(Gf.Vec3d(0, 0, -1)) - eye  # camera -z = head forward
    up = to_world.Transform(Gf.Vec3d(0, 1, 0)) - eye
    assert tuple(eye) == pytest.approx((4.0, 5.0, 0.93 * 1.8))  # room origin (2, 3) + (2, 2)
    assert tuple(ahead) == pytest.approx((0.0, 1.0, 0.0), abs=1e-9)  # yaw 90 deg = facing world +y
    assert tuple(up) == pytest.approx((0.0, 0.0, 1.0), abs=1e-9)


def test_rooms_objects_and_stage_metadata(stage):
    assert UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.z and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
    room = stage.GetPrimAtPath("/World/Rooms/lab_1")
    assert room.GetCustomDataByKey("xrfed:room_type") == "office"
    desk = stage.GetPrimAtPath("/World/Objects/desk")
    assert desk.GetCustomDataByKey("xrfed:object_id") == 0
    assert desk.GetAttribute("semantic:Semantics:params:semanticData").Get() == "table"
    box = UsdGeom.Xformable(stage.GetPrimAtPath("/World/Objects/desk/Geom"))
    bbox = UsdGeom.BBoxCache(Usd.TimeCode.Default(), ["default"]).ComputeWorldBound(box.GetPrim()).ComputeAlignedRange()
    assert tuple(bbox.GetMin()) == pytest.approx((2.5, 3.7, 0.0), abs=1e-6)
    assert tuple(bbox.GetMax()) == pytest.approx((3.5, 4.3, 0.7), abs=1e-6)
    assert math.isclose(stage.GetEndTimeCode(), 250)
