"""Choose MuJoCo's OpenGL backend for headless rendering before mujoco is imported.

``auto`` keeps a ``MUJOCO_GL`` the user already set, else probes EGL (GPU or Mesa) and falls back to OSMesa
(pure software). The probe runs in a subprocess because a failed GL context can abort the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache

from ..errors import BackendError

__all__ = ["select_gl", "GL_BACKENDS"]

GL_BACKENDS = ("egl", "osmesa", "glfw")

_PROBE = (
    "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>');"
    "r = mujoco.Renderer(m, 8, 8); d = mujoco.MjData(m); r.update_scene(d); r.render(); r.close()"
)


@lru_cache(maxsize=None)
def _works(backend: str) -> bool:
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend if backend != "glfw" else ""}
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def select_gl(preference: str = "auto") -> str:
    """Set ``MUJOCO_GL``/``PYOPENGL_PLATFORM`` and return the backend used. Call before importing mujoco."""
    if preference not in ("auto", *GL_BACKENDS):
        raise BackendError(f"render.gl: unknown OpenGL backend {preference!r}; allowed: auto, {', '.join(GL_BACKENDS)}")
    mujoco_loaded = "mujoco" in sys.modules
    current = os.environ.get("MUJOCO_GL")
    if preference == "auto":
        if current:
            return current
        if mujoco_loaded:  # too late to choose; mujoco picked its own default
            return os.environ.get("MUJOCO_GL", "glfw")
        for cand in ("egl", "osmesa"):
            if _works(cand):
                preference = cand
                break
        else:
            raise BackendError(
                "no headless OpenGL backend works: install Debian's libegl1 + libgl1-mesa-dri (EGL) or libosmesa6 "
                "(OSMesa) -- `make setup` does this -- or set MUJOCO_GL"
            )
    if mujoco_loaded and current and current != preference:
        raise BackendError(f"mujoco was already imported with MUJOCO_GL={current!r}; cannot switch to {preference!r} "
                           "in this process")
    os.environ["MUJOCO_GL"] = preference
    if preference in ("egl", "osmesa"):
        os.environ["PYOPENGL_PLATFORM"] = preference
    return preference
