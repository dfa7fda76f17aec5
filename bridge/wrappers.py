"""Episode behaviours of :class:`~bridge.envs.XRAvatarEnv` as Gymnasium wrappers (cross-cutting, not flags).

* :class:`ModalityDropout` -- each modality of each step's observation is absent with probability ``p``: zero-filled
  and flagged 0 in ``present``, exactly as a modality the scene itself dropped.
* :class:`RandomLighting` -- at every reset, the scene's lighting is overridden with an intensity and colour
  temperature drawn uniformly from the given ranges (domain randomization), sent to the scene as a
  :class:`~bridge.backend.SetLighting` command with the first step.

Episode length is Gymnasium's own ``gymnasium.wrappers.TimeLimit``. Every wrapper draws from its own generator,
seeded from ``reset(seed=...)`` (and, on unseeded resets, continuing), so the same seeds give the same episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from .backend import SetLighting
from .envs import OBS_KEYS, EnvError, XRAvatarEnv
from .tasks import MODALITIES

__all__ = ["ModalityDropout", "RandomLighting"]


def _wrapper_rng(seed: int | None, tag: int, current: np.random.Generator | None,
                 env: gym.Env[Any, Any]) -> np.random.Generator:
    """A seeded reset reseeds the wrapper's generator from (seed, tag); an unseeded one keeps it, or -- the first
    time -- derives it from the env's ``np_random`` (itself seeded by the env's first reset)."""
    if seed is not None:
        return np.random.default_rng([int(seed), tag])
    if current is not None:
        return current
    return np.random.default_rng([int(env.unwrapped.np_random.integers(0, 2**31 - 1)), tag])


class ModalityDropout(gym.ObservationWrapper[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]):
    """Drop each present modality of each observation with probability ``p`` (0 <= p < 1).

    ``modalities``: which modalities may drop (default: every modality the observation space has). A dropped
    modality's array is zeros and its ``present`` flag 0 -- the same encoding as a modality the scene did not deliver.
    """

    _TAG = 0x6D6F64  # "mod": keeps this generator's stream apart from other wrappers' for the same seed

    def __init__(self, env: gym.Env[dict[str, np.ndarray], np.ndarray], p: float,
                 modalities: Sequence[str] | None = None):
        super().__init__(env)
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= float(p) < 1.0:
            raise EnvError(f"modality dropout p: expected a probability 0 <= p < 1, got {p!r}")
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or "present" not in space.spaces:
            raise EnvError(f"modality dropout: expected an XRAvatarEnv-style Dict observation with 'present', got "
                           f"{space}")
        have = [m for m in MODALITIES if OBS_KEYS[m] in space.spaces]
        chosen = have if modalities is None else list(modalities)
        for m in chosen:
            if m not in have:
                raise EnvError(f"modality dropout: expected modalities among the observation's {have}, got {m!r}")
        self.p: float = float(p)
        self.modalities: tuple[str, ...] = tuple(chosen)
        self._rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = _wrapper_rng(seed, self._TAG, self._rng, self.env)
        return self.observation(obs), info

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._rng is None:
            raise EnvError("modality dropout: call reset() before step()")
        out = dict(observation)
        present = np.array(observation["present"], dtype=np.int8)
        drops = self._rng.random(len(self.modalities)) < self.p  # one draw per modality per step, present or not
        for m, drop in zip(self.modalities, drops, strict=True):
            i = MODALITIES.index(m)
            if drop and present[i]:
                key = OBS_KEYS[m]
                out[key] = np.zeros_like(observation[key])
                present[i] = 0
        out["present"] = present
        return out


class RandomLighting(gym.Wrapper[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]):
    """Override the scene's lighting at every reset with ``intensity`` (relative, 0 = dark, 1 = the scenario's full
    level) and ``color_temperature_k`` (kelvin) drawn uniformly from ``[lo, hi]``; the draw is in ``info["lighting"]``.

    The override travels with the first ``step`` (a scene command), so the reset observation still shows the
    schedule's lighting. The wrapped env must be an :class:`~bridge.envs.XRAvatarEnv` (possibly wrapped).
    """

    _TAG = 0x6C6974  # "lit"

    def __init__(self, env: gym.Env[dict[str, np.ndarray], np.ndarray],
                 intensity: tuple[float, float] = (0.2, 1.0),
                 color_temperature_k: tuple[float, float] = (2700.0, 6500.0)):
        super().__init__(env)
        if not isinstance(env.unwrapped, XRAvatarEnv):
            raise EnvError(f"random lighting: expected an XRAvatarEnv underneath, got {type(env.unwrapped).__name__}")
        for name, (lo, hi), floor in (("intensity", intensity, 0.0), ("color_temperature_k", color_temperature_k, 1.0)):
            if not (np.isfinite(lo) and np.isfinite(hi) and floor <= lo <= hi):
                raise EnvError(f"random lighting {name}: expected finite {floor} <= lo <= hi, got ({lo}, {hi})")
        self.intensity = (float(intensity[0]), float(intensity[1]))
        self.color_temperature_k = (float(color_temperature_k[0]), float(color_temperature_k[1]))
        self._rng: np.random.Generator | None = None

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._rng = _wrapper_rng(seed, self._TAG, self._rng, self.env)
        cmd = SetLighting(intensity=float(self._rng.uniform(*self.intensity)),
                          color_temperature_k=float(self._rng.uniform(*self.color_temperature_k)))
        base = self.env.unwrapped
        assert isinstance(base, XRAvatarEnv)  # checked in __init__
        base.queue([cmd])
        return obs, {**info, "lighting": {"intensity": cmd.intensity, "color_temperature_k": cmd.color_temperature_k}}
