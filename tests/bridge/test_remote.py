"""Addresses of remote services and the lines their failures are reported in (bridge/remote.py)."""

from __future__ import annotations

import socket

import pytest

from bridge.remote import parse_host_port, ray_address_problem, ray_failure_summary, tcp_refusal


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)),
    ("head-node.lab:1", ("head-node.lab", 1)),
    ("[::1]:9092", ("::1", 9092)),
    ("ray://10.0.0.2:10001", None),  # a scheme only where the caller allows it
])
def test_host_port_forms(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "6379", "host:", ":6379", "host:0", "host:65536", "host:123456",
                                  "ho st:1", "host\n:1", "-host:1", "host:+1"])
def test_malformed_host_port_is_none(text):
    assert parse_host_port(text) is None


def test_ray_addresses():
    assert ray_address_problem("auto") is None
    assert ray_address_problem("local") is None
    assert ray_address_problem("ray://10.0.0.2:10001") is None
    assert ray_address_problem("10.0.0.2:6379") is None
    assert ray_address_problem("10.0.0.2") == ("expected host:port, ray://host:port, 'auto' or 'local' (a port in "
                                               "1..65535)")


def test_tcp_refusal_names_the_reason_and_is_none_when_something_listens():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert tcp_refusal("127.0.0.1", port, 2.0) is None
    assert tcp_refusal("127.0.0.1", port, 2.0) == "Connection refused"  # closed now


def test_ray_failure_summary_names_the_wrapped_exception():
    class Wrapped(Exception):
        cause = ValueError("device 'a': bad phase\nTraceback ...")

    class InitFailed(Exception):
        actor_init_failed = True

    assert ray_failure_summary(Wrapped("ray text")) == "ValueError: device 'a': bad phase"
    assert ray_failure_summary(InitFailed("Traceback\n  File x\nKeyError: 'rgb'")) == "KeyError: 'rgb'"
    assert ray_failure_summary(RuntimeError()) == "RuntimeError"


def test_ray_address_refusal_names_the_form_or_the_reachability():
    from bridge.remote import ray_address_refusal

    assert ray_address_refusal("head-node") == ("Ray address 'head-node': expected host:port, ray://host:port, 'auto' "
                                                "or 'local' (a port in 1..65535)")
    assert ray_address_refusal("auto") is None
    assert ray_address_refusal("127.0.0.1:9", connect=False) is None
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        port = srv.getsockname()[1]
    assert ray_address_refusal(f"127.0.0.1:{port}", timeout_s=2.0) == (
        f"cannot reach a Ray cluster at '127.0.0.1:{port}': Connection refused")
