import pytest

from federation.client import LocalExecutor, make_executor
from federation.config import RoundsConfig
from federation.errors import UnknownNameError
from federation.rounds import RoundEngine
from federation.strategies import make_strategy
from federation.synthetic import SyntheticClient


def factories(n=3):
    return {f"d{i}": (lambda i=i: SyntheticClient(f"d{i}", "meta_quest_3", seed=i)) for i in range(n)}


def accuracies(executor, rounds=2):
    eng = RoundEngine(executor, make_strategy("fedavg"), RoundsConfig(local_steps=3), seed=0)
    return [eng.run_round(r).mean("accuracy_global") for r in range(rounds)]


def test_make_executor_unknown_name_lists_known():
    with pytest.raises(UnknownNameError, match="unknown executor 'dask'; known: local, ray"):
        make_executor("dask", factories())


def test_local_executor_calls_in_order():
    ex = make_executor("local", factories(2))
    assert isinstance(ex, LocalExecutor) and ex.device_ids == ("d0", "d1")
    assert ex.info("d1")["modalities"] == ("rgb",)


@pytest.mark.slow
def test_ray_executor_matches_local():
    pytest.importorskip("ray")
    ray_ex = make_executor("ray", factories(), num_cpus_per_device=0.5)
    try:
        got = accuracies(ray_ex)
    finally:
        ray_ex.close()
    assert got == accuracies(make_executor("local", factories()))
