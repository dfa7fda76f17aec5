"""Choose MuJoCo's OpenGL backend for headless rendering before mujoco is imported.

``auto`` keeps a ``MUJOCO_GL`` the user already set, else probes EGL (GPU or Mesa) and falls back to OSMesa
(pure software). The probe runs in a subprocess because a failed GL context can abort the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache

from ..errors import BackendError

__all__ = ["select_gl", "ensure_mujoco_context", "GL_BACKENDS"]

GL_BACKENDS = ("egl", "osmesa", "glfw")

_PROBE = (
    "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>');"
    "r = mujoco.Renderer(m, 8, 8); d = mujoco.MjData(m); r.update_scene(d); r.render(); r.close()"
)


@cache
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


def ensure_mujoco_context(backend: str) -> None:
    """Make ``mujoco.Renderer`` use ``backend`` even if mujoco was imported before :func:`select_gl` ran.

    mujoco reads ``MUJOCO_GL`` once, when it is first imported, and otherwise falls back to GLFW, which needs a
    display. A user who imported mujoco first would get a confusing GLFW error; instead we point mujoco's context
    class at the headless backend we selected.
    """
    if backend not in ("egl", "osmesa"):
        return
    try:
        from mujoco.rendering.classic import gl_context as glc  # mujoco >= 3.3
    except ImportError:  # pragma: no cover - older layout
        from mujoco import gl_context as glc
    if getattr(glc, "_MUJOCO_GL", "") == backend:
        return
    try:
        if backend == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.osmesa import GLContext
    except Exception as exc:  # noqa: BLE001 - PyOpenGL raises assorted errors for a missing platform library
        raise BackendError(f"cannot load the {backend} OpenGL backend after mujoco was imported: {exc}; set "
                           f"MUJOCO_GL={backend} before starting Python") from exc
    glc.GLContext = GLContext
    glc._MUJOCO_GL = backend
