"""A real RL library trains on the env unmodified: stable-baselines3 PPO on XRAvatarEnv (smoke test, deterministic).

The learning curve on a task where reward rises above a random policy is a benchmark: ``xrfed bench rl``."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.envs import XRAvatarEnv
from bridge.scenario import parse_scenario

sb3 = pytest.importorskip("stable_baselines3")  # the ``rl`` extra; scripts/setup.sh installs it

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture
def env(tiny_raw):
    tiny_raw["render"] = {"width_px": 36, "height_px": 36}  # the smallest image SB3's NatureCNN accepts
    e = XRAvatarEnv(parse_scenario(tiny_raw), audio=False, render_process=False)
    yield e
    e.close()


def _train(env, seed: int):
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    model = PPO("MultiInputPolicy", env, n_steps=32, batch_size=16, n_epochs=2, seed=seed, device="cpu")
    model.learn(64)
    params = torch.cat([p.detach().flatten() for p in model.policy.parameters()]).numpy()
    return model, params


def test_ppo_trains_on_the_unmodified_env_deterministically(env):
    from stable_baselines3.common.env_checker import check_env

    check_env(env, warn=False)  # SB3's own checker accepts the Dict observation and MultiDiscrete action
    model, first = _train(env, seed=11)
    assert model.num_timesteps == 64 and np.isfinite(first).all()
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(np.asarray(action))
    _, again = _train(env, seed=11)
    _, other = _train(env, seed=12)
    np.testing.assert_array_equal(first, again)  # same seeds (env and SB3), same trained weights
    assert not np.array_equal(first, other)
