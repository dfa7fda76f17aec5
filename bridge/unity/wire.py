"""Hand-written protobuf encoding of the player's outgoing ``UnityMessageProto`` (the big, per-step message).

Why by hand: on Python 3.11 protobuf 3.20.3 runs in pure Python, and filling a repeated float field costs ~1 us per
value -- 28 ms for one 84x84x3 float image. Packed floats are just ``tobytes()`` of a little-endian float32 array,
so the player writes the bytes itself and gRPC sends them as they are. Field numbers are those of mlagents-envs'
``communicator_objects`` (identical in 0.28.0 and 1.1.0); ``tests/bridge/test_unity_wire.py`` parses the output
with the real generated classes, which is the schema drift guard.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["varint", "encode_observation", "encode_agent_info", "encode_output_message", "STATUS_OK",
           "STATUS_CLOSE", "STATUS_REJECTED", "COMPRESSION_NONE", "COMPRESSION_PNG"]

STATUS_OK = 200
STATUS_CLOSE = 400
#: the stand-in player refused the client's last message; ``header.message`` says why, the session goes on
STATUS_REJECTED = 500
COMPRESSION_NONE = 0
COMPRESSION_PNG = 1
_VARINT, _FIXED32, _LEN = 0, 5, 2


def varint(n: int) -> bytes:
    """Base-128 varint; negative int32 values take ten bytes, as protobuf encodes them."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def _len(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + varint(len(payload)) + payload


def _packed_ints(field: int, values: Sequence[int]) -> bytes:
    return _len(field, b"".join(varint(int(v)) for v in values)) if len(values) else b""


def _int(field: int, v: int) -> bytes:
    return _key(field, _VARINT) + varint(int(v)) if v else b""


def _float(field: int, v: float) -> bytes:
    return _key(field, _FIXED32) + struct.pack("<f", float(v)) if v else b""


def encode_observation(name: str, shape: Sequence[int], data: np.ndarray | bytes, dimension_properties: Sequence[int],
                       *, channel_mapping: Sequence[int] = (), observation_type: int = 0) -> bytes:
    """One ``ObservationProto``: PNG bytes (compression PNG) or a float array (compression NONE, row-major)."""
    out = _packed_ints(1, shape)
    if isinstance(data, (bytes, bytearray)):
        out += _int(2, COMPRESSION_PNG) + _len(3, bytes(data))
    else:
        floats = np.ascontiguousarray(data, dtype="<f4").reshape(-1)
        out += _len(4, _len(1, floats.tobytes()) if floats.size else b"")
    out += _packed_ints(5, channel_mapping) + _packed_ints(6, dimension_properties) + _int(7, observation_type)
    return out + _len(8, name.encode("ascii"))


def encode_agent_info(agent_id: int, observations: Sequence[bytes], *, reward: float = 0.0, done: bool = False,
                      max_step_reached: bool = False, action_mask: Sequence[bool] = (), group_id: int = 0,
                      group_reward: float = 0.0) -> bytes:
    """One ``AgentInfoProto`` from already-encoded observations."""
    out = _float(7, reward) + _int(8, int(done)) + _int(9, int(max_step_reached)) + _int(10, agent_id)
    if len(action_mask):
        out += _len(11, bytes(int(bool(m)) for m in action_mask))
    for o in observations:
        out += _len(13, o)
    return out + _int(14, group_id) + _float(15, group_reward)


def encode_output_message(*, status: int = STATUS_OK, agent_infos: Mapping[str, Sequence[bytes]] | None = None,
                          side_channel: bytes = b"", init_output: bytes | None = None,
                          message: str = "") -> bytes:
    """A whole ``UnityMessageProto``: header, and ``unity_output`` with ``rl_output`` (agentInfos map + side
    channel) and optionally a serialized ``UnityRLInitializationOutputProto`` (brain parameters, handshake)."""
    header = _int(1, status) + (_len(2, message.encode("utf-8", "backslashreplace")) if message else b"")
    out = _len(1, header)
    if agent_infos is None and init_output is None and not side_channel:
        return out
    rl = b""
    for behavior, infos in (agent_infos or {}).items():
        value = b"".join(_len(1, i) for i in infos)
        rl += _len(2, _len(1, behavior.encode("utf-8")) + _len(2, value))
    if side_channel:
        rl += _len(3, side_channel)
    unity_output = _len(1, rl) if (agent_infos is not None or side_channel) else b""
    if init_output is not None:
        unity_output += _len(2, init_output)
    return out + _len(2, unity_output)
