"""One environment contract for every backend: Gymnasium's ``check_env`` and PettingZoo's ``parallel_api_test`` over
the embedded scene, the stand-in Unity player (through the real ``mlagents_envs`` client) and the ZeroMQ backend."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import gymnasium
import numpy as np
import pettingzoo
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test

from bridge.backend import SimBackend
from bridge.embedded.backend import EmbeddedBackend
from bridge.envs import XRAvatarEnv, XRParallelEnv
from bridge.scenario import parse_scenario
from tests.bridge.test_stream_backend import _Scene  # a remote scene publishing two devices

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BACKENDS = ("embedded", "unity", "zmq")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=BACKENDS)
def new_backend(request, tiny_raw) -> Iterator[Callable[[], SimBackend]]:
    """A factory of fresh backends of one kind (each env owns and closes its backend); the scene behind them is torn
    down after the test."""
    tiny_raw["render"] = {"width_px": 16, "height_px": 16}
    scenario = parse_scenario(tiny_raw)
    cleanup: list[Callable[[], None]] = []
    kind = request.param
    if kind == "embedded":
        def make() -> SimBackend:
            return EmbeddedBackend(scenario, audio=False, seed=5)
    elif kind == "unity":
        pytest.importorskip("mlagents_envs")
        from bridge.unity.backend import UnityBackend
        from bridge.unity.player import PlayerConfig, StandInPlayer

        def make() -> SimBackend:
            port = _free_port()
            player = StandInPlayer(EmbeddedBackend(scenario, audio=False, seed=5),
                                   PlayerConfig(port=port, connect_timeout_s=20)).start()
            cleanup.append(lambda: player.stop(2.0))
            return UnityBackend(base_port=port, timeout_wait_s=20, seed=5)
    else:
        from bridge.stream import Publisher, PublisherConfig
        from bridge.stream.backend import ZmqBackend

        pub = Publisher(PublisherConfig(bind="tcp://127.0.0.1:*", mode="lossless", heartbeat_s=0.05),
                        step_dt_s=0.1).open()
        scene = _Scene(pub)
        scene.start()

        def stop_scene() -> None:
            scene.stop.set()
            scene.join(5)
            pub.close()

        cleanup.append(stop_scene)

        def make() -> SimBackend:
            return ZmqBackend(pub.endpoint, timeout_s=5.0)
    try:
        yield make
    finally:
        for fn in reversed(cleanup):
            fn()


def test_every_backend_meets_the_gymnasium_and_pettingzoo_contract(new_backend):
    env = XRAvatarEnv(backend=new_backend())
    with env:
        assert isinstance(env, gymnasium.Env) and type(env) is XRAvatarEnv
        replays = env.backend.name != "zmq"  # a one-way stream cannot restart its remote scene
        assert env.spec is not None and env.spec.nondeterministic is not replays
        # with a spec that says deterministic, check_env also asserts that seeded resets and steps replay exactly
        check_env(env, skip_render_check=True, skip_close_check=True)
        a, _ = env.reset(seed=7)
        b, _ = env.reset(seed=7)
        assert all(np.array_equal(a[k], b[k]) for k in a) is replays  # a stream has moved on to later steps
        assert env.render() is not None and env.render().dtype == np.uint8
    env.close()  # closing twice is allowed

    penv = XRParallelEnv(backend=new_backend(), max_steps=5)
    with_agents = penv.possible_agents
    try:
        assert isinstance(penv, pettingzoo.ParallelEnv) and type(penv) is XRParallelEnv
        assert len(with_agents) == 2
        parallel_api_test(penv, num_cycles=8)
    finally:
        penv.close()
