"""What one avatar's render draws, shared by the in-process renderer, the render process and ``xrfed bench sim``:
the view record, the hand capsules, and view-frustum culling."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RenderedView", "add_capsules", "no_images", "render_view", "FrustumCuller", "SKIN_RGBA"]

SKIN_RGBA = np.array([0.87, 0.68, 0.56, 1.0], dtype=np.float32)


@dataclass(frozen=True)
class RenderedView:
    """What one avatar's render drew: the camera, the headlight's ambient level, the passes, and the wearer's hand
    capsules. ``xrfed bench sim`` replays these with bare MuJoCo calls to render the very same images."""

    camera: int
    ambient: float
    rgb: bool
    depth: bool
    segmentation: bool
    capsules: list[tuple[float, np.ndarray, np.ndarray]]


def no_images() -> dict[str, np.ndarray | None]:
    """The image record of a view with no pass rendered (the render functions fill in ``rgb``/``depth``/``seg``)."""
    return {"rgb": None, "depth": None, "seg": None}


def add_capsules(mj: Any, scn: Any, capsules: Sequence[tuple[float, np.ndarray, np.ndarray]],
                 rgba: np.ndarray = SKIN_RGBA) -> None:
    """Append capsules ``(radius_m, end_a, end_b)`` (world frame) to an ``MjvScene`` after ``mjv_updateScene``."""
    zeros, eye = np.zeros(3), np.eye(3).ravel()
    capsule = mj.mjtGeom.mjGEOM_CAPSULE
    for radius, a, b in capsules:
        if scn.ngeom >= scn.maxgeom:
            return
        g = scn.geoms[scn.ngeom]
        mj.mjv_initGeom(g, capsule, zeros, zeros, eye, rgba)
        mj.mjv_connector(g, capsule, radius, a, b)
        # mjv_initGeom leaves the slot's object id/type and segmentation id as they were (a stale model geom's,
        # once culling shrinks the scene); reset them, so the segmentation pass reports a hand as no object (-1).
        g.objtype = int(mj.mjtObj.mjOBJ_UNKNOWN)
        g.objid = -1
        g.segid = scn.ngeom
        scn.ngeom += 1


def render_view(mj: Any, renderer: Any, data: Any, v: RenderedView, scene_option: Any, *,
                culler: FrustumCuller | None = None, hands: bool = True,
                out: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray | None]:
    """Render one view: headlight, ``update_scene`` (culled when a culler is given), the hand capsules, then the
    passes the view asks for -- colour, metric depth, segmentation -- each into ``out[name]`` when given.

    Depth gets its own pass: MuJoCo's depth pass (segmentation flags on) matches analytic geometry exactly, while the
    z-buffer left by the colour pass is 1-2 % off on surfaces seen at grazing angles (measured against ray-plane
    intersections; see ``tests/bridge/test_embedded.py``), so reading both buffers from one render is not worth its
    saving.
    """
    renderer.model.vis.headlight.ambient[:] = v.ambient
    with culler.hidden(data, v.camera) if culler is not None else contextlib.nullcontext():
        renderer.update_scene(data, camera=v.camera, scene_option=scene_option)
    if hands:
        add_capsules(mj, renderer.scene, v.capsules)
    dst = out or {}
    images = no_images()
    if v.rgb:
        images["rgb"] = renderer.render(out=dst.get("rgb"))
    if v.depth:
        renderer.enable_depth_rendering()
        images["depth"] = renderer.render(out=dst.get("depth"))
        renderer.disable_depth_rendering()
    if v.segmentation:
        renderer.enable_segmentation_rendering()
        images["seg"] = renderer.render(out=dst.get("seg"))
        renderer.disable_segmentation_rendering()
    return images


class FrustumCuller:
    """Leaves out of one camera's scene every geom whose bounding sphere lies wholly outside its view frustum.

    Software OpenGL pays ~10 us per drawn geom and pass whether it covers pixels or not, and MuJoCo submits every
    geom of the model for every camera; an egocentric camera in a multi-room scene sees a third of them. A geom
    outside the frustum contributes no pixel to colour, depth or segmentation, so the images are bit-identical
    (tested). Culled geoms get alpha 0 for the length of one ``mjv_updateScene`` -- MuJoCo skips those -- and their
    colours are restored right after. Planes (``rbound`` 0, infinite) are never culled.
    """

    def __init__(self, model: Any, aspect: float):
        self._m = model
        self._rbound = np.asarray(model.geom_rbound, dtype=np.float64)
        self._cullable = self._rbound > 0
        self._aspect = float(aspect)
        self._saved = np.array(model.geom_rgba[:, 3])
        self.culled = 0  # geoms left out, summed over update_scene calls
        self.kept = 0

    def visible(self, data: Any, cam: int) -> np.ndarray:
        """Boolean [ngeom]: the geoms that may be seen from camera ``cam`` (camera frame: x right, y up, -z view)."""
        ty = math.tan(math.radians(float(self._m.cam_fovy[cam])) / 2)
        tx = ty * self._aspect
        R = np.asarray(data.cam_xmat[cam]).reshape(3, 3)
        p = (np.asarray(data.geom_xpos) - data.cam_xpos[cam]) @ R  # [ngeom, 3] in the camera frame
        depth = -p[:, 2]
        r = self._rbound
        out = depth < -r  # wholly behind the camera
        out |= (np.abs(p[:, 0]) - tx * depth) > r * math.sqrt(1 + tx * tx)  # wholly left or right
        out |= (np.abs(p[:, 1]) - ty * depth) > r * math.sqrt(1 + ty * ty)  # wholly above or below
        return ~(out & self._cullable)

    @contextlib.contextmanager
    def hidden(self, data: Any, cam: int) -> Iterator[None]:
        vis = self.visible(data, cam)
        alpha = self._m.geom_rgba[:, 3]
        self._saved[:] = alpha
        alpha[~vis] = 0.0
        n_vis = int(vis.sum())
        self.kept += n_vis
        self.culled += vis.size - n_vis
        try:
            yield
        finally:
            alpha[:] = self._saved
