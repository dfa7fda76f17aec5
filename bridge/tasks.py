"""The XR tasks (the seed paper's Table 2) whose ground truth every backend attaches to each frame.

Each task is a classification over a fixed vocabulary, so that every device and every round shares the same
heads. ``modalities`` lists the modalities that *carry* the label: the embedded scene is built so that the label
is learnable from those and from nothing else (e.g. a spoken command exists only in the audio).

Label conventions
-----------------
* ``object_recognition``: category of the object under the device's pointing ray -- the eye-gaze ray when the
  device tracks eyes and the sample is valid, else the head-gaze ray (view centre), as on HoloLens/RealWear.
  ``background`` when the ray hits walls/floor or nothing.
* ``gesture_recognition``: the hand gesture being performed now (``none`` between gestures).
* ``scene_classification``: the type of the room the avatar stands in.
* ``speech_command``: the command word whose utterance overlaps this step's audio interval (``none`` otherwise).
* ``activity_recognition``: the body activity of the current script segment.
* ``intent_prediction``: category of the next object the user will interact with (``none`` when the script
  names no upcoming interaction).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UnknownNameError

__all__ = [
    "MODALITIES",
    "OBJECT_CATEGORIES",
    "GESTURES",
    "ROOM_TYPES",
    "COMMANDS",
    "ACTIVITIES",
    "TaskSpec",
    "TASKS",
    "get_task",
    "task_names",
]

#: Modality names used everywhere (frames, device profiles, model tokenizers, datasets).
MODALITIES: tuple[str, ...] = ("rgb", "depth", "gaze", "audio", "pose", "imu", "hands")

OBJECT_CATEGORIES: tuple[str, ...] = (
    "background", "table", "chair", "sofa", "lamp", "mug", "book", "plant", "screen", "cabinet",
    "bed", "machine", "conveyor", "crate", "toolbox", "monitor", "cart", "sink",
)
GESTURES: tuple[str, ...] = (
    "none", "pinch", "tap", "grab", "point", "open_palm", "swipe_left", "swipe_right", "thumbs_up", "wave",
)
ROOM_TYPES: tuple[str, ...] = (
    "living_room", "kitchen", "bedroom", "office", "factory_floor", "warehouse", "clinic_exam", "clinic_ward",
)
COMMANDS: tuple[str, ...] = (
    "none", "yes", "no", "stop", "go", "next", "back", "open", "close", "help", "select",
)
ACTIVITIES: tuple[str, ...] = ("idle", "walking", "inspecting", "manipulating", "crouching")


@dataclass(frozen=True)
class TaskSpec:
    """One task: its label vocabulary, the modalities that carry it, and its latency class (Table 2)."""

    name: str
    classes: tuple[str, ...]
    modalities: tuple[str, ...]
    latency_class: str  # "very_low" | "low" | "moderate"
    latency_budget_ms: float
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        """Class index of ``label``; raises with the allowed labels when unknown."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise UnknownNameError(f"{self.name} label", label, self.classes) from None


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "object_recognition", OBJECT_CATEGORIES, ("rgb", "depth", "gaze"), "low", 50.0,
            "category of the object under the device's pointing ray (eye gaze, else head gaze)",
        ),
        TaskSpec(
            "gesture_recognition", GESTURES, ("rgb", "hands"), "low", 50.0,
            "hand gesture being performed (visible in the egocentric camera and in hand joints)",
        ),
        TaskSpec(
            "scene_classification", ROOM_TYPES, ("rgb", "depth"), "moderate", 200.0,
            "type of the room the user is in (materials, furniture, room geometry)",
        ),
        TaskSpec(
            "speech_command", COMMANDS, ("audio",), "low", 50.0,
            "command word spoken during the step (present only in the audio)",
        ),
        TaskSpec(
            "activity_recognition", ACTIVITIES, ("imu", "pose", "rgb"), "moderate", 100.0,
            "body activity (head/body motion pattern, visible as ego-motion)",
        ),
        TaskSpec(
            "intent_prediction", OBJECT_CATEGORIES[1:] + ("none",), ("gaze", "pose", "imu", "rgb"), "very_low",
            20.0, "category of the next object the user will interact with (gaze dwells on it beforehand)",
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name; an unknown name lists the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownNameError("task", name, tuple(TASKS)) from None


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)
