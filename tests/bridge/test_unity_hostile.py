"""Hostile input to the stand-in ML-Agents player (issue 14): bad client messages are rejected, counted and reported
while the player keeps serving; the ML-Agents link stays on loopback unless allowed; every CLI flag is range-checked.

The regression tests drive the player with the real mlagents-envs 1.1.0 ``UnityEnvironment`` (as
test_unity_player.py does); the fuzz tests use :mod:`bridge.unity.fuzz`.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
import tracemalloc
import uuid
from contextlib import contextmanager

import pytest

pytest.importorskip("mlagents_envs")
pytest.importorskip("grpc")
pytest.importorskip("hypothesis")

from mlagents_envs.environment import UnityEnvironment  # noqa: E402
from mlagents_envs.exception import UnityCommunicatorStoppedException  # noqa: E402
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel  # noqa: E402
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel  # noqa: E402
from mlagents_envs.side_channel.raw_bytes_channel import RawBytesChannel  # noqa: E402

from bridge.errors import BackendError, XrfedError  # noqa: E402
from bridge.fuzzing import assert_no_crash  # noqa: E402
from bridge.unity import codec  # noqa: E402
from bridge.unity.backend import UnityBackend, UnityConfig  # noqa: E402
from bridge.unity.errors import RejectedMessageError, UnityProtocolError  # noqa: E402
from bridge.unity.fuzz import SURFACES, client_message, make_player  # noqa: E402
from bridge.unity.player import PlayerConfig, StandInPlayer  # noqa: E402
from bridge.unity.synthetic import SyntheticBackend, SyntheticConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BEHAVIOR = "XRAvatar_meta_quest_pro?team=0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def session(side_channels=(), timeout_wait=5):
    port = free_port()
    backend = SyntheticBackend(SyntheticConfig(profiles=("meta_quest_pro",), render_size=(4, 3)))
    player = StandInPlayer(backend, PlayerConfig(port=port, connect_timeout_s=20)).start()
    env = None
    try:
        env = UnityEnvironment(base_port=port, timeout_wait=timeout_wait, side_channels=list(side_channels))
        yield env, player
    finally:
        if env is not None:
            env.close()
        player.stop(2.0)


def _answer(out: bytes | None):
    assert out, "the player ended the session"
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    return UnityMessageProto.FromString(out)


# -- defect 1: a malformed message killed the player and left the client hanging ------------------------------------
BAD_RECORDS = {
    # struct.error in the old decoder: a key length with no key and no type after it
    "truncated_env_parameter": (codec.ENV_PARAMS_CHANNEL_ID, b"\x05\x00\x00\x00ab", "env_parameter"),
    # RecursionError in the old decoder (json.loads of 100 000 nested lists)
    "nested_xrfed_json": (codec.XRFED_CHANNEL_ID, b"[" * 100_000 + b"]" * 100_000, "xrfed_message"),
    # a scene-to-Python message: the old player raised UnityProtocolError out of its session
    "scene_to_python_message": (codec.XRFED_CHANNEL_ID, codec.encode_message(codec.make_message(
        "event", name="x", detail="y")), "xrfed_message"),
    # a lighting value the scene cannot show (the old player passed NaN into the scene)
    "nan_lighting": (codec.ENV_PARAMS_CHANNEL_ID, codec.encode_float_parameter("xrfed.lighting.intensity",
                                                                               float("nan")), "env_parameter"),
    # an engine setting type Unity does not know, with a length field of 2**31 - 1 after it
    "unknown_engine_setting": (codec.ENGINE_CHANNEL_ID, struct.pack("<ii", 9, 2**31 - 1), "engine_config"),
}


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_bad_side_channel_message_is_rejected_reported_and_the_session_goes_on(name):
    """Regression (issue 14): a malformed side-channel message made the player exit (struct.error, RecursionError,
    UnityProtocolError) without answering, so UnityEnvironment hung until timeout_wait (UnityTimeOutException).
    Now the client gets an answer at once (status 500 -> UnityCommunicatorStoppedException), the rejection is counted
    by reason, and the next reset()/step() on the same connection is served."""
    cid, payload, reason = BAD_RECORDS[name]
    raw = RawBytesChannel(cid)
    with session([raw]) as (env, player):
        raw.send_raw_data(payload)
        t0 = time.monotonic()
        with pytest.raises(UnityCommunicatorStoppedException):
            env.reset()
        assert time.monotonic() - t0 < 4  # answered, not timed out (timeout_wait is 5 s)
        assert player.alive and player.stats.rejected == {reason: 1}
        assert "rejected" in player.stats.last_rejection and "\n" not in player.stats.last_rejection
        env.reset()  # the same connection goes on
        env.step()
        decision, _ = env.get_steps(BEHAVIOR)
        assert list(decision.agent_id) == [0]
        assert player.record.commands == [1, 0] and player.stats.exchanges == 2
    assert player.join(5) == 0


def test_unity_backend_raises_the_scenes_reason_and_goes_on():
    """Regression (issue 14): UnityBackend (real UnityEnvironment inside) sent NaN lighting; the old player passed it
    into the scene, died building the frame (FrameValidationError) and the backend waited for timeout_wait_s. Now the
    player rejects it and the backend raises RejectedMessageError with the player's one-line reason at once; nothing
    was applied, and the next step works."""
    port = free_port()
    player = StandInPlayer(SyntheticBackend(SyntheticConfig(profiles=("meta_quest_pro",), render_size=(4, 3))),
                           PlayerConfig(port=port, connect_timeout_s=20)).start()
    backend = UnityBackend(base_port=port, timeout_wait_s=5, seed=1)
    try:
        backend.reset()
        backend._params.set_float_parameter("xrfed.lighting.intensity", float("nan"))
        t0 = time.monotonic()
        with pytest.raises(RejectedMessageError, match=r"port \d+: xrfed player rejected the message: environment parameter 'xrfed.lighting.intensity': "
                                                    r"value must be finite, got nan$"):
            backend.step()
        assert time.monotonic() - t0 < 4
        assert player.stats.rejected == {"env_parameter": 1} and player.record.parameters == {}
        frames = backend.step()
        light = frames["user0-meta_quest_pro"].lighting
        assert light is not None and light.intensity == 1.0  # the NaN never reached the scene
    finally:
        backend.close()
        player.stop(2.0)


def test_a_rejected_message_applies_nothing():
    player = make_player()
    good = codec.encode_float_parameter("xrfed.lighting.intensity", 0.5)
    data = codec.pack_records([(codec.ENV_PARAMS_CHANNEL_ID, good), (codec.ENV_PARAMS_CHANNEL_ID, b"\x01")])
    answer = _answer(player.respond(client_message(data)))
    assert answer.header.status == 500 and "environment parameter" in answer.header.message
    assert player.record.parameters == {} and player._pending_cmds == []
    assert player.record.commands == [1]  # the rejected STEP did not run


@pytest.mark.parametrize("raw, reason, match", [
    (b"\xff\xff\xff", "protobuf", "not a UnityMessageProto"),
    (client_message(command=7), "command", "command 7 is not STEP"),
    (client_message(actions={"XRAvatar_x?team=0": [([0.0, 0.0], [0])]}), "actions", "unknown behavior"),
    (client_message(actions={"XRAvatar_meta_quest_pro?team=0": [([0.0], [0])]}), "actions", "1 continuous"),
    (client_message(actions={"XRAvatar_meta_quest_pro?team=0": [([0.0, 0.0], [3])]}), "actions", "outside"),
    (client_message(actions={"XRAvatar_meta_quest_pro?team=0": [([0.0, 0.0], [0])] * 2}), "actions", "1 agents"),
    (client_message(codec.pack_records([(codec.ANALYTICS_CHANNEL_ID, b"")] * 1025)), "framing", "1024 records"),
    (client_message(codec.ANALYTICS_CHANNEL_ID.bytes_le + struct.pack("<i", 2**31 - 1)), "framing", "overruns"),
])
def test_unusable_client_messages_are_answered_with_status_500(raw, reason, match):
    player = make_player()
    answer = _answer(player.respond(raw))
    assert answer.header.status == 500 and match in answer.header.message
    assert player.stats.rejected == {reason: 1}
    assert _answer(player.respond(client_message())).header.status == 200  # the next good message is served


def test_step_before_the_first_reset_is_refused():
    player = StandInPlayer(SyntheticBackend(), PlayerConfig())
    answer = _answer(player.respond(client_message(command=0)))
    assert answer.header.status == 500 and "STEP before the first RESET" in answer.header.message


def test_good_messages_of_every_channel_are_accepted():
    engine, params = EngineConfigurationChannel(), EnvironmentParametersChannel()
    engine.set_configuration_parameters(width=84, height=84, quality_level=1, time_scale=20.0, target_frame_rate=60,
                                        capture_frame_rate=30)
    params.set_float_parameter("xrfed.lighting.intensity@lab", 0.5)
    params.set_uniform_sampler_parameters("a", 0.0, 1.0, 7)
    params.set_gaussian_sampler_parameters("b", 0.0, 1.0, 7)
    params.set_multirangeuniform_sampler_parameters("c", [(0.0, 1.0), (2.0, 3.0)], 7)
    records = [(engine.channel_id, bytes(m)) for m in engine.message_queue]
    records += [(params.channel_id, bytes(m)) for m in params.message_queue]
    records += [(codec.XRFED_CHANNEL_ID, codec.encode_message(m)) for m in (
        codec.make_message("reset", seed=5), codec.make_message("set_modality", device_id="user0-meta_quest_pro",
                                                                modality="gaze", enabled=False),
        codec.make_message("show_prediction", device_id="user1-ray_ban_meta", task="speech_command", label="stop",
                           confidence=0.9))]
    player = make_player()
    answer = _answer(player.respond(client_message(codec.pack_records(records),
                                                   actions={BEHAVIOR: [([0.5, -1.0], [2])]})))
    assert answer.header.status == 200 and player.stats.rejected == {}
    assert player.record.parameters == {"xrfed.lighting.intensity@lab": 0.5, "a": None, "b": None, "c": None}
    assert len(player.record.engine_settings) == 5 and player.seed == 5
    assert player.backend._light == {"intensity": 0.5}
    assert "gaze" in player.backend._disabled["user0-meta_quest_pro"]
    assert player.record.actions[-1] == {BEHAVIOR: [([0.5, -1.0], [2], [0.5, -1.0, 2.0])]}


@pytest.mark.parametrize("payload, match", [
    (b"\xff\xff\xff\x7fx", "key length 2147483647"),
    (codec._string("k") + struct.pack("<iiii", 1, 0, 2, 2**31 - 1), "intervals count 2147483647 does not fit"),
    (codec._string("k") + struct.pack("<iiiff", 1, 0, 0, 2.0, 1.0), "min 2.0 > max 1.0"),
    (codec._string("k") + struct.pack("<ii", 1, 0) + struct.pack("<i", 9), "unknown sampler type 9"),
    (codec._string("k") + struct.pack("<if", 0, 1.0) + b"\x00", "1 unexpected bytes"),
    (struct.pack("<i", 2) + b"\xe9\xe9", "not ASCII"),
])
def test_env_parameter_decoder_checks_lengths_before_allocating(payload, match):
    tracemalloc.start()
    try:
        with pytest.raises(UnityProtocolError, match=match):
            codec.decode_env_parameter(payload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024  # a 2**31 length or count allocates nothing


def test_deep_json_is_refused_before_it_recurses():
    with pytest.raises(UnityProtocolError, match="nested deeper than 32 levels"):
        codec.decode_message(b'{"v":1,"type":"load_scenario","scenario":' + b'{"a":' * 40 + b"1" + b"}" * 41)
    with pytest.raises(UnityProtocolError, match="nested deeper"):
        codec.decode_message(b"[" * 100_000)
    with pytest.raises(UnityProtocolError, match="at most 1048576"):
        codec.decode_message(b" " * (codec.MAX_MESSAGE_BYTES + 1))


def test_what_the_player_records_stays_bounded():
    from bridge.unity.player import RECORD_BYTES, RECORD_LIMIT

    player = make_player()
    blob = codec.pack_records([(uuid.UUID(int=1), bytes(300_000))])
    for _ in range(8):
        player.respond(client_message(blob))
    assert sum(map(len, player.record.side_channel_bytes)) <= RECORD_BYTES
    for _ in range(RECORD_LIMIT + 5):
        player.respond(client_message(command=7))
    assert player.stats.rejected == {"command": RECORD_LIMIT + 5} and len(player.record.commands) <= RECORD_LIMIT


# -- defect 2: the ML-Agents link listened on / talked to every interface ---------------------------------------------
def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # TEST-NET: no packet is sent for a UDP connect
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_unity_backend_grpc_server_binds_loopback_only():
    """Regression (issue 14): mlagents-envs binds its gRPC server (no TLS) on [::], so anyone on the network could
    drive the scene. UnityBackend now binds 127.0.0.1 unless allow_remote=True."""
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    port = free_port()
    player = StandInPlayer(SyntheticBackend(SyntheticConfig(render_size=(4, 3))),
                           PlayerConfig(port=port, connect_timeout_s=20)).start()
    backend = UnityBackend(base_port=port, timeout_wait_s=10)
    try:
        backend.reset()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=2).close()
    finally:
        backend.close()
        player.stop(2.0)


def test_remote_hosts_need_allow_remote_in_python(caplog):
    """Regression (issue 14): the player and the backend took any host silently; a non-loopback one now needs
    allow_remote=True and logs a warning."""
    assert PlayerConfig().host == "127.0.0.1" and UnityConfig().host == "127.0.0.1"
    with pytest.raises(BackendError, match="not a loopback address.*allow_remote=True"):
        PlayerConfig(host="192.0.2.7")
    with pytest.raises(BackendError, match="not a loopback address"):
        UnityConfig(host="0.0.0.0")
    with pytest.raises(BackendError, match="not a host name"):
        PlayerConfig(host="evil/path")
    assert PlayerConfig(host="::1").host == "::1" and PlayerConfig(host="localhost").host == "localhost"
    assert PlayerConfig(host="192.0.2.7", allow_remote=True).host == "192.0.2.7"
    backend = UnityBackend(base_port=free_port(), timeout_wait_s=1, host="0.0.0.0", allow_remote=True)
    with caplog.at_level(logging.WARNING, logger="xrfed.unity"), pytest.raises(XrfedError):
        backend.reset()  # nothing answers; the warning comes first
    backend.close()
    assert "without TLS or authentication" in caplog.text


def test_cli_remote_host_needs_allow_remote_and_warns(tmp_path, capsys):
    """Regression (issue 14): ``xrfed player`` had no --host; a non-loopback one is now a one-line error (exit 2)
    without --allow-remote, and a warning on stderr with it."""
    from bridge.cli import main

    assert main(["player", "--host", "0.0.0.0", "--synthetic", "meta_quest_3"], run=lambda a: 0) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-remote" in err[0]
    assert main(["player", "--host", "0.0.0.0", "--allow-remote", "--synthetic", "meta_quest_3",
                 "--write-launcher", str(tmp_path)]) == 0
    assert "warning: connecting to 0.0.0.0 without TLS" in capsys.readouterr().err
    script = (tmp_path / "XRFedPlayer.x86_64").read_text()
    assert "--host 0.0.0.0" in script and "--allow-remote" in script


# -- defect 3: flags were not range-checked ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--size", "-32"], ["--size", "0"], ["--seed", "-1"], ["--seed", "abc"], ["--port", "0"], ["--port", "70000"],
    ["--max-avatars", "-1"], ["--max-avatars", "0"], ["--decision-period", "-1"], ["--max-episode-steps", "-5"],
    ["--continuous-actions", "-1"], ["--discrete-branches", "0,3"], ["--discrete-branches", "a"],
    ["--connect-timeout", "-1"], ["--connect-timeout", "inf"], ["--connect-timeout", "nan"],
    ["--synthetic", "a/b"], ["--synthetic", "nosuch_profile"], ["nosuch_scenario"], ["--host", "a b"],
    ["--write-launcher", "/dev/null/x"], ["--export-scenario", "/"],
])
def test_every_player_flag_is_range_checked(argv, capsys):
    """Regression (issue 14): these were accepted (type=int or str) and failed later with a traceback, a hang or
    nonsense; the parser now refuses each with one line and exit 2."""
    from bridge.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["player", *argv], run=lambda a: 0)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("xrfed player: error: argument")


@pytest.mark.parametrize("argv", [["--mlagents-port", "0"], ["--mlagents-port", "x"], ["--size", "0"],
                                  ["-logFile", "/dev/null/x.log"]])
def test_launcher_flags_are_range_checked(argv):
    from bridge.unity.launcher import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_launcher_refuses_a_remote_host_in_one_line(capsys):
    from bridge.unity.launcher import main

    assert main(["--mlagents-port", "5004", "--host", "192.0.2.7", "--synthetic", "meta_quest_3"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_good_player_flags_still_parse():
    from bridge.cli import main

    seen = {}
    assert main(["player", "home", "--seed", "3", "--size", "84", "--max-avatars", "2", "--decision-period", "0",
                 "--discrete-branches", "3,2", "--connect-timeout", "0", "--host", "localhost", "--port", "5005"],
                run=lambda a: seen.update(vars(a)) or 0) == 0
    assert (seen["discrete_branches"], seen["port"], seen["connect_timeout"], seen["host"]) == ([3, 2], 5005, 0.0,
                                                                                                  "localhost")


# -- fuzzing -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surface", SURFACES, ids=lambda s: s.name)
def test_fuzz_surface_never_crashes(surface):
    result = assert_no_crash(surface, examples=200)
    assert result.rejected > 0 and result.accepted > 0  # both paths were exercised
