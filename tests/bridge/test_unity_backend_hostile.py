"""Hostile input to UnityBackend (issue 14): what a Unity scene -- or anything posing as one on the port -- sends.

A malformed answer is rejected with one line (frames-feeding paths) or counted and skipped (informational ones), never
an IndexError / TypeError / RuntimeError / AttributeError out of the backend, and the next step is served.

The regression tests run the real mlagents-envs client (UnityBackend) against a stand-in player over gRPC whose
answers a test rewrites (:class:`HostileScene`); the fuzz test uses :mod:`bridge.unity.fuzz`
(``unity.scene_messages``, an in-process communicator).
"""

from __future__ import annotations

import json
import socket
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("mlagents_envs")
pytest.importorskip("grpc")
pytest.importorskip("hypothesis")

from bridge.errors import BridgeError, XrfedError  # noqa: E402
from bridge.unity import codec  # noqa: E402
from bridge.unity.backend import MAX_OBSERVATION_VALUES, UnityBackend  # noqa: E402
from bridge.unity.errors import UnityProtocolError  # noqa: E402
from bridge.unity.player import PlayerConfig, StandInPlayer  # noqa: E402
from bridge.unity.synthetic import SyntheticBackend, SyntheticConfig  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CFG = SyntheticConfig(profiles=("meta_quest_pro", "ray_ban_meta"), render_size=(4, 3), audio_hz=1000)
DEVICES = ["user0-meta_quest_pro", "user1-ray_ban_meta"]
QUEST = "XRAvatar_meta_quest_pro?team=0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pb():
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    return UnityMessageProto


class HostileScene(StandInPlayer):
    """The stand-in player; its next answer is rewritten by ``edit(msg)`` (a ``UnityMessageProto``) when set."""

    edit: Callable[..., None] | None = None

    def respond(self, raw):
        out = super().respond(raw)
        edit, self.edit = self.edit, None
        if edit is None or not isinstance(out, bytes):
            return out
        msg = _pb().FromString(out)
        edit(msg)
        return bytes(msg.SerializeToString())


@pytest.fixture
def scene():
    port = free_port()
    player = HostileScene(SyntheticBackend(CFG), PlayerConfig(port=port, connect_timeout_s=20), seed=0).start()
    backend = UnityBackend(base_port=port, timeout_wait_s=20, seed=0)
    first = backend.reset()
    assert sorted(first) == DEVICES
    yield backend, player
    backend.close()
    player.stop(2.0)


def _observation(msg, name: str, behavior: str = QUEST):
    (agent,) = msg.unity_output.rl_output.agentInfos[behavior].value
    return next(o for o in agent.observations if o.name == name)


def _add_record(msg, channel, payload: bytes) -> None:
    rl = msg.unity_output.rl_output
    rl.side_channel = bytes(rl.side_channel) + codec.pack_records([(channel, payload)])


def _announce(msg, behavior: str = QUEST) -> None:
    """Brain parameters for ``behavior`` again: mlagents-envs then takes its spec from this answer's agent."""
    bp = msg.unity_output.rl_initialization_output.brain_parameters.add(brain_name=behavior, is_training=True)
    bp.action_spec.num_continuous_actions = 0


def _rejected_then_served(backend, player, edit, match: str, *, restore=None) -> UnityProtocolError:
    """The edited answer raises one line matching ``match``; the next (``restore``-edited) answer gives every frame."""
    player.edit = edit
    with pytest.raises(UnityProtocolError, match=match) as info:
        backend.step()
    text = str(info.value)
    assert "\n" not in text and len(text) <= 400, text
    player.edit = restore
    assert sorted(backend.step()) == DEVICES
    return info.value


# -- regression tests: each of these failed on the backend before issue 14 -------------------------------------
def test_hello_with_non_object_device_entries_is_rejected_in_one_line(scene):
    """Defect: a `hello` whose device entries were not objects (``[1, "x", null]``) passed the codec's top-level
    check and ended in ``TypeError: 'int' object is not subscriptable`` inside ``_drain_inbox``."""
    backend, player = scene
    hello = {"v": 1, "type": "hello", "scene": "s", "player": "p", "step_dt_s": 0.1, "devices": [1, "x", None]}
    _rejected_then_served(backend, player, lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, json.dumps(hello).encode()),
                          r"hello'?: devices\[0\] must be an object with device_id, user_id, profile, got int")
    assert [d.device_id for d in backend.devices] == DEVICES  # the rejected hello changed nothing


def _edit_frames(msg, key, value) -> None:
    """Set ``key`` of the scene's own first ``frames`` entry to ``value`` (key None: the entry becomes ``value``)."""
    rl = msg.unity_output.rl_output
    records = codec.unpack_records(rl.side_channel)
    for i, (cid, payload) in enumerate(records):
        obj = json.loads(payload)
        if cid == codec.XRFED_CHANNEL_ID and obj["type"] == "frames":
            if key is None:
                obj["frames"][0] = value
            else:
                obj["frames"][0][key] = value
            records[i] = (cid, json.dumps(obj).encode())
    rl.side_channel = codec.pack_records(records)


@pytest.mark.parametrize("key, value, match", [
    ("lighting", [1.0], r"frames\[0\]\.lighting: got \[1\.0\]; allowed 4 numbers"),
    ("sim_time_s", "soon", r"frames\[0\]\.sim_time_s: got 'soon'; allowed a number"),
    ("audio_channels", 7, r"device user0-meta_quest_pro: 300 audio values do not split into the 7 channels"),
    ("audio_channels", 0, r"frames\[0\]\.audio_channels: got 0; allowed an integer in \[1, 64\]"),
    (None, "user0-meta_quest_pro", r"frames\[0\] must be an object"),
])
def test_frames_entries_are_checked_to_their_nested_values(scene, key, value, match):
    """Defect: `frames` entries were used as they came: a 1-value lighting list gave IndexError in
    records_from_arrays, a string sim time ValueError in float(), 7 audio channels for 300 values ValueError in
    reshape, a string entry TypeError (0 channels was refused by luck: as "no audio metadata")."""
    backend, player = scene
    _rejected_then_served(backend, player, lambda m: _edit_frames(m, key, value), match)


def test_frames_entry_of_an_unsafe_device_id_is_rejected(scene):
    """A device id with '/' (a path in recordings) was silently kept as frame metadata; now the message is refused."""
    backend, player = scene
    frames = {"v": 1, "type": "frames", "frames": [{"device_id": "a/b", "step": 1, "sim_time_s": 0.1}]}
    _rejected_then_served(backend, player, lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, json.dumps(frames).encode()),
                          r"frames\[0\]\.device_id: got 'a/b'")


def test_unknown_message_type_is_counted_and_skipped(scene):
    """Defect: a message type this side does not know (a newer scene's) made step() raise from inside
    mlagents-envs' side-channel loop; it is now counted and skipped, and the step's frames arrive."""
    backend, player = scene
    player.edit = lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, b'{"type":"teleport","v":1}')
    assert sorted(backend.step()) == DEVICES
    assert backend.stats.rejected == {"unknown_message": 1}


def test_dropped_observation_is_rejected_not_index_error(scene):
    """Defect: an agent with fewer observations than its behavior's spec raised IndexError in mlagents-envs'
    steps_from_proto."""
    backend, player = scene

    def drop(msg):
        (agent,) = msg.unity_output.rl_output.agentInfos[QUEST].value
        del agent.observations[-1]

    _rejected_then_served(backend, player, drop, "observations; the behavior declared")


def test_declared_observation_shape_must_fit_the_xrfed_layout(scene):
    """Defect: a scene that declared 'present' with 3 values (consistently in spec and data) gave IndexError in
    observations_to_arrays (present[i] for i >= 3)."""
    backend, player = scene

    def short_present(msg):
        _announce(msg)
        o = _observation(msg, "present")
        o.shape[:] = [3]
        o.float_data.data[:] = [1.0, 1.0, 1.0]

    _rejected_then_served(backend, player, short_present, r"'present' has shape \[3\]; xrfed expects \[10\]",
                          restore=_announce)


def test_huge_declared_vector_size_is_rejected_before_allocating(scene):
    """Defect: a declared shape of [2**31 - 1] with a few values ended in ValueError (cannot reshape) out of
    mlagents-envs; a shape is now bounded by MAX_OBSERVATION_VALUES before anything is allocated."""
    backend, player = scene

    def huge(msg):
        _announce(msg)
        _observation(msg, "pose").shape[:] = [2**31 - 1]

    _rejected_then_served(backend, player, huge, rf"at most {MAX_OBSERVATION_VALUES} values", restore=_announce)


def test_huge_declared_image_is_rejected_before_decoding(scene):
    """Defect: an rgb observation declared [3, 65535, 65535] with a PNG saying the same size (and a zlib bomb
    for pixels) reached Pillow, which refused it with DecompressionBombError -- not a BridgeError."""
    backend, player = scene

    def bomb(msg):
        _announce(msg)
        o = _observation(msg, "rgb")
        o.shape[:] = [3, 65535, 65535]
        ihdr = b"IHDR" + struct.pack(">IIBBBBB", 65535, 65535, 8, 2, 0, 0, 0)
        idat = b"IDAT" + zlib.compress(b"\x00" * (1 << 20))
        o.compressed_data = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
                             + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat)))

    _rejected_then_served(backend, player, bomb, r"shape \[3, 65535, 65535\]; allowed", restore=_announce)


def test_nan_pose_is_rejected_in_one_line(scene):
    """Defect: a NaN in the head pose made mlagents-envs raise RuntimeError('The observations provided had NaN
    values.'), which no caller catches as a bridge error."""
    backend, player = scene

    def nan_pose(msg):
        _observation(msg, "pose").float_data.data[3] = float("nan")

    _rejected_then_served(backend, player, nan_pose, r"observation 'pose': NaN, inf or values beyond")


def test_truncated_png_is_rejected_not_attribute_error(scene):
    """Defect: an rgb PNG cut after its header made Pillow try every other image plugin on mlagents-envs' file
    object, which ended in ``AttributeError: 'OffsetBytesIO' object has no attribute 'readline'``."""
    backend, player = scene

    def truncate(msg):
        o = _observation(msg, "rgb")
        o.compressed_data = bytes(o.compressed_data)[:36]

    _rejected_then_served(backend, player, truncate, r"observation 'rgb': PNG image at byte 0 does not decode")


# -- compressed observations (issue 17): rgb and depth_m must be PNGs as docs/unity.md specifies ------------------
def test_uncompressed_depth_is_rejected_naming_the_sensor_and_the_spec(scene):
    backend, player = scene

    def floats(msg):
        o = _observation(msg, "depth_m")
        o.compression_type = 0
        o.ClearField("compressed_data")
        del o.compressed_channel_mapping[:]
        o.float_data.data.extend([1.0] * (2 * 3 * 4))

    _rejected_then_served(backend, player, floats, r"observation 'depth_m': compression type 0, channel mapping \[\]; "
                                                   r"xrfed expects PNG \(compression type 1\) with channel mapping "
                                                   r"\[0, 1, -1\]")
    assert backend.stats.refused == 1 and "'depth_m'" in backend.stats.last_refusal


def test_depth_with_a_grey_channel_mapping_is_rejected(scene):
    backend, player = scene

    def grey(msg):
        _observation(msg, "depth_m").compressed_channel_mapping[:] = [0, 0, 0]

    _rejected_then_served(backend, player, grey, r"'depth_m': compression type 1, channel mapping \[0, 0, 0\]")


def test_png_bytes_beyond_an_uncompressed_image_are_rejected_before_decoding(scene):
    backend, player = scene

    def padded(msg):
        o = _observation(msg, "rgb")
        o.compressed_data = bytes(o.compressed_data) + b"\x00" * (1 << 17)

    _rejected_then_served(backend, player, padded, r"observation 'rgb': \d+ bytes of PNG for 1 image\(s\) of 3 x 4; "
                                                   r"at most \d+")


def test_png_whose_pixels_do_not_decode_is_rejected_naming_the_sensor(scene):
    """The screen only opens PNGs (their chunks up to the pixel data); pixels that fail in mlagents-envs' decoder are
    located by a full decode and named."""
    backend, player = scene

    def corrupt(msg):
        o = _observation(msg, "depth_m")
        data = bytearray(o.compressed_data)
        idat = data.index(b"IDAT")
        length = struct.unpack(">I", data[idat - 4:idat])[0]
        body = b"\xff" * length  # not a zlib stream; the CRC is made right so only the pixel data is wrong
        data[idat + 4:idat + 8 + length] = body + struct.pack(">I", zlib.crc32(b"IDAT" + body))
        o.compressed_data = bytes(data)

    _rejected_then_served(backend, player, corrupt, r"agent \d+ of XRAvatar_meta_quest_pro\?team=0: observation "
                                                    r"'depth_m': PNG image at byte 0 does not decode")
    assert backend.stats.refused == 1


def test_label_index_beyond_the_task_classes_is_rejected(scene):
    """Defect: a label observation of 99 gave IndexError in label_names (TASKS[task].classes[99])."""
    backend, player = scene
    player.edit = None

    def label(msg):
        _observation(msg, "labels").float_data.data[0] = 99.0

    _rejected_then_served(backend, player, label, r"label 99 of task .*; allowed -1 \(none\) or a class index")


def test_json_integer_beyond_python_limits_is_rejected_in_one_line(scene):
    """Defect: a 5000-digit integer in an xrfed message raised ValueError ('Exceeds the limit (4300 digits)') out
    of json.loads, which decode_message did not translate."""
    backend, player = scene
    payload = b'{"frames":[{"device_id":"user0-meta_quest_pro","sim_time_s":0.1,"step":' + b"7" * 5000 + b'}],' \
              b'"type":"frames","v":1}'
    _rejected_then_served(backend, player, lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, payload),
                          "xrfed message is not usable JSON: Exceeds the limit")


def test_overlay_acknowledging_an_absurd_sent_ns_is_counted_and_skipped(scene):
    """Defect: an overlay_shown with a 401-digit sent_ns made the round-trip time ``(now - sent_ns) / 1e6`` raise
    OverflowError; only acknowledgements of predictions this backend sent are timed now."""
    backend, player = scene
    payload = (b'{"device_id":"user0-meta_quest_pro","frame_step":null,"label":"stop","scene_step":1,"sent_ns":'
               + b"9" * 401 + b',"task":"speech_command","type":"overlay_shown","v":1}')
    player.edit = lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, payload)
    assert sorted(backend.step()) == DEVICES
    assert backend.stats.rejected == {"overlay_shown": 1} and backend.stats.prediction_rtt_ms == []
    forged = json.loads(payload.replace(b"9" * 401, b"12345"))
    player.edit = lambda m: _add_record(m, codec.XRFED_CHANNEL_ID, json.dumps(forged).encode())
    backend.step()
    assert backend.stats.rejected == {"overlay_shown": 2} and backend.stats.prediction_rtt_ms == []


@pytest.mark.parametrize("payload", [codec.encode_stat("k", 1.0, 7), b"\x02\x00\x00\x00\xff\xfe" + b"\x00" * 8,
                                     codec.encode_stat("k", float("nan"))])
def test_malformed_stat_is_counted_and_skipped(scene, payload):
    """Defect: mlagents-envs' StatsSideChannel raised ValueError (aggregation 7) or UnicodeDecodeError (a key that is
    not ASCII) out of step(); a NaN stat went into scene_stats."""
    backend, player = scene
    player.edit = lambda m: _add_record(m, codec.STATS_CHANNEL_ID, payload)
    assert sorted(backend.step()) == DEVICES
    assert backend.stats.rejected == {"stat": 1} and "k" not in backend.stats.scene_stats


def test_records_on_python_only_channels_are_counted_and_skipped(scene):
    """Defect: a scene writing on the environment-parameters channel made mlagents-envs raise from inside its
    side-channel loop after the steps were already replaced, losing the step's xrfed messages."""
    backend, player = scene
    player.edit = lambda m: _add_record(m, codec.ENV_PARAMS_CHANNEL_ID, codec.encode_float_parameter("x", 1.0))
    assert sorted(backend.step()) == DEVICES
    assert backend.stats.rejected == {"python_only_channel": 1}


def test_hostile_handshake_version_is_rejected_and_the_port_freed():
    """Defect: a communication version that is not 'X.Y.Z' made StrictVersion raise ValueError out of the
    UnityEnvironment constructor, leaving its gRPC server listening."""
    port = free_port()
    player = StandInPlayer(SyntheticBackend(CFG), PlayerConfig(port=port, connect_timeout_s=20,
                                                               communication_version="one\x1b[2J"), seed=0).start()
    backend = UnityBackend(base_port=port, timeout_wait_s=20)
    try:
        with pytest.raises(UnityProtocolError, match=r"communication version 'one\?\[2J' is not 'MAJOR.MINOR"):
            backend.reset()
    finally:
        backend.close()
        player.stop(2.0)
    with pytest.raises(ConnectionRefusedError):  # the server was closed, not left listening
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- good input and bounded state ----------------------------------------------------------------------------
def test_in_process_scene_gives_the_served_backends_frames():
    """The fuzz surface's in-process communicator is faithful: frames equal the player's backend's."""
    from bridge.arrays import frame_to_arrays
    from bridge.unity.fuzz import InProcessCommunicator

    player = StandInPlayer(SyntheticBackend(CFG), PlayerConfig(), seed=3)
    comm = InProcessCommunicator(player)
    ref = SyntheticBackend(CFG)
    with UnityBackend(communicator=lambda *_: comm, seed=3) as backend:
        got, want = backend.reset(seed=3), ref.reset(seed=3)
        for _ in range(2):
            got, want = backend.step(), ref.step()
        assert sorted(got) == sorted(want) == DEVICES
        for k in want:
            a, b = frame_to_arrays(got[k]), frame_to_arrays(want[k])
            assert a["present"] == b["present"] and a["labels"] == b["labels"]
            for key in a.keys() - {"present", "labels"}:
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)
        assert backend.stats.rejected == {}


def test_scene_stats_and_metadata_stay_bounded(scene):
    """Stat keys beyond MAX_SCENE_STATS and frame metadata of devices not in the hello are not kept."""
    from bridge.unity.backend import MAX_SCENE_STATS

    backend, player = scene

    def many_stats(msg):
        for i in range(MAX_SCENE_STATS + 5):
            _add_record(msg, codec.STATS_CHANNEL_ID, codec.encode_stat(f"s{i}", 1.0))
        frames = {"v": 1, "type": "frames", "frames": [{"device_id": f"ghost{i}", "step": 1, "sim_time_s": 0.1}
                                                       for i in range(50)]}
        _add_record(msg, codec.XRFED_CHANNEL_ID, json.dumps(frames).encode())

    player.edit = many_stats
    backend.step()
    assert len(backend.stats.scene_stats) == MAX_SCENE_STATS and backend.stats.rejected == {"stat_keys": 5}
    assert set(backend._meta) <= set(DEVICES)


def test_check_scene_message_accepts_what_the_player_sends():
    hello = codec.load_message(codec.golden_messages()["hello"])
    assert codec.check_scene_message(hello)["devices"][0]["device_id"] == "ava-apple_vision_pro"
    frames = codec.check_scene_message(codec.load_message(codec.golden_messages()["frames"]))
    assert frames["frames"][0]["lighting"] == [1.0, 201.99999, 5500.0, 1.0]
    with pytest.raises(UnityProtocolError, match="goes from Python to the scene"):
        codec.check_scene_message(codec.load_message(codec.golden_messages()["reset"]))


def test_errors_are_bridge_errors():
    assert issubclass(UnityProtocolError, BridgeError) and issubclass(UnityProtocolError, XrfedError)


def test_fuzz_surface_never_crashes():
    from bridge.fuzzing import assert_no_crash
    from bridge.unity.fuzz import SURFACES

    (surface,) = [s for s in SURFACES if s.name == "unity.scene_messages"]
    assert_no_crash(surface, examples=200)
