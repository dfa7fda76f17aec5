"""XRAvatarEnv / XRParallelEnv: spaces, presence mask, reward, seeding, bad input, and the episode wrappers.

(Gymnasium's and PettingZoo's own checkers over every backend are in test_env_contract.py.)"""

import gymnasium
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

from bridge.embedded.backend import EmbeddedBackend
from bridge.envs import (
    ENV_ID,
    TASK_ORDER,
    EnvError,
    XRAvatarEnv,
    XRParallelEnv,
    make_reward,
    register_reward,
    reward_names,
)
from bridge.errors import UnknownNameError
from bridge.scenario import parse_scenario
from bridge.tasks import TASKS
from bridge.wrappers import ModalityDropout, RandomLighting


@pytest.fixture
def tiny(tiny_raw):
    tiny_raw["render"] = {"width_px": 16, "height_px": 16}
    return parse_scenario(tiny_raw)


@pytest.fixture
def avp(tiny):
    env = XRAvatarEnv(tiny, audio=False)  # u1 wears an Apple Vision Pro: rgb, depth, gaze, pose, imu, hands
    yield env
    env.close()


def _perfect(labels, tasks=TASK_ORDER):
    return np.array([TASKS[t].index(labels[t]) for t in tasks], dtype=np.int64)


def test_presence_mask_and_reward(tiny):
    env = XRAvatarEnv(tiny, device="u2-ray_ban_meta", audio=False)
    obs, info = env.reset(seed=1)
    assert set(obs) == {"rgb", "audio", "present"}  # the glasses' profile: rgb + audio
    assert obs["present"].tolist() == [1, 0, 0, 0, 0, 0, 0]  # audio disabled in this run -> flagged absent
    assert not obs["audio"].any()
    _, reward, term, trunc, _ = env.step(_perfect(info["labels"]))
    assert reward == pytest.approx(1.0) and not term and not trunc
    wrong = (_perfect(info["labels"]) + 1) % env.action_space.nvec
    _, reward, _, _, _ = env.step(wrong)
    assert reward == 0.0
    env.close()


def test_observation_is_a_copy_of_the_frame(avp):
    obs, _ = avp.reset(seed=2)
    f = avp.frame
    np.testing.assert_array_equal(obs["rgb"], f.rgb)
    np.testing.assert_array_equal(obs["pose"], np.r_[f.head_pose.position_m, f.head_pose.orientation_wxyz]
                                  .astype(np.float32))
    assert not np.shares_memory(obs["rgb"], f.rgb)
    assert obs["present"].tolist() == [1, 1, 1, 0, 1, 1, 1]


def test_unseeded_resets_continue_the_seeded_sequence(avp):
    avp.reset(seed=3)
    first = avp.reset()[0]["imu"]
    avp.reset(seed=3)
    again = avp.reset()[0]["imu"]
    seeded = avp.reset(seed=3)[0]["imu"]
    np.testing.assert_array_equal(first, again)  # same seed, same episodes
    assert not np.array_equal(first, seeded)  # reset() is a new episode, not a replay of the last seed


def test_task_subset_and_custom_reward(tiny):
    env = XRAvatarEnv(tiny, audio=False, tasks=("scene_classification",),
                      reward=lambda frame, predicted: 10.0 * predicted["scene_classification"])
    assert env.action_space.nvec.tolist() == [TASKS["scene_classification"].num_classes]
    env.reset(seed=0)
    assert env.step(np.array([3]))[1] == 30.0
    env.close()


def test_bad_actions_and_arguments_name_the_problem(avp, tiny):
    avp.reset(seed=0)
    with pytest.raises(EnvError, match=r"action: expected integers of shape \(6,\).*got \[1, 2\]"):
        avp.step([1, 2])
    with pytest.raises(EnvError, match=r"0 <= a < \[18, 10, 8, 11, 5, 18\].*got \[0, 0, 0, 0, 0, 99\]"):
        avp.step(np.array([0, 0, 0, 0, 0, 99]))
    with pytest.raises(EnvError, match="dtype float"):
        avp.step(np.zeros(6))
    with pytest.raises(UnknownNameError, match="unknown device 'nobody'; known: u1-apple_vision_pro"):
        XRAvatarEnv(tiny, audio=False, device="nobody")
    with pytest.raises(EnvError, match="expected none with a backend instance"):
        XRAvatarEnv(tiny, backend=EmbeddedBackend(tiny))
    with pytest.raises(UnknownNameError, match="unknown task 'juggling'"):
        XRAvatarEnv(tiny, tasks=("juggling",))
    with pytest.raises(UnknownNameError, match="unknown reward 'nope'; known: labels"):
        make_reward("nope")
    with pytest.raises(EnvError, match="already registered"):
        register_reward("labels", lambda f, p: 0.0)
    assert "labels" in reward_names()


def test_gymnasium_make_registers_the_env_with_a_time_limit(tiny):
    env = gymnasium.make(ENV_ID, scenario=tiny, audio=False, max_episode_steps=3)
    env.reset(seed=0)
    truncs = [env.step(env.action_space.sample())[3] for _ in range(3)]
    assert truncs == [False, False, True]
    assert env.unwrapped.spec.id == ENV_ID and env.unwrapped.spec.nondeterministic is False
    env.close()


def test_a_scene_that_cannot_replay_keeps_saying_so_through_make(avp, tiny):
    env = XRAvatarEnv(tiny, audio=False, deterministic=False)
    env.spec = EnvSpec(id=ENV_ID, nondeterministic=False)  # what gymnasium.make assigns after construction
    assert env.spec.nondeterministic is True and avp.spec.nondeterministic is False
    env.close()


def test_modality_dropout_wrapper_is_seeded_and_flags_what_it_drops(tiny):
    env = ModalityDropout(XRAvatarEnv(tiny, audio=False), p=0.5, modalities=["rgb", "gaze", "imu"])

    def run(seed):
        obs = [env.reset(seed=seed)[0]] + [env.step(env.action_space.sample())[0] for _ in range(6)]
        return obs

    a, b = run(4), run(4)
    flags = np.array([o["present"] for o in a])
    np.testing.assert_array_equal(flags, [o["present"] for o in b])
    for o in a:  # a dropped modality is zeros and flagged 0; the unwrapped depth is never dropped
        assert o["present"][1] == 1
        for i, key in ((0, "rgb"), (2, "gaze"), (5, "imu")):
            assert o["present"][i] == 1 or not o[key].any()
    dropped = (flags[:, [0, 2, 5]] == 0).mean()
    assert 0.1 < dropped < 0.9  # about half of 21 draws
    env.close()
    with pytest.raises(EnvError, match=r"p: expected a probability 0 <= p < 1, got 1.5"):
        ModalityDropout(env, p=1.5)
    with pytest.raises(EnvError, match=r"expected modalities among the observation's .* got 'smell'"):
        ModalityDropout(env, p=0.1, modalities=["smell"])


def test_random_lighting_wrapper_reaches_the_scene(tiny):
    env = RandomLighting(XRAvatarEnv(tiny, audio=False), intensity=(0.1, 0.3), color_temperature_k=(3000, 3000))
    _, info = env.reset(seed=9)
    drawn = info["lighting"]["intensity"]
    assert 0.1 <= drawn <= 0.3 and info["lighting"]["color_temperature_k"] == 3000.0
    env.step(env.action_space.sample())
    lit = env.unwrapped.frame.lighting
    assert lit.intensity == pytest.approx(drawn) and lit.color_temperature_k == pytest.approx(3000.0)
    assert env.reset(seed=9)[1]["lighting"]["intensity"] == drawn
    env.close()
    with pytest.raises(EnvError, match=r"intensity: expected finite 0.0 <= lo <= hi, got \(0.5, 0.2\)"):
        RandomLighting(env, intensity=(0.5, 0.2))


def test_parallel_env_rewards_each_agent_for_its_own_prediction(tiny):
    penv = XRParallelEnv(tiny, audio=False, max_steps=2)
    _, infos = penv.reset(seed=0)
    acts = {a: _perfect(infos[a]["labels"]) for a in penv.agents}
    acts["u2-ray_ban_meta"] = (acts["u2-ray_ban_meta"] + 1) % penv.action_space("u2-ray_ban_meta").nvec
    _, rew, _, trunc, _ = penv.step(acts)
    assert rew == {"u1-apple_vision_pro": 1.0, "u2-ray_ban_meta": 0.0} and not any(trunc.values())
    with pytest.raises(EnvError, match=r"expected agents among the live agents .* got \['ghost'\]"):
        penv.step({"ghost": acts["u2-ray_ban_meta"]})
    _, _, _, trunc, _ = penv.step({})
    assert all(trunc.values()) and penv.agents == []
    penv.close()
    with pytest.raises(EnvError, match="max_steps: expected an integer >= 1, got 0"):
        XRParallelEnv(tiny, max_steps=0)


def test_a_sensor_whose_shape_changes_mid_episode_is_rejected_and_the_episode_can_be_reset():
    from bridge.stream import Publisher, PublisherConfig
    from bridge.stream.backend import ZmqBackend
    from bridge.stream.synthetic import synthetic_frame

    with Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless")) as pub:
        backend = ZmqBackend(pub.endpoint, devices=["d0"], step_dt_s=0.1, timeout_s=3.0).open()
        assert pub.wait_for_subscriber(b"xrfed/d0/frame")
        pub.publish(synthetic_frame("d0", step=0))  # 8 x 6 images: fixes the observation space
        env = XRAvatarEnv(backend=backend)
        assert env.observation_space["rgb"].shape == (8, 6, 3)
        pub.publish(synthetic_frame("d0", step=1, height_px=10))
        with pytest.raises(EnvError, match=r"device 'd0' step 1: observation 'rgb' expected shape \(8, 6, 3\) "
                                           r"\(the env's observation space.*got \(10, 6, 3\)"):
            env.step(env.action_space.sample())
        pub.publish(synthetic_frame("d0", step=2))
        obs, _ = env.reset()
        assert obs["rgb"].shape == (8, 6, 3) and env.frame.step == 2
        env.close()
