"""The stand-in player against the real mlagents-envs 1.1.0 UnityEnvironment (the reference's checklist 5.3).

Each test runs the player in a thread on a free 127.0.0.1 port, serving a tiny synthetic scene, and always stops both
sides. Launch through ``file_name=`` is in test_unity_backend.py.
"""

from __future__ import annotations

import io
import socket
import struct
import time
import uuid
from contextlib import contextmanager

import numpy as np
import pytest

pytest.importorskip("mlagents_envs")
pytest.importorskip("grpc")

import mlagents_envs  # noqa: E402
from mlagents_envs.base_env import ActionTuple  # noqa: E402
from mlagents_envs.environment import UnityEnvironment  # noqa: E402
from mlagents_envs.exception import (  # noqa: E402
    UnityCommunicatorStoppedException,
    UnityEnvironmentException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel  # noqa: E402
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel  # noqa: E402
from mlagents_envs.side_channel.raw_bytes_channel import RawBytesChannel  # noqa: E402
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel  # noqa: E402

from bridge.unity import codec  # noqa: E402
from bridge.unity.backend import _construct_without_stray_atexit  # noqa: E402
from bridge.unity.errors import MessageTooLargeError  # noqa: E402
from bridge.unity.player import PlayerConfig, StandInPlayer  # noqa: E402
from bridge.unity.synthetic import SyntheticBackend, SyntheticConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BEHAVIOR = "XRAvatar_meta_quest_pro?team=0"
DEVICE = "user0-meta_quest_pro"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def session(*, profiles=("meta_quest_pro",), size=(4, 3), env_kwargs=None, player_kwargs=None, **cfg):
    port = free_port()
    backend = SyntheticBackend(SyntheticConfig(profiles=profiles, render_size=size))
    player = StandInPlayer(backend, PlayerConfig(port=port, connect_timeout_s=20, **cfg), **(player_kwargs or {}))
    player.start()
    env = None
    try:
        env = UnityEnvironment(base_port=port, timeout_wait=(env_kwargs or {}).pop("timeout_wait", 20),
                               **(env_kwargs or {}))
        yield env, player
    finally:
        if env is not None:
            env.close()
        player.stop(2.0)


def test_handshake_records_client_fields_and_layout():
    with session(env_kwargs={"seed": 42, "num_areas": 2}) as (env, player):
        ini = player.record.init_input
        assert (ini.seed, ini.communication_version, ini.package_version, ini.num_areas) == (
            42, "1.5.0", mlagents_envs.__version__, 2)
        caps = ini.capabilities
        assert all(getattr(caps, f) for f in ("baseRLCapabilities", "concatenatedPngObservations",
                                              "compressedChannelMapping", "hybridActions", "trainingAnalytics",
                                              "variableLengthObservation", "multiAgentGroups"))
        assert player.record.channels_first is True  # 1.1.0 decodes CHW
        assert env.behavior_specs == {} or BEHAVIOR in env.behavior_specs
    assert player.exit_code == 0


def test_wrong_communication_version_is_rejected_and_player_gets_400():
    port = free_port()
    player = StandInPlayer(SyntheticBackend(), PlayerConfig(port=port, communication_version="2.0.0",
                                                            connect_timeout_s=20)).start()
    try:
        with pytest.raises(UnityEnvironmentException, match="not compatible"):
            _construct_without_stray_atexit(UnityEnvironment, base_port=port, timeout_wait=20)
        assert player.join(10) == 0
        # status 400, or (when the client's server.stop() wins the race) the same close seen as a lost call
        assert player.record.exit_reason in ("the client closed (status 400)", "the client closed (status None)")
    finally:
        player.stop(2.0)


def test_reset_carries_side_channel_bytes_exactly():
    engine, params = EngineConfigurationChannel(), EnvironmentParametersChannel()
    engine.set_configuration_parameters(time_scale=20.0)
    params.set_float_parameter("gaze_noise", 0.25)
    with session(env_kwargs={"side_channels": [engine, params]}) as (env, player):
        env.reset()
        assert player.record.commands[0] == 1  # RESET
        records = codec.unpack_records(player.record.side_channel_bytes[0])
        ids = [cid for cid, _ in records]
        assert codec.ANALYTICS_CHANNEL_ID in ids
        assert (codec.ENGINE_CHANNEL_ID, bytes.fromhex("02000000") + struct.pack("<f", 20.0)) in records
        assert (codec.ENV_PARAMS_CHANNEL_ID, codec.encode_float_parameter("gaze_noise", 0.25)) in records
        assert player.record.parameters == {"gaze_noise": 0.25}


def test_behavior_spec_is_exact():
    with session(continuous_actions=2, discrete_branches=(3, 2)) as (env, _):
        env.reset()
        spec = env.behavior_specs[BEHAVIOR]
        got = [(o.name, o.shape, tuple(int(d) for d in o.dimension_property), o.observation_type.value)
               for o in spec.observation_specs]
        assert got == [("audio", (3 * 1600,), (1,), 0), ("depth_m", (2, 4, 3), (1, 2, 2), 0), ("device", (1,), (1,), 0),
                       ("gaze", (8,), (1,), 0), ("hands", (156,), (1,), 0), ("imu", (6,), (1,), 0),
                       ("labels", (6,), (1,), 0), ("pose", (7,), (1,), 0), ("present", (10,), (1,), 0),
                       ("rgb", (3, 4, 3), (1, 2, 2), 0)]
        assert (spec.action_spec.continuous_size, spec.action_spec.discrete_branches) == (2, (3, 2))


def test_observation_values_rewards_masks_and_ids():
    truth = SyntheticBackend(SyntheticConfig(profiles=("meta_quest_pro", "meta_quest_pro"), render_size=(4, 3)),
                             seed=9).reset()

    def mask(device_id, step):
        return [False, False, True] if device_id.startswith("user1") else [False, True, False]

    with session(profiles=("meta_quest_pro", "meta_quest_pro"), discrete_branches=(3,), env_kwargs={"seed": 9},
                 player_kwargs={"action_mask": mask, "reward": lambda f: 0.5 + f.step}) as (env, _):
        env.reset()
        spec = env.behavior_specs[BEHAVIOR]
        names = [o.name for o in spec.observation_specs]
        dec, term = env.get_steps(BEHAVIOR)
        assert list(dec.agent_id) == [0, 1] and len(term) == 0
        assert list(dec.reward) == [0.5, 0.5] and list(dec.group_id) == [0, 0]
        assert dec.action_mask[0].tolist() == [[False, True, False], [False, False, True]]
        f = truth["user1-meta_quest_pro"]
        obs = {n: dec.obs[j][1] for j, n in enumerate(names)}
        assert np.max(np.abs(obs["rgb"].transpose(1, 2, 0) - f.rgb / 255.0)) <= 1 / 255
        np.testing.assert_array_equal(obs["rgb"].transpose(1, 2, 0), f.rgb / np.float32(255.0))  # value / 255 exactly
        mm = np.where(np.isinf(f.depth_m), 65535, np.rint(f.depth_m.astype(np.float64) * 1000))  # the wire spec
        np.testing.assert_array_equal(np.rint(obs["depth_m"][0] * 255), mm // 256)  # hi byte / 255
        np.testing.assert_array_equal(np.rint(obs["depth_m"][1] * 255), mm % 256)  # lo byte / 255
        np.testing.assert_array_equal(obs["audio"], f.audio.samples.reshape(-1))
        assert obs["device"].tolist() == [1.0]


def test_actions_arrive_in_agent_order_with_deprecated_vector():
    with session(profiles=("meta_quest_pro", "ray_ban_meta", "meta_quest_pro"), continuous_actions=2,
                 discrete_branches=(3,)) as (env, player):
        env.reset()
        env.set_actions(BEHAVIOR, ActionTuple(continuous=np.array([[0.5, 0.25], [1.0, -1.0]], np.float32),
                                              discrete=np.array([[2], [1]], np.int32)))
        env.step()
        got = player.record.actions[0]
        assert got[BEHAVIOR] == [([0.5, 0.25], [2], [0.5, 0.25, 2.0]), ([1.0, -1.0], [1], [1.0, -1.0, 1.0])]
        assert got["XRAvatar_ray_ban_meta?team=0"] == [([0.0, 0.0], [0], [0.0, 0.0, 0.0])]  # filled with zeros


def test_terminal_agents_after_max_steps_are_interrupted_then_restart():
    with session(max_episode_steps=2) as (env, player):
        env.reset()
        env.step()
        assert len(env.get_steps(BEHAVIOR)[1]) == 0
        env.step()
        dec, term = env.get_steps(BEHAVIOR)
        assert list(term.agent_id) == [0] and term.interrupted.tolist() == [True]
        assert list(dec.agent_id) == [0]  # the new episode's first decision in the same message
        env.step()
        assert player.record.actions[-1][BEHAVIOR] == [([], [], [])]  # one action: the deciding agent only


def test_decision_period_runs_several_scene_steps_per_exchange():
    with session(decision_period=3) as (env, player):
        env.reset()
        env.step()
        env.step()
        assert player.backend._k == 6


def test_no_decision_requests_times_out():
    with session(decision_period=0, env_kwargs={"timeout_wait": 2}) as (env, _):
        t0 = time.monotonic()
        with pytest.raises(UnityTimeOutException):
            env.reset()
        assert time.monotonic() - t0 < 10


def test_stats_custom_and_unknown_side_channels():
    stats, raw = StatsSideChannel(), RawBytesChannel(uuid.UUID("0b4c3e1a-0000-4000-8000-000000000001"))
    raw.send_raw_data(b"hello")
    with session(env_kwargs={"side_channels": [stats, raw]},
                 player_kwargs={"stats": lambda frames: {"xrfed/devices": float(len(frames))}}) as (env, player):
        env.reset()
        assert stats.get_and_reset_stats()["xrfed/devices"][0][0] == 1.0
        assert player.record.unknown_channels == ["0b4c3e1a-0000-4000-8000-000000000001"]


def test_mid_run_reset_restarts_episode():
    with session() as (env, player):
        env.reset()
        env.step()
        env.step()
        env.reset()
        assert player.record.commands == [1, 0, 0, 1] and player.backend._k == 0


def test_close_from_python_ends_player_cleanly():
    with session() as (env, player):
        env.reset()
    assert player.join(5) == 0 and player.record.exit_reason.startswith("the client closed")


def test_close_from_player_stops_the_client():
    with session() as (env, player):
        env.reset()
        player._stop.set()  # the player quits at its next exchange, as Unity does when its window closes
        with pytest.raises(UnityCommunicatorStoppedException):
            env.step()  # answered by the player's status-400 message
        assert player.join(5) == 0 and player.record.exit_reason == "the player quit"


def test_two_workers_at_once_and_port_in_use():
    with session() as (env_a, _), session() as (env_b, _):
        env_a.reset()
        env_b.reset()
        port = env_a._port
        with pytest.raises(UnityWorkerInUseException):
            _construct_without_stray_atexit(UnityEnvironment, base_port=port, timeout_wait=1)


def test_player_refuses_a_message_over_the_limit():
    with session(max_message_bytes=2000, env_kwargs={"timeout_wait": 10}) as (env, player):
        with pytest.raises(UnityCommunicatorStoppedException):
            env.reset()
        assert player.join(5) == 1 and isinstance(player.error, MessageTooLargeError)
        assert "exceeds the 2000-byte gRPC limit" in str(player.error)


def test_oversized_message_only_times_out_on_the_client():
    # Regression record of the failure mode the guard exists for: 2000 x 2000 RGB with one channel of noise makes
    # a PNG of about 4.5 MB > 4 MiB.
    with session(size=(2000, 2000), enforce_size_limit=False, env_kwargs={"timeout_wait": 2}) as (env, _):
        with pytest.raises(UnityTimeOutException):
            env.reset()


def test_png_is_a_real_rgb_png():
    from PIL import Image

    from bridge.unity.observations import encode_png

    img = Image.open(io.BytesIO(encode_png(np.zeros((2, 3, 3), np.uint8))))
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (3, 2))
