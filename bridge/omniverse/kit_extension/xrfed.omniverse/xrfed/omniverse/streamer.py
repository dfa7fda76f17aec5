"""The part of the Kit extension that does not need Kit's UI: Replicator annotators -> stream-protocol messages.

Used by the extension (on every app update) and by ``scripts/stream_headless.py`` (a SimulationApp loop). It imports
``omni.replicator.core`` and ``pxr`` only inside Kit; the wire format comes from xrfed's ``bridge.stream.protocol``.
"""

from __future__ import annotations

import math
import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["StreamSettings", "AvatarStreamer", "ensure_xrfed_importable", "scripted_gaze", "SEGMENTATION_ANNOTATOR",
           "instance_object_lut", "object_segmentation", "prim_object_ids"]

#: Replicator annotator whose ``info["idToLabels"]`` maps instance ids to prim paths (``semantic_segmentation`` maps
#: ids to semantic classes, which cannot tell two mugs apart).
SEGMENTATION_ANNOTATOR = "instance_id_segmentation_fast"


def ensure_xrfed_importable(xrfed_root: str) -> None:
    """Make ``bridge`` importable from an xrfed checkout when it is not installed in Kit's Python."""
    if xrfed_root and xrfed_root not in sys.path:
        sys.path.insert(0, xrfed_root)
    import bridge.stream.protocol  # noqa: F401  (fail here, with the path in the message, rather than per frame)


@dataclass
class StreamSettings:
    endpoint: str = "tcp://127.0.0.1:5561"
    width_px: int = 128
    height_px: int = 128
    rate_hz: float = 10.0
    avatars_root: str = "/World/Avatars"
    compress: str = "rgb=jpeg,depth_m=zlib,segmentation=zlib"
    publisher_id: str = "omniverse"


def scripted_gaze(depth_m: np.ndarray, seg: np.ndarray, fov_y_deg: float) -> np.ndarray | None:
    """A fixation on the nearest labelled object in view (the scripted eye model's target choice), as the ``gaze``
    part: yaw_rad, pitch_rad, origin (0, 0, 0), vergence_depth_m, pupil_diameter_mm (3.5), confidence (1).

    None when no object is in view (the tracker then reports nothing rather than a made-up direction)."""
    mask = seg >= 0
    if not mask.any():
        return None
    ids, counts = np.unique(seg[mask], return_counts=True)
    d = np.where(mask, depth_m, np.inf)
    best = min(ids, key=lambda i: float(np.median(d[seg == i])))
    ys, xs = np.nonzero(seg == best)
    h, w = seg.shape
    cy, cx = ys.mean(), xs.mean()
    f_px = (h / 2) / math.tan(math.radians(fov_y_deg) / 2)
    yaw = math.atan2(cx + 0.5 - w / 2, f_px)
    pitch = math.atan2(h / 2 - (cy + 0.5), f_px)
    verg = float(np.median(depth_m[seg == best]))
    return np.array([yaw, pitch, 0.0, 0.0, 0.0, min(verg, 1e4), 3.5, 1.0], dtype=np.float32)


def instance_object_lut(id_to_prim_path: Any, object_ids: dict[str, int]) -> dict[int, int]:
    """Instance id -> xrfed object id, from the instance-id annotator's ``idToLabels`` (id -> prim path; ids may be
    strings) and the stage's ``xrfed:object_id`` prims (path -> id). Replicator labels the rendered prim -- usually a
    mesh below the object's Xform -- so each path takes the object id of its nearest ancestor (or itself) that has one;
    ids of prims outside every object (walls, floor) are left out, i.e. -1."""
    if not isinstance(id_to_prim_path, dict):
        raise TypeError(f"expected idToLabels as a dict of instance id -> prim path, got {type(id_to_prim_path).__name__}")
    lut: dict[int, int] = {}
    for raw_id, path in id_to_prim_path.items():
        try:
            iid = int(raw_id)
        except (TypeError, ValueError):
            raise ValueError(f"expected an integer instance id in idToLabels, got {raw_id!r}") from None
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"expected an absolute prim path for instance id {iid}, got {path!r}")
        p = path.rstrip("/")
        while p:
            if p in object_ids:
                lut[iid] = object_ids[p]
                break
            p = p.rsplit("/", 1)[0]
    return lut


def prim_object_ids(stage: Any) -> dict[str, int]:
    """Prim path -> xrfed object id of a USD stage, from the ``xrfed:object_id`` custom data usd_export writes."""
    out = {}
    for prim in stage.Traverse():
        oid = prim.GetCustomDataByKey("xrfed:object_id")
        if oid is not None:
            out[str(prim.GetPath())] = int(oid)
    return out


def object_segmentation(ids: Any, lut: dict[int, int]) -> np.ndarray:
    """Per-pixel xrfed object ids (int32, -1 = structure/background) of an instance-id image (H, W)."""
    arr = np.asarray(ids)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise ValueError(f"expected an (H, W) integer instance-id image, got shape {arr.shape} dtype {arr.dtype}")
    out = np.full(arr.shape, -1, dtype=np.int32)
    if lut:
        keys = np.fromiter(lut.keys(), dtype=np.int64, count=len(lut))
        vals = np.fromiter(lut.values(), dtype=np.int32, count=len(lut))
        order = np.argsort(keys)
        keys, vals = keys[order], vals[order]
        flat = arr.astype(np.int64)
        pos = np.clip(np.searchsorted(keys, flat), 0, len(keys) - 1)
        hit = keys[pos] == flat
        out[hit] = vals[pos[hit]]
    return out


def _rotation_to_quat_wxyz(r: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


class AvatarStreamer:
    """Owns the render products, annotators and the ZeroMQ socket; :meth:`tick` publishes one step if due."""

    def __init__(self, settings: StreamSettings):
        import omni.replicator.core as rep
        import omni.usd
        import zmq

        from bridge.stream.protocol import Compression

        self.settings = settings
        self.compression = Compression.parse(settings.compress)
        self.session = secrets.token_hex(8)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 16)
        self._sock.bind(settings.endpoint)
        self._stage = omni.usd.get_context().get_stage()
        self._cams: list[dict[str, Any]] = []
        root = self._stage.GetPrimAtPath(settings.avatars_root)
        for avatar in (root.GetChildren() if root and root.IsValid() else []):
            cam = avatar.GetChild("Camera")
            if not cam or not cam.IsValid():
                continue
            rp = rep.create.render_product(str(cam.GetPath()), (settings.width_px, settings.height_px))
            annos = {}
            for name in ("rgb", "distance_to_image_plane", SEGMENTATION_ANNOTATOR):
                a = rep.AnnotatorRegistry.get_annotator(name, init_params={"colorize": False}
                                                        if name == SEGMENTATION_ANNOTATOR else None)
                a.attach([rp])
                annos[name] = a
            device = str(avatar.GetCustomDataByKey("xrfed:device") or "unknown")
            self._cams.append({"prim": cam, "avatar": avatar.GetName(), "device": device, "rp": rp, "annos": annos,
                               "device_id": f"{avatar.GetName()}-{device}"})
        self._object_ids = prim_object_ids(self._stage)
        self._step = 0
        self._seq: dict[str, int] = {}
        self._next_s = 0.0
        self._next_hb = 0.0
        self._t0 = time.monotonic()

    @property
    def device_ids(self) -> list[str]:
        return [c["device_id"] for c in self._cams]

    def _segmentation(self, data: Any) -> np.ndarray:
        """The instance-id annotator's output -> xrfed object ids (-1 = structure/background)."""
        info = data.get("info", {}) if isinstance(data, dict) else {}
        lut = instance_object_lut(info.get("idToLabels") or {}, self._object_ids)
        return object_segmentation(data["data"], lut)

    def _pose(self, prim: Any) -> np.ndarray:
        from pxr import Usd, UsdGeom

        m = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default()))
        rot = m[:3, :3].T  # USD row-vector matrices: transpose to get columns = images of the camera axes
        # USD camera frame = the frame contract's head frame (+x right, +y up, -z forward).
        return np.concatenate([m[3, :3], _rotation_to_quat_wxyz(rot)]).astype(np.float32)

    def tick(self) -> bool:
        """Publish one step of every camera if one is due (call on every app update); returns whether it did."""
        from pxr import UsdGeom

        from bridge.stream.protocol import (
            PROTOCOL,
            VERSION,
            encode_arrays_message,
            encode_heartbeat,
            frame_topic,
        )

        now = time.monotonic()
        if now >= self._next_hb:
            self._next_hb = now + 1.0
            devices = [{"device_id": c["device_id"], "user_id": c["avatar"], "profile": c["device"]} for c in self._cams]
            self._sock.send_multipart(encode_heartbeat(publisher=self.settings.publisher_id, session=self.session,
                                                       seqs=self._seq, devices=devices,
                                                       step_dt_s=1.0 / self.settings.rate_hz))
        if now < self._next_s:
            return False
        self._next_s = now + 1.0 / self.settings.rate_hz
        for c in self._cams:
            rgba = np.asarray(c["annos"]["rgb"].get_data())
            if rgba.size == 0:
                return False  # the renderer has not produced a frame yet
            rgb = np.ascontiguousarray(rgba[..., :3]).astype(np.uint8)
            depth = np.asarray(c["annos"]["distance_to_image_plane"].get_data(), dtype=np.float32)
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.inf).astype(np.float32)
            seg = self._segmentation(c["annos"][SEGMENTATION_ANNOTATOR].get_data())
            cam = UsdGeom.Camera(c["prim"]).GetCamera()
            fov_y = float(cam.GetFieldOfView(cam.FOVVertical))
            arrays: dict[str, np.ndarray] = {"rgb": rgb, "depth_m": depth, "segmentation": seg,
                                             "pose": self._pose(c["prim"])}
            gaze = scripted_gaze(depth, seg, fov_y)
            if gaze is not None:
                arrays["gaze"] = gaze
                arrays["gaze_valid"] = np.asarray(True)
            topic = frame_topic(c["device_id"])
            seq = self._seq.get(topic.decode(), -1) + 1
            header = {"proto": PROTOCOL, "v": VERSION, "kind": "frame", "publisher": self.settings.publisher_id,
                      "session": self.session, "seq": seq, "device_id": c["device_id"], "user_id": c["avatar"],
                      "profile": c["device"], "channel": "frame", "step": self._step,
                      "sim_time_s": self._step / self.settings.rate_hz, "wall_time_ns": time.time_ns(),
                      "sent_ns": time.time_ns(), "camera_fov_y_deg": fov_y, "room": None, "labels": {},
                      "active_tasks": [], "events": []}
            self._sock.send_multipart(encode_arrays_message(topic, header, arrays, self.compression), copy=False)
            self._seq[topic.decode()] = seq
        self._step += 1
        return True

    def close(self) -> None:
        for c in self._cams:
            for a in c["annos"].values():
                a.detach()
            c["rp"].destroy()
        self._cams.clear()
        self._sock.close(0)
        self._ctx.term()
