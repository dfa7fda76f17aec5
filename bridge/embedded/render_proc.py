"""A render process for the embedded scene: MuJoCo's OpenGL renderer in a child process, images in shared memory.

Why: on a CPU-only machine the embedded backend's step is OpenGL rasterization (C, one core) plus Python (motion,
gaze, hands, labels, audio, exposure, frame validation). In one process the two fight over the GIL: every time the
renderer returns from C it waits for whichever Python thread holds the interpreter, and the renderer idles. Here
the child does nothing but render -- set the step's state, ``update_scene`` (with frustum culling), add the wearer's
hand capsules, ``render`` into shared memory -- while the parent's single thread does all the Python work, so the
two cores work in parallel without sharing a lock.

Protocol (a ``multiprocessing`` pipe between this package's own processes, never a network socket):

* parent -> child ``("state", qpos, mocap_pos, mocap_quat, light_diffuse)`` once per step, then
  ``("view", slot, RenderedView)`` per avatar, in avatar order; ``("close",)`` at the end;
* child -> parent ``("ready", gl_backend)`` once, ``("done", slot, seconds, (culled, kept))`` per view (render time
  and the culler's running totals), ``("error", text)`` if anything fails (the child then exits; the parent raises
  :class:`~bridge.errors.BackendError`).

The child builds its model from the same MJCF text as the parent and runs ``mj_kinematics`` + ``mj_camlight`` on the
same ``qpos``/mocap state, so its images are bit-identical to an in-process render (tested).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import traceback
from multiprocessing import shared_memory
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError

__all__ = ["RenderProcess"]

_SPIN_S = 0.002


def _layout(h: int, w: int, slots: int) -> tuple[int, int, int, int]:
    rgb, depth, seg = h * w * 3, h * w * 4, h * w * 2 * 4
    per = rgb + depth + seg
    return rgb, depth, seg, per * slots


def _views(buf: Any, h: int, w: int, slots: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb_n, depth_n, seg_n, _ = _layout(h, w, slots)
    off = 0
    rgb = np.ndarray((slots, h, w, 3), np.uint8, buf, off)
    off += rgb_n * slots
    depth = np.ndarray((slots, h, w), np.float32, buf, off)
    off += depth_n * slots
    seg = np.ndarray((slots, h, w, 2), np.int32, buf, off)
    return rgb, depth, seg


def _spin(conn: Connection, seconds: float) -> None:
    """Poll ``conn`` for up to ``seconds`` before the caller blocks on it: a blocked process takes 0.1-0.3 ms to
    wake up on a virtual machine, and both sides spend the gaps of a step waiting with nothing else to do."""
    end = time.perf_counter() + seconds
    while not conn.poll(0) and time.perf_counter() < end:
        pass


def _serve(conn: Connection) -> None:
    """The child: build the model, then render views on request until told to close."""
    shm = None
    try:
        _, xml, h, w, slots, shm_name, cull = conn.recv()
        import mujoco

        from .gl import ensure_mujoco_context
        from .views import FrustumCuller, render_view

        ensure_mujoco_context(os.environ.get("MUJOCO_GL", ""))
        m = mujoco.MjModel.from_xml_string(xml)
        d = mujoco.MjData(m)
        r = mujoco.Renderer(m, h, w)
        opt = mujoco.MjvOption()
        culler = FrustumCuller(m, w / h) if cull else None
        shm = shared_memory.SharedMemory(name=shm_name)
        # The parent owns (and unlinks) the segment; before Python 3.13 attaching also registers it with this
        # process's resource tracker, which would unlink it again at exit and warn.
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        rgb, depth, seg = _views(shm.buf, h, w, slots)
        conn.send(("ready", os.environ.get("MUJOCO_GL", "")))
        while True:
            _spin(conn, _SPIN_S)  # between steps the parent poses the next one for ~1 ms
            msg = conn.recv()
            kind = msg[0]
            if kind == "close":
                break
            if kind == "state":
                _, qpos, mocap_pos, mocap_quat, light_diffuse = msg
                d.qpos[:] = qpos
                d.mocap_pos[:] = mocap_pos
                d.mocap_quat[:] = mocap_quat
                m.light_diffuse[:] = light_diffuse
                mujoco.mj_kinematics(m, d)
                mujoco.mj_camlight(m, d)
                continue
            _, slot, v = msg
            t0 = time.perf_counter()
            render_view(mujoco, r, d, v, opt, culler=culler, out={"rgb": rgb[slot], "depth": depth[slot],
                                                                   "seg": seg[slot]})
            conn.send(("done", slot, time.perf_counter() - t0,
                       (culler.culled, culler.kept) if culler is not None else (0, 0)))
        del rgb, depth, seg
        r.close()
    except (EOFError, KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        pass
    except BaseException:  # noqa: BLE001 - everything goes back to the parent as text
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if shm is not None:
            shm.close()
        conn.close()


class RenderProcess:
    """The parent's handle on one render child (see the module docstring).

    ``begin_step`` sends the step's state, ``submit(slot, view)`` queues one view, ``wait(slot)`` blocks until that
    view is in shared memory and returns its images as arrays owned by the caller (copies), or None per pass not
    rendered.
    """

    def __init__(self, xml: str, height_px: int, width_px: int, slots: int, *, cull: bool, timeout_s: float = 60.0):
        self.h, self.w, self.slots = int(height_px), int(width_px), max(1, int(slots))
        self.timeout_s = float(timeout_s)
        self.spin_s = 0.02  # how long ``wait`` polls before it blocks (seconds)
        self.render_s = 0.0
        self.culled = self.kept = 0
        self._done: dict[int, float] = {}
        *_, total = _layout(self.h, self.w, self.slots)
        self._shm: shared_memory.SharedMemory | None = shared_memory.SharedMemory(create=True, size=total)
        self._rgb, self._depth, self._seg = _views(self._shm.buf, self.h, self.w, self.slots)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the bridge package
        env["PYTHONPATH"] = os.pathsep.join([root, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        ours, theirs = socket.socketpair()
        self._sock: socket.socket | None = ours
        self._conn: Connection | None = Connection(os.dup(ours.fileno()))
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "bridge.embedded.render_proc", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.close()
            raise BackendError(f"could not start the render process: {exc}") from exc
        finally:
            theirs.close()
        self._send(("init", xml, self.h, self.w, self.slots, self._shm.name, bool(cull)))
        msg = self._recv()
        if msg[0] != "ready":  # pragma: no cover - _recv raises on errors
            self.close()
            raise BackendError(f"render process: unexpected first message {msg[0]!r}")

    def _recv(self, spin_s: float = 0.0) -> tuple[Any, ...]:
        if self._conn is None:
            raise BackendError("render process: used after close()")
        try:
            _spin(self._conn, spin_s)  # while a render is under way this thread has nothing else to do
            if not self._conn.poll(self.timeout_s):
                raise BackendError(f"render process: no answer within {self.timeout_s:.0f} s")
            msg = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._proc.poll()
            self.close()
            raise BackendError(f"render process died (exit code {code}): {exc or 'pipe closed'}") from None
        if msg[0] == "error":
            self.close()
            raise BackendError(f"render process failed:\n{msg[1]}")
        return msg

    def _send(self, msg: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise BackendError("render process: used after close()")
        try:
            self._conn.send(msg)
        except OSError as exc:
            code = self._proc.poll()
            self.close()
            raise BackendError(f"render process died (exit code {code}): {exc}") from None

    def begin_step(self, qpos: np.ndarray, mocap_pos: np.ndarray, mocap_quat: np.ndarray,
                   light_diffuse: np.ndarray) -> None:
        self._done.clear()
        self._send(("state", qpos, mocap_pos, mocap_quat, light_diffuse))  # pickled (copied) right here

    def submit(self, slot: int, view: Any) -> None:
        self._send(("view", int(slot), view))

    def wait(self, slot: int, view: Any) -> dict[str, np.ndarray | None]:
        while slot not in self._done:
            _, s, seconds, (culled, kept) = self._recv(spin_s=self.spin_s)
            self._done[s] = seconds
            self.render_s += seconds
            self.culled, self.kept = culled, kept
        return {"rgb": self._rgb[slot].copy() if view.rgb else None,
                "depth": self._depth[slot].copy() if view.depth else None,
                "seg": self._seg[slot].copy() if view.segmentation else None}

    def _release(self) -> None:
        shm, self._shm = getattr(self, "_shm", None), None
        if shm is not None:
            self._rgb = self._depth = self._seg = None  # type: ignore[assignment]
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

    def close(self) -> None:
        proc = getattr(self, "_proc", None)
        conn = getattr(self, "_conn", None)
        if proc is not None and proc.poll() is None:
            try:
                conn.send(("close",))  # type: ignore[union-attr]
            except (OSError, AttributeError):
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if conn is not None:
            conn.close()
            self._conn = None
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()
            self._sock = None
        self._release()

    def __del__(self) -> None:  # a backend that was never closed must not leak a process or shared memory
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _serve(Connection(int(args[0])))


if __name__ == "__main__":
    main()
