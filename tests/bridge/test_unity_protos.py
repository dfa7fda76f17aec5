"""mlagents-envs' messages under protobuf 5: the rewrite of protoc-3 modules (bridge/unity/protos.py)."""

from __future__ import annotations

import types

import pytest

pytest.importorskip("mlagents_envs")
from google.protobuf import descriptor_pb2  # noqa: E402

from bridge.unity import protos  # noqa: E402
from bridge.unity.errors import UnityProtocolError  # noqa: E402


def _protoc3_source(blob: bytes) -> str:
    """A module in the form protoc 3.x wrote (what mlagents-envs 1.1.0 ships), carrying ``blob``."""
    text = blob.decode("latin1")
    return ("import sys\n_b=sys.version_info[0]<3 and (lambda x:x) or (lambda x:x.encode('latin1'))\n"
            "from google.protobuf import descriptor as _descriptor\n"
            "from google.protobuf import reflection as _reflection\n"
            f"DESCRIPTOR = _descriptor.FileDescriptor(\n  name='t.proto',\n  package='xrfed_test',\n"
            f"  syntax='proto3',\n  serialized_pb=_b({text!r})\n)\n"
            "_M = _descriptor.Descriptor(name='M', full_name='xrfed_test.M', fields=[])  # never reached\n")


def _map_file() -> bytes:
    """``message Holder { map<string, Item> items = 1; } message Item { repeated int32 v = 1; }``."""
    f = descriptor_pb2.FileDescriptorProto(name="xrfed_test_protos.proto", package="xrfed_test_protos",
                                           syntax="proto3")
    item = f.message_type.add(name="Item")
    item.field.add(name="v", number=1, type=5, label=3)
    holder = f.message_type.add(name="Holder")
    entry = holder.nested_type.add(name="ItemsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=11, label=1, type_name=".xrfed_test_protos.Item")
    holder.field.add(name="items", number=1, type=11, label=3, type_name=".xrfed_test_protos.Holder.ItemsEntry")
    return f.SerializeToString()


def test_rewritten_protoc3_module_builds_map_fields_as_maps():
    src = protos.modernize_source(_protoc3_source(_map_file()), "xrfed_test_protos_pb2")
    mod = types.ModuleType("xrfed_test_protos_pb2")
    exec(compile(src, "xrfed_test_protos_pb2", "exec"), mod.__dict__)  # noqa: S102 -- our own generated text

    msg = mod.Holder()
    msg.items["left"].v.extend([1, 2])
    back = mod.Holder.FromString(msg.SerializeToString())

    assert list(back.items["left"].v) == [1, 2]
    assert mod.DESCRIPTOR.serialized_pb == _map_file()
    assert protos.modernize_source(src, "xrfed_test_protos_pb2") == src  # idempotent


def test_source_without_a_descriptor_is_refused_by_name():
    with pytest.raises(UnityProtocolError, match="not_generated: expected a protoc-generated module"):
        protos.modernize_source("x = 1\n", "not_generated")


def test_installed_mlagents_messages_run_under_this_protobuf():
    from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto

    protos.check()  # the set-up rewrote them; otherwise this names the fix
    out = UnityRLOutputProto()
    out.agentInfos["XRAvatar?team=0"].value.add(id=7, reward=0.5)
    back = UnityRLOutputProto.FromString(out.SerializeToString())

    assert back.agentInfos["XRAvatar?team=0"].value[0].id == 7
    assert protos.legacy_modules() == []
