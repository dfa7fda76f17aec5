"""The embedded scene's render path: the render process, view-frustum culling and the benchmark's bare replay all
leave the images bit-identical; a dead render process is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.embedded.backend import EmbeddedBackend
from bridge.embedded.bench import bare_render
from bridge.errors import BackendError, ScenarioError
from bridge.scenario import load_scenario, parse_scenario

STEPS = 12


def _frames(backend: EmbeddedBackend, steps: int) -> list[dict]:
    out = [backend.reset(seed=5)]
    out += [backend.step() for _ in range(steps)]
    return out


def _same(a, b) -> None:
    assert a.keys() == b.keys()
    for dev in a:
        fa, fb = a[dev], b[dev]
        for attr in ("rgb", "depth_m", "segmentation"):
            x, y = getattr(fa, attr), getattr(fb, attr)
            assert (x is None) == (y is None), (dev, attr)
            if x is not None:
                np.testing.assert_array_equal(x, y, err_msg=f"{dev} {attr}")
        assert fa.labels == fb.labels
        np.testing.assert_array_equal(fa.audio.samples if fa.audio else 0, fb.audio.samples if fb.audio else 0)


def test_render_process_matches_in_process_rendering():
    """The default scene (3 rooms, hands, lighting) through the child process and in this process: same frames."""
    kw = dict(seed=5, render_size=(48, 48), max_avatars=4, segmentation=True)
    child = EmbeddedBackend("default", render_process=True, **kw)
    here = EmbeddedBackend("default", render_process=False, **kw)
    try:
        a, b = _frames(child, STEPS), _frames(here, STEPS)
        assert child.render_process and not here.render_process
        for fa, fb in zip(a, b, strict=True):
            _same(fa, fb)
        assert child.cull_stats == here.cull_stats and child.cull_stats[0] > 0
    finally:
        child.close()
        here.close()


def test_culling_changes_no_pixel():
    """Geoms outside the frustum are left out, and every image is the same as with culling off."""
    kw = dict(seed=5, render_size=(48, 48), max_avatars=4, segmentation=True, render_process=False)
    on = EmbeddedBackend("default", **kw)
    off = EmbeddedBackend(load_scenario("default").with_render(cull=False), **kw)
    try:
        for fa, fb in zip(_frames(on, STEPS), _frames(off, STEPS), strict=True):
            _same(fa, fb)
        culled, kept = on.cull_stats
        assert culled > 0.3 * (culled + kept)  # an egocentric camera in three rooms sees a fraction of the scene
        assert off.cull_stats == (0, 0)
    finally:
        on.close()
        off.close()


def test_bench_bare_loop_renders_the_very_same_images():
    """``xrfed bench sim`` compares against a bare MuJoCo loop; it must draw what our step drew."""
    env = EmbeddedBackend("default", seed=5, render_size=(48, 48), max_avatars=4, render_process=False)
    try:
        env.reset(seed=5)
        drew_hands = False
        for _ in range(STEPS):
            env.step()
            ours = [env._draw(v) for v in env.last_views]  # our raw images (before exposure)
            bare = bare_render(env, hands=True)
            drew_hands |= any(v.capsules for v in env.last_views)
            for o, b in zip(ours, bare, strict=True):
                np.testing.assert_array_equal(o["rgb"], b["rgb"])
                np.testing.assert_array_equal(o["depth"], b["depth"])
        assert drew_hands  # the default scene's scripts raise hands within the first steps
    finally:
        env.close()


def test_render_settings_are_validated(tiny_raw):
    tiny_raw["render"]["cull"] = "yes"
    with pytest.raises(ScenarioError, match=r"render\.cull.*true or false"):
        parse_scenario(tiny_raw)
    tiny_raw["render"]["cull"] = True
    tiny_raw["render"]["process"] = "sometimes"
    with pytest.raises(ScenarioError, match=r"render\.process.*auto, on, off"):
        parse_scenario(tiny_raw)


def test_a_dead_render_process_is_a_clear_error(tiny_raw):
    env = EmbeddedBackend(parse_scenario(tiny_raw), seed=0, render_process=True)
    try:
        env.reset(seed=0)
        env._rproc._proc.kill()
        env._rproc._proc.wait(10)
        with pytest.raises(BackendError, match="render process"):
            env.step()
    finally:
        env.close()
