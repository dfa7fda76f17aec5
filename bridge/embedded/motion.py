"""Avatar behaviour: task-script timelines, walking through doorways, head motion per activity, and the IMU.

``ScriptRunner`` turns a scenario task script (explicit segments, or ``random`` generation from the seed) into a
stream of :class:`SegmentPlan` objects. ``AvatarMotion`` integrates the body and head at 20 Hz inside each step and
reports the head pose plus the IMU sample (specific force and angular velocity averaged over the step, head frame,
noise-free: the backend adds sensor noise).

Activities leave their signature in motion only (so ``activity_recognition`` is learnable from IMU/pose/ego-motion):
walking = translation with a 2 Hz vertical bob; inspecting = slow head scanning; manipulating = head pitched down
with small rapid motions; crouching = eye height lowered by ~0.5 m; idle = slow sway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..scenario import Avatar, Room, Scenario, Segment
from ..tasks import ACTIVITIES, TASKS

__all__ = ["SegmentPlan", "ScriptRunner", "AvatarMotion", "head_rotation", "matrix_to_quat", "door_graph"]

GRAVITY = np.array([0.0, 0.0, -9.81])
SUBSTEP_S = 0.05  # 20 Hz inside each step: resolves the 2 Hz gait bob, keeps 8 avatars cheap


@dataclass
class SegmentPlan:
    """A resolved task-script segment."""

    duration_s: float
    activity: str
    path_world: list[tuple[float, float]] = field(default_factory=list)
    look_at: list[int] = field(default_factory=list)  # scenario object indices
    gestures: list[str] = field(default_factory=list)
    commands: list[tuple[float, str]] = field(default_factory=list)  # (offset_s within segment, word)
    interact: int | None = None  # scenario object index
    tasks: tuple[str, ...] = ()


def door_graph(scenario: Scenario) -> dict[str, list[tuple[str, tuple[float, float], tuple[float, float]]]]:
    """Room adjacency through doorways: room -> [(other room, door point (world), inward normal of this room)]."""
    doors: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    for r in scenario.rooms:
        ox, oy = r.origin_m
        sx, sy, _ = r.size_m
        pts = {"east": ((ox + sx, oy + sy / 2), (-1.0, 0.0)), "west": ((ox, oy + sy / 2), (1.0, 0.0)),
               "north": ((ox + sx / 2, oy + sy), (0.0, -1.0)), "south": ((ox + sx / 2, oy), (0.0, 1.0))}
        for side in r.doors:
            doors.append((r.name, *pts[side]))
    graph: dict[str, list[tuple[str, tuple[float, float], tuple[float, float]]]] = {r.name: [] for r in scenario.rooms}
    for a, pa, na in doors:
        for b, pb, _ in doors:
            if a != b and math.dist(pa, pb) < 0.3:
                graph[a].append((b, pa, na))
    return graph


def _plan_path(scenario: Scenario, graph, start_xy: tuple[float, float], start_room: str, goal_room: str,
               goal_xy_world: tuple[float, float]) -> list[tuple[float, float]]:
    """Waypoints (world) from start to goal, through doorways (breadth-first over rooms)."""
    if start_room == goal_room:
        return [goal_xy_world]
    prev: dict[str, tuple[str, tuple[float, float], tuple[float, float]] | None] = {start_room: None}
    queue = [start_room]
    while queue:
        cur = queue.pop(0)
        for other, door, normal in graph[cur]:
            if other not in prev:
                prev[other] = (cur, door, normal)
                queue.append(other)
    if goal_room not in prev:  # unreachable: stay in the room, walk to its nearest point
        return []
    hops = []
    node = goal_room
    while prev[node] is not None:
        parent, door, normal = prev[node]  # type: ignore[misc]
        hops.append((door, normal))
        node = parent
    path: list[tuple[float, float]] = []
    for door, normal in reversed(hops):
        path.append((door[0] + 0.5 * normal[0], door[1] + 0.5 * normal[1]))  # approach inside the current room
        path.append((door[0] - 0.5 * normal[0], door[1] - 0.5 * normal[1]))  # step through
    path.append(goal_xy_world)
    return path


class ScriptRunner:
    """Yields the segments of one avatar's task script, resolving rooms, objects and random choices."""

    def __init__(self, scenario: Scenario, avatar: Avatar, rng: np.random.Generator):
        self.scenario, self.avatar, self.rng = scenario, avatar, rng
        self.script = scenario.task_scripts.get(avatar.script) if avatar.script else None
        self._obj_index = {o.name: i for i, o in enumerate(scenario.objects)}
        self._graph = door_graph(scenario)
        self._k = 0

    def next_segment(self, pos_xy: tuple[float, float], room: str) -> SegmentPlan:
        s = self.script
        if s is None:
            return self._random_segment(pos_xy, room, None)
        if s.segments and (s.loop or self._k < len(s.segments)):
            seg = s.segments[self._k % len(s.segments)]
            self._k += 1
            return self._explicit(seg, pos_xy, room)
        return self._random_segment(pos_xy, room, s.random)

    # -- explicit segments
    def _explicit(self, seg: Segment, pos_xy, room: str) -> SegmentPlan:
        path: list[tuple[float, float]] = []
        if seg.waypoints:
            target_room = self.scenario.room(seg.room or room)
            cur_xy, cur_room = pos_xy, room
            for wp in seg.waypoints:
                goal = target_room.to_world(wp)
                path += _plan_path(self.scenario, self._graph, cur_xy, cur_room, target_room.name, goal)
                cur_xy, cur_room = goal, target_room.name
        commands = self._command_times(list(seg.commands), seg.duration_s)
        return SegmentPlan(
            duration_s=seg.duration_s, activity=seg.activity, path_world=path,
            look_at=[self._obj_index[n] for n in seg.look_at], gestures=list(seg.gestures), commands=commands,
            interact=self._obj_index[seg.interact] if seg.interact else None, tasks=seg.tasks,
        )

    def _command_times(self, words: list[str], duration_s: float) -> list[tuple[float, str]]:
        if not words:
            return []
        # Spread the words over the segment at random, independent moments (no link to gestures or activity).
        slots = np.sort(self.rng.uniform(0.2, max(0.3, duration_s - 0.9), size=len(words)))
        return [(float(t), w) for t, w in zip(slots, words, strict=True)]

    # -- random segments
    def _random_segment(self, pos_xy, room: str, rs) -> SegmentPlan:
        rng = self.rng
        rooms = list(rs.rooms) if rs and rs.rooms else [r.name for r in self.scenario.rooms]
        seg_lo, seg_hi = rs.segment_s if rs else (4.0, 9.0)
        duration = float(rng.uniform(seg_lo, seg_hi))
        activities = list(rs.activities) if rs else list(ACTIVITIES)
        activity = str(rng.choice(activities))
        path: list[tuple[float, float]] = []
        dest_room = room
        if activity == "walking":
            dest_room = str(rng.choice(rooms))
            r: Room = self.scenario.room(dest_room)
            goal = r.to_world((rng.uniform(0.8, r.size_m[0] - 0.8), rng.uniform(0.8, r.size_m[1] - 0.8)))
            path = _plan_path(self.scenario, self._graph, pos_xy, room, dest_room, goal)
            if path:
                length = sum(math.dist(a, b) for a, b in zip([pos_xy] + path[:-1], path, strict=True))
                duration = max(duration, length / self.avatar.user.gait_speed_mps + 1.0)
            else:  # no door leads there: the avatar stays where it is (and in its room)
                dest_room = room
        in_room = [i for i, o in enumerate(self.scenario.objects) if o.room == dest_room]
        look = list(rng.choice(in_room, size=min(len(in_room), int(rng.integers(2, 5))), replace=False)) if in_room else []
        gestures: list[str] = []
        if rs is None or rng.random() < rs.gesture_prob:
            pool = list(rs.gestures) if rs else ["pinch", "tap", "grab", "point"]
            gestures = [str(g) for g in rng.choice(pool, size=int(rng.integers(1, 3)))]
        rate = rs.command_rate_per_min if rs else 6.0
        n_cmd = int(rng.poisson(rate * duration / 60.0))
        pool_c = list(rs.commands) if rs else ["yes", "no"]
        words = [str(w) for w in rng.choice(pool_c, size=n_cmd)] if n_cmd else []
        interact = int(rng.choice(look)) if look and rng.random() < 0.7 else None
        return SegmentPlan(duration_s=duration, activity=activity, path_world=path, look_at=[int(i) for i in look],
                           gestures=gestures, commands=self._command_times(words, duration), interact=interact,
                           tasks=tuple(rs.tasks) if rs and rs.tasks else tuple(TASKS))


def head_rotation(yaw_rad: float, pitch_rad: float, roll_rad: float = 0.0) -> np.ndarray:
    """Head->world rotation for a head facing world yaw (0 = +x) and pitch (positive up); head frame is OpenXR
    view space (+x right, +y up, -z forward)."""
    cy, sy, cp, sp = math.cos(yaw_rad), math.sin(yaw_rad), math.cos(pitch_rad), math.sin(pitch_rad)
    fx, fy, fz = cp * cy, cp * sy, sp  # forward
    rx, ry, rz = sy, -cy, 0.0  # right
    ux, uy, uz = -cy * sp, -sy * sp, cp  # up = right x forward (written out: this runs 8 avatars x 50 Hz)
    if roll_rad:
        c, s = math.cos(roll_rad), math.sin(roll_rad)
        rx, ry, rz, ux, uy, uz = c * rx + s * ux, c * ry + s * uy, c * rz + s * uz, \
            -s * rx + c * ux, -s * ry + c * uy, -s * rz + c * uz
    return np.array([[rx, ux, -fx], [ry, uy, -fy], [rz, uz, -fz]])


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qa = np.array(q)
    qa /= np.linalg.norm(qa)
    return qa if qa[0] >= 0 else -qa


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class AvatarMotion:
    """Body and head kinematics of one avatar, integrated at 20 Hz inside each step."""

    def __init__(self, avatar: Avatar, start_xy_world: tuple[float, float], rng: np.random.Generator):
        self.user = avatar.user
        self.rng = rng
        self.xy = np.array(start_xy_world, dtype=float)
        self.body_yaw = math.radians(avatar.start_yaw_deg)
        self.head_yaw = self.body_yaw
        self.head_pitch = 0.0
        self.eye_height = 0.93 * self.user.height_m
        self.t = 0.0
        self.path: list[tuple[float, float]] = []
        self.activity = "idle"
        self.walking = False
        self._phase = float(rng.uniform(0, 2 * math.pi))
        self._prev_pos: np.ndarray | None = None
        self._prev_vel = np.zeros(3)
        self._prev_R: np.ndarray | None = None
        self.position = self._head_position()
        self.R = head_rotation(self.head_yaw, self.head_pitch)

    def set_segment(self, plan: SegmentPlan) -> None:
        self.path = list(plan.path_world)
        self.activity = plan.activity

    @property
    def moving(self) -> bool:
        return bool(self.path)

    def _head_position(self) -> np.ndarray:
        bob = 0.0
        if self.walking:
            bob = 0.025 * math.sin(2 * math.pi * 2.0 * self.t + self._phase)
        return np.array([self.xy[0], self.xy[1], self.eye_height + bob])

    def step(self, dt_s: float, look_point_world: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``dt_s``; returns (position_m, R head->world, specific force head frame, angular velocity head)."""
        n = max(1, int(round(dt_s / SUBSTEP_S)))
        h = dt_s / n
        f_acc = np.zeros(3)
        w_acc = np.zeros(3)
        for _ in range(n):
            self._substep(h, look_point_world)
            pos = self._head_position()
            R = head_rotation(self.head_yaw, self.head_pitch, 0.02 * math.sin(self.t * 1.3 + self._phase))
            if self._prev_pos is None:
                vel = np.zeros(3)
                acc = np.zeros(3)
                omega_world = np.zeros(3)
            else:
                vel = (pos - self._prev_pos) / h
                acc = (vel - self._prev_vel) / h
                dR = R @ self._prev_R.T  # type: ignore[union-attr]
                angle = math.acos(max(-1.0, min(1.0, (np.trace(dR) - 1) / 2)))
                if angle < 1e-9:
                    omega_world = np.zeros(3)
                else:
                    axis = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]])
                    omega_world = axis / (2 * math.sin(angle)) * angle / h
            f_acc += R.T @ (acc - GRAVITY)
            w_acc += R.T @ omega_world
            self._prev_pos, self._prev_vel, self._prev_R = pos, vel, R
        self.position, self.R = self._prev_pos, self._prev_R  # type: ignore[assignment]
        return self.position.copy(), self.R.copy(), f_acc / n, w_acc / n

    def _substep(self, h: float, look_point_world: np.ndarray | None) -> None:
        self.t += h
        u = self.user
        # -- body translation along the path
        self.walking = False
        if self.path:
            goal = np.array(self.path[0])
            d = goal - self.xy
            dist = float(np.linalg.norm(d))
            step = u.gait_speed_mps * h
            if dist <= step:
                self.xy = goal
                self.path.pop(0)
            else:
                self.xy = self.xy + d / dist * step
                self.walking = True
                self.body_yaw = math.atan2(d[1], d[0])
        # -- eye height (crouching lowers the head)
        target_h = 0.93 * u.height_m - (0.5 if self.activity == "crouching" and not self.walking else 0.0)
        self.eye_height += (target_h - self.eye_height) * min(1.0, h / 0.4)
        # -- head orientation: towards the look point (outside a dead zone), else the walking direction
        want_yaw, want_pitch = self.head_yaw, 0.0
        if look_point_world is not None:
            d3 = look_point_world - self._head_position()
            want_yaw = math.atan2(d3[1], d3[0])
            want_pitch = math.atan2(d3[2], math.hypot(d3[0], d3[1]))
            if self.walking:  # walkers glance but keep facing roughly where they go
                want_yaw = self.body_yaw + max(-0.5, min(0.5, _wrap(want_yaw - self.body_yaw)))
        elif self.walking:
            want_yaw = self.body_yaw
        act = "walking" if self.walking else self.activity
        if act == "inspecting":
            want_yaw += math.radians(25) * math.sin(2 * math.pi * 0.25 * self.t + self._phase)
            want_pitch += math.radians(8) * math.sin(2 * math.pi * 0.17 * self.t)
        elif act == "manipulating":
            want_pitch = math.radians(-30) + math.radians(4) * math.sin(2 * math.pi * 1.5 * self.t)
            want_yaw += math.radians(5) * math.sin(2 * math.pi * 0.9 * self.t + self._phase)
        elif act == "crouching":
            want_pitch = min(want_pitch, math.radians(-15))
        elif act == "idle":
            want_yaw += math.radians(3) * math.sin(2 * math.pi * 0.1 * self.t + self._phase)
        dyaw = _wrap(want_yaw - self.head_yaw)
        if abs(dyaw) < math.radians(8) and act not in ("inspecting", "manipulating", "idle"):
            dyaw = 0.0  # eyes cover small shifts (eye-head coordination)
        max_rate = math.radians(150) * h
        self.head_yaw = _wrap(self.head_yaw + max(-max_rate, min(max_rate, dyaw * min(1.0, h / 0.25))))
        dp = want_pitch - self.head_pitch
        self.head_pitch += max(-max_rate, min(max_rate, dp * min(1.0, h / 0.3)))
        self.head_pitch = max(math.radians(-60), min(math.radians(45), self.head_pitch))

    @property
    def current_activity(self) -> str:
        return "walking" if self.walking else self.activity
