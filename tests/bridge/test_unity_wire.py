"""Schema drift guard: the player's hand-written protobuf bytes parse with mlagents-envs' generated classes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlagents_envs")

from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto  # noqa: E402

from bridge.unity.wire import encode_agent_info, encode_observation, encode_output_message, varint  # noqa: E402


def test_varint_matches_protobuf():
    assert varint(1) == b"\x01" and varint(300) == b"\xac\x02" and len(varint(-1)) == 10


def test_output_message_parses_field_by_field():
    floats = np.array([0.5, -1.25, np.inf], dtype=np.float32)
    obs = [encode_observation("depth_m", (1, 1, 3), floats, (1, 2, 2)),
           encode_observation("rgb", (3, 2, 2), b"\x89PNGfake", (1, 2, 2), channel_mapping=(0, 1, 2, -1))]
    info = encode_agent_info(7, obs, reward=1.5, done=True, max_step_reached=True, action_mask=(False, True),
                             group_id=2, group_reward=-0.5)
    raw = encode_output_message(agent_infos={"XRAvatar_x?team=0": [info]}, side_channel=b"\x01\x02")
    msg = UnityMessageProto.FromString(raw)
    assert msg.header.status == 200
    rl = msg.unity_output.rl_output
    assert rl.side_channel == b"\x01\x02"
    a = rl.agentInfos["XRAvatar_x?team=0"].value[0]
    assert (a.id, a.reward, a.done, a.max_step_reached, list(a.action_mask), a.group_id, a.group_reward) == (
        7, 1.5, True, True, [False, True], 2, -0.5)
    d, r = a.observations
    assert (list(d.shape), d.compression_type, list(d.float_data.data), list(d.dimension_properties), d.name) == (
        [1, 1, 3], 0, [0.5, -1.25, float("inf")], [1, 2, 2], "depth_m")
    assert (r.compression_type, r.compressed_data, list(r.compressed_channel_mapping)) == (1, b"\x89PNGfake",
                                                                                            [0, 1, 2, -1])


def test_close_message_is_header_only():
    msg = UnityMessageProto.FromString(encode_output_message(status=400))
    assert msg.header.status == 400 and not msg.HasField("unity_output")


def test_every_field_number_the_encoder_uses_exists_in_the_schema():
    from mlagents_envs.communicator_objects import agent_info_pb2, observation_pb2, unity_rl_output_pb2

    def numbers(cls):
        return {f.name: f.number for f in cls.DESCRIPTOR.fields}

    assert numbers(observation_pb2.ObservationProto) == {
        "shape": 1, "compression_type": 2, "compressed_data": 3, "float_data": 4, "compressed_channel_mapping": 5,
        "dimension_properties": 6, "observation_type": 7, "name": 8}
    assert numbers(agent_info_pb2.AgentInfoProto) == {
        "reward": 7, "done": 8, "max_step_reached": 9, "id": 10, "action_mask": 11, "observations": 13,
        "group_id": 14, "group_reward": 15}
    assert numbers(unity_rl_output_pb2.UnityRLOutputProto) == {"agentInfos": 2, "side_channel": 3}
