from __future__ import annotations

import argparse

import torch

from agents.config import make_config
from agents.live import LiveSession, render_tile
from agents.model import M3TModel
from bridge.backend import SetModality, ShowPrediction


def test_live_loop_sends_predictions_back_and_mutes(tiny_raw, write_scenario):
    from bridge.registry import make_backend

    torch.manual_seed(0)
    with make_backend("embedded", str(write_scenario(tiny_raw)), seed=0, audio=True) as env:
        sent = []
        step = env.step
        env.step = lambda cmds=(): (sent.append(tuple(cmds)), step(cmds))[1]  # type: ignore[method-assign]
        session = LiveSession(env, M3TModel(make_config("tiny")))
        dev = next(iter(session.agents))
        session.control(mute=(dev, "audio"))
        session.step()
        session.step()
    assert any(isinstance(c, ShowPrediction) and c.latency_ms and c.latency_ms > 0 for c in sent[0])
    assert SetModality(dev, "audio", False) in sent[0]
    st = session.state()["devices"][dev]
    assert "audio" not in st["present"] and st["audio_dbfs"] is None and st["prediction"]
    png = render_tile(session.frames[dev], session.predictions[dev])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_registers_pretrain_and_live():
    from agents.cli import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="cmd"))
    a = p.parse_args(["pretrain", "--preset", "tiny", "--steps", "5", "--out", "x"])
    assert (a.preset, a.steps, a.out, a.scenario) == ("tiny", 5, "x", None)  # None = the default scene
    c = p.parse_args(["pretrain", "--scenario", "home", "--scenario", "clinic"])
    assert c.scenario == ["home", "clinic"]
    b = p.parse_args(["live", "default", "--steps", "3", "--port", "0"])
    assert (b.scenario, b.steps, b.port) == ("default", 3, 0)
