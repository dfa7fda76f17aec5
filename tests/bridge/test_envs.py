"""The Gymnasium and PettingZoo faces pass the libraries' own checkers."""

import numpy as np
import pytest

from bridge.envs import TASK_ORDER, XRAvatarEnv, XRParallelEnv
from bridge.scenario import parse_scenario
from bridge.tasks import TASKS


@pytest.fixture
def tiny(tiny_raw):
    return parse_scenario(tiny_raw)


def test_gymnasium_checker(tiny):
    from gymnasium.utils.env_checker import check_env

    env = XRAvatarEnv(tiny, audio=False, max_steps=10)
    check_env(env, skip_render_check=True)
    env.close()


def test_pettingzoo_parallel_checker(tiny):
    from pettingzoo.test import parallel_api_test

    env = XRParallelEnv(tiny, audio=False, max_steps=10)
    parallel_api_test(env, num_cycles=15)
    env.close()


def test_presence_mask_and_reward(tiny):
    env = XRAvatarEnv(tiny, device="u2-ray_ban_meta", audio=False, max_steps=3)
    obs, info = env.reset(seed=1)
    assert set(obs) == {"rgb", "audio", "present"}  # the glasses' profile: rgb + audio
    assert obs["present"].tolist() == [1, 0, 0, 0, 0, 0, 0]  # audio disabled in this run -> flagged absent
    labels = info["labels"]
    perfect = np.zeros(len(TASK_ORDER), dtype=np.int64)
    for i, t in enumerate(TASK_ORDER):
        perfect[i] = TASKS[t].index(labels[t])
    _, reward, term, trunc, _ = env.step(perfect)
    assert reward == pytest.approx(1.0) and not term and not trunc
    env.close()
