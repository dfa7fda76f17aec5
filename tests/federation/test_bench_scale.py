"""``xrfed bench scale`` at its smallest: the JSON's fields, and the fits computed from the measured points."""

import argparse
import json
import math

import pytest

from federation import bench_scale as bs


def parse(*argv):
    p = argparse.ArgumentParser()
    bs.add_bench_arguments(p)
    return p.parse_args(list(argv))


def test_loglog_fit_recovers_a_power_law_and_refuses_too_few_points():
    fit = bs.loglog_fit([2.0, 4.0, 8.0], [3.0 * 2**1.5, 3.0 * 4**1.5, 3.0 * 8**1.5])
    assert fit is not None
    assert fit["exponent"] == pytest.approx(1.5) and fit["coefficient"] == pytest.approx(3.0)
    assert bs.loglog_fit([8.0], [1.0]) is None
    assert bs.loglog_fit([8.0, 16.0], [1.0, 0.0]) is None  # log of zero


def test_bench_scale_smallest_run_writes_every_figure(tmp_path):
    out = tmp_path / "scale.json"
    args = parse("--json", str(out), "--devices", "3", "6", "--executors", "local", "--strategies", "fedavg",
                 "median", "--rounds", "1", "--width", "8", "--rank", "2", "--fit-from", "3", "--in-process")
    assert bs.run_scale_bench(args) == 0
    res = json.loads(out.read_text())
    assert "shared 2-core machine" in res["host"]["note"]
    assert "extrapolated" in res["extrapolation_note"] and res["extrapolated_to"] == 10_000
    assert {(p["strategy"], p["devices"]) for p in res["points"]} == {(s, n) for s in ("fedavg", "median")
                                                                      for n in (3, 6)}
    for p in res["points"]:
        (r,) = p["rounds"]
        assert r["participants"] == p["devices"] and r["wall_s"] > 0 and r["aggregation_s"] > 0
        assert r["uplink_bytes"] == p["devices"] * p["update_bytes"] == r["downlink_bytes"]
        assert r["driver_peak_rss_bytes"] >= p["driver_baseline_rss_bytes"] - r["driver_rss_growth_bytes"] > 0
        # the streaming aggregator holds no update, the median all of them
        assert r["updates_held_by_aggregator"] == (p["devices"] if p["strategy"] == "median" else 0)
    # the fit is the least-squares line through the points' logs (two points: the slope between them)
    series = res["series"]["local/fedavg"]
    fit = res["fits"]["local/fedavg"]["round_wall_s"]
    want = math.log(series["6"]["round_wall_s"] / series["3"]["round_wall_s"]) / math.log(2.0)
    assert fit["exponent"] == pytest.approx(want)
    pred = res["fits"]["local/fedavg"]["round_wall_s_at_10000_extrapolated"]
    assert pred == pytest.approx(fit["coefficient"] * 10_000 ** fit["exponent"])
    assert res["targets"]["local"]["round_time_exponent"] == pytest.approx(want)
    assert res["ray_over_local"] is None and res["targets"]["ray_over_local"] is None
    assert res["targets"]["local"]["driver_memory_target_applies"] is False  # its devices live in the driver
    assert out.with_suffix(".png").stat().st_size > 0


def test_bench_scale_flags_are_range_checked():
    with pytest.raises(SystemExit):
        parse("--devices", "1")
    with pytest.raises(SystemExit):
        parse("--ray-memory-fraction", "2")


def test_bench_scale_ray_points_host_several_devices_per_actor(tmp_path, ray_local):
    out = tmp_path / "scale.json"
    args = parse("--json", str(out), "--devices", "4", "--executors", "local", "ray", "--strategies", "fedavg",
                 "--rounds", "1", "--width", "8", "--rank", "2", "--devices-per-actor", "2", "--in-process")

    assert bs.run_scale_bench(args) == 0

    res = json.loads(out.read_text())
    ray_point = next(p for p in res["points"] if p["executor"] == "ray")
    assert ray_point["devices_per_actor"] == [2, 2] and len(ray_point["actors"]) == 2  # two processes, not four
    assert all(a["rss_bytes"] > 0 for a in ray_point["actors"])
    (r,) = ray_point["rounds"]
    assert r["participants"] == 4 and r["uplink_bytes"] == 4 * ray_point["update_bytes"]
    ratio = res["ray_over_local"]
    assert ratio["devices"] == 4 and ratio["ratio"] == pytest.approx(
        res["series"]["ray/fedavg"]["4"]["round_wall_s"] / res["series"]["local/fedavg"]["4"]["round_wall_s"])
    assert res["targets"]["ray"]["driver_memory_target_applies"] is True
