"""xrfed.bridge: simulators -> Python. One frame contract (:class:`DeviceFrame`), several scene backends."""

from __future__ import annotations

from .backend import (
    BackendState,
    DeviceInfo,
    SceneCommand,
    SetLighting,
    SetModality,
    ShowPrediction,
    SimBackend,
)
from .devices import DeviceProfile, device_names, get_device, register_device
from .errors import (
    BackendError,
    BridgeError,
    DatasetError,
    FrameValidationError,
    ScenarioError,
    TransportError,
    UnknownNameError,
    XrfedError,
)
from .frame import Audio, DeviceFrame, Gaze, Hands, Imu, LightingState, Pose
from .registry import backend_names, make_backend, register_backend
from .tasks import MODALITIES, TASKS, TaskSpec, get_task, task_names

__all__ = [
    "Audio", "BackendError", "BackendState", "BridgeError", "DatasetError", "DeviceFrame", "DeviceInfo",
    "DeviceProfile", "FrameValidationError", "Gaze", "Hands", "Imu", "LightingState", "MODALITIES", "Pose",
    "ScenarioError", "SceneCommand", "SetLighting", "SetModality", "ShowPrediction", "SimBackend", "TASKS",
    "TaskSpec", "TransportError", "UnknownNameError", "backend_names", "device_names", "get_device", "get_task",
    "make_backend", "register_backend", "register_device", "task_names", "XrfedError",
]
