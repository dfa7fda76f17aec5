"""Flower's deployment engine on one machine: a real SuperLink and one real SuperNode per device as local processes.

:class:`LocalFederation` starts ``flower-superlink --insecure`` (its Fleet, Control and Runtime APIs on one free
127.0.0.1 port) and one ``flower-supernode --insecure`` per device (``--node-config "device-id='...'"``), submits a
run with ``flwr run APP CONNECTION`` (a SuperLink connection written to its own ``FLWR_HOME/config.toml``), and
stops every process it started, in every path: each process leads its own process group (the SuperLink's ServerApp
and a SuperNode's ClientApp run in child processes), ``close`` terminates each group, waits, then kills what is
left. It is what the Flower tests and ``xrfed bench flower`` use; on real machines the same commands run with TLS.

Addresses are checked before use: a SuperLink that does not answer is a :class:`~federation.flower.records.
FlowerError` naming the address, not a SuperNode retrying forever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bridge.remote import parse_host_port, tcp_refusal

from .records import FlowerError

__all__ = ["LocalFederation", "check_superlink", "free_port", "CONNECTION"]

#: the SuperLink connection name LocalFederation writes into its FLWR_HOME/config.toml
CONNECTION = "xrfed-local"
_CONNECT_TIMEOUT_S = 3.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_superlink(address: str, *, timeout_s: float = _CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one line, when ``host:port`` does not accept a TCP connection."""
    hp = parse_host_port(address)
    if hp is None:
        raise FlowerError(f"SuperLink address {address!r}: expected host:port")
    reason = tcp_refusal(*hp, timeout_s)
    if reason is not None:
        raise FlowerError(f"cannot reach the SuperLink at {address!r}: {reason}")


def _tool(name: str) -> str:
    """A Flower console script of this interpreter's environment (falls back to PATH)."""
    cand = Path(sys.executable).with_name(name)
    found = str(cand) if cand.exists() else shutil.which(name)
    if found is None:
        raise FlowerError(f"{name} not found next to {sys.executable} nor on PATH: pip install 'xrfed[flower]'")
    return found


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    s = str(v)
    if "'" in s or "\n" in s:
        raise FlowerError(f"run config value {s!r}: quotes and newlines are not allowed")
    return f"'{s}'"


class LocalFederation:
    """A SuperLink and SuperNodes (one per entry of ``devices``) as local processes; a context manager.

    ``workdir`` holds FLWR_HOME and the processes' logs (``superlink.log``, ``supernode-<device>.log``)."""

    def __init__(self, devices: Sequence[str], workdir: str | Path, *, startup_timeout_s: float = 60.0):
        if not devices:
            raise FlowerError("a federation needs at least one device")
        self.devices = list(devices)
        self.workdir = Path(workdir)
        self.startup_timeout_s = float(startup_timeout_s)
        self.home = self.workdir / "flwr-home"
        self.superlink: subprocess.Popen[bytes] | None = None
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}
        self.fleet_address = self.control_address = ""
        self._logs: list[Any] = []
        self.state = "unopened"

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalFederation:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FLWR_HOME"] = str(self.home)
        # the SuperLink and SuperNodes start flower-superexec / flwr-serverapp / flwr-clientapp from PATH
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        return env

    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("wb")
        self._logs.append(log)
        # its own session: the process and the app processes it starts form one group that close() can end
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.workdir,
                                start_new_session=True)

    def start(self) -> None:
        if self.state != "unopened":
            raise FlowerError(f"the local federation is {self.state}; build a new one")
        self.state = "open"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            # flwr 1.42 serves the Fleet, Control and Runtime APIs over HTTP on one port
            port = free_port()
            self.fleet_address = self.control_address = f"127.0.0.1:{port}"
            (self.home / "config.toml").write_text(
                f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                f'address = "{self.control_address}"\ninsecure = true\n')
            # the app runs in this environment (xrfed is installed here): no per-run virtualenv
            self.superlink = self._spawn([_tool("flower-superlink"), "--insecure", "--host", "127.0.0.1",
                                          "--port", str(port), "--disable-runtime-dependency-installation"],
                                         "superlink.log")
            self._wait_port(self.fleet_address, self.superlink, "superlink.log")
            for d in self.devices:
                self.start_node(d)
        except BaseException:
            self.close()
            raise

    def start_node(self, device: str) -> None:
        """Start the SuperNode hosting ``device`` (its ClientApp reads ``device-id`` from the node config)."""
        check_superlink(self.fleet_address)
        self.nodes[device] = self._spawn([
            _tool("flower-supernode"), "--insecure", "--superlink", self.fleet_address,
            "--host", "127.0.0.1", "--port", str(free_port()), "--max-wait-time", "30",
            "--node-config", f"device-id='{device}'"], f"supernode-{device}.log")

    def _wait_port(self, address: str, proc: subprocess.Popen[bytes], log: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise FlowerError(f"the process behind {address} exited with status {proc.returncode}; see "
                                  f"{self.workdir / log}")
            try:
                check_superlink(address, timeout_s=0.5)
                return
            except FlowerError:
                if time.monotonic() > deadline:
                    raise FlowerError(f"nothing listens on {address} after {self.startup_timeout_s:g} s; see "
                                      f"{self.workdir / log}") from None
                time.sleep(0.1)

    def kill_node(self, device: str) -> None:
        """Kill the SuperNode of ``device`` and every process under it at once (SIGKILL: a device that dies)."""
        proc = self.nodes.pop(device)
        tree = _descendants([proc.pid])
        _kill_group(proc, signal.SIGKILL)
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(timeout=10)

    def log_text(self, name: str) -> str:
        p = self.workdir / name
        return p.read_text(errors="replace") if p.exists() else ""

    # -- runs ------------------------------------------------------------------------------------------------------
    def run(self, app_dir: str | Path, run_config: Mapping[str, Any] | None = None, *,
            timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``flwr run APP xrfed-local --stream`` with ``run_config`` overrides; returns the finished process (its
        output in ``stdout``). A non-zero exit or a timeout is a :class:`FlowerError` with the output's tail."""
        if self.state != "open":
            raise FlowerError(f"the local federation is {self.state}")
        check_superlink(self.control_address)
        cmd = [_tool("flwr"), "run", str(Path(app_dir).resolve()), CONNECTION, "--stream"]
        if run_config:
            cmd += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self._env(),
                                cwd=self.workdir, start_new_session=True, text=True)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            out, _ = proc.communicate()
            raise FlowerError(f"flwr run did not finish within {timeout_s:g} s; output tail: {out[-800:]}") from None
        failed = re.search(r"Exit Code: (\d+)", out)
        if proc.returncode != 0 or failed:
            code = failed.group(1) if failed else proc.returncode
            raise FlowerError(f"flwr run failed (exit code {code}); output tail: {out[-800:]}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, "")

    def close(self) -> None:
        """Stop every SuperNode, then the SuperLink (SIGTERM to each process group, SIGKILL after 5 s)."""
        if self.state == "closed":
            return
        self.state = "closed"
        procs = list(self.nodes.values()) + ([self.superlink] if self.superlink is not None else [])
        # Flower starts its SuperExec in a session of its own: collect every descendant while the tree is intact
        tree = _descendants([p.pid for p in procs])
        for p in procs:
            _kill_group(p, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(p, signal.SIGKILL)  # the group's children (a ClientApp, a ServerApp) too
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
                pass
        for pid in tree:  # whatever outlived its parent's shutdown (a detached SuperExec, an app process)
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.nodes.clear()
        for log in self._logs:
            log.close()


def _kill_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group ``proc`` leads (it was started with its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(roots: Sequence[int]) -> list[int]:
    """Every living descendant of the ``roots`` processes (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid ...
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    out: list[int] = []
    todo = list(roots)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.append(c)
                todo.append(c)
    return out
