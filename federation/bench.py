"""Round benchmark: LoRA vs full-model update bytes, round wall time per paradigm, aggregation time.

``xrfed bench round --json FILE`` measures, on the synthetic workload of :mod:`federation.synthetic` (so that the
numbers isolate the federation machinery from the model):

* ``lora_compression``: full-model update bytes / LoRA update bytes for a model whose adapted layers are
  ``--width`` x ``--width`` with rank ``--rank`` (target >= 20x);
* ``paradigms``: for 8 and 32 devices, mean wall time per round, bytes per link type per round and the mean
  cluster size of each paradigm; ``semi_uplink_reduction`` = centralized uplink bytes / semi-decentralized uplink
  bytes, to be compared with the mean cluster size (target: reduction >= mean cluster size);
* ``aggregation_ms``: time of each aggregator over 32 updates of the ``--width`` model.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

__all__ = ["add_bench_arguments", "run_round_bench", "measure"]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from bridge.cli import output_file
    from bridge.cliargs import int_range

    parser.add_argument("--json", metavar="FILE", default="bench_round.json", type=output_file(), help="where to write the figures")
    parser.add_argument("--devices", type=int_range(2, 4096), nargs="+", default=[8, 32], help="device counts to time")
    parser.add_argument("--rounds", type=int_range(1, 10_000), default=2, help="rounds timed per paradigm and device count")
    parser.add_argument("--local-steps", type=int_range(1, 100_000), default=2, help="local training steps per round")
    parser.add_argument("--width", type=int_range(1, 65_536), default=256, help="adapted layer width for the byte/aggregation figures")
    parser.add_argument("--rank", type=int_range(1, 1024), default=4, help="LoRA rank for the byte/aggregation figures")


def _grid_positions(n: int, spacing_m: float = 1.5, per_room: int = 4) -> dict[str, tuple[float, float, float]]:
    """Avatars in rooms of ``per_room`` (1.5 m apart), rooms 20 m apart: D2D clusters of ``per_room``."""
    return {f"d{i}": (20.0 * (i // per_room) + spacing_m * (i % per_room), 0.0, 1.6) for i in range(n)}


def measure(devices: list[int], rounds: int, local_steps: int, width: int, rank: int) -> dict[str, Any]:
    import torch

    from .accounting import tensor_nbytes
    from .client import LocalExecutor
    from .config import RoundsConfig
    from .messages import ClientUpdate
    from .rounds import RoundEngine
    from .strategies import make_strategy
    from .synthetic import SyntheticClient, full_model_bytes

    torch.set_num_threads(1)
    big = SyntheticClient("w", "meta_quest_3", modalities=("rgb", "audio"), rank=rank, hidden=width, in_dim=width)
    lora_b, full_b = tensor_nbytes(big.shared_state()), full_model_bytes(big)
    out: dict[str, Any] = {
        "host": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1},
        "model": {"width": width, "rank": rank, "modalities": 2, "lora_update_bytes": lora_b,
                  "full_model_update_bytes": full_b},
        "lora_compression": full_b / lora_b,
        "paradigms": {},
    }
    for n in devices:
        row: dict[str, Any] = {}
        for paradigm in ("centralized", "semi", "decentralized"):
            clients = [SyntheticClient(f"d{i}", "meta_quest_3", modalities=("rgb", "audio"), seed=i)
                       for i in range(n)]
            eng = RoundEngine(LocalExecutor(clients), make_strategy("fedavg"),
                              RoundsConfig(paradigm=paradigm, local_steps=local_steps, radio_range_m=5.0,
                                           d2d_rounds=2, gossip_steps=3), seed=0)
            eng.initial_sync()
            eng.run_round(0, positions_m=_grid_positions(n))  # warm-up (first-call allocations), not timed
            recs = [eng.run_round(r, positions_m=_grid_positions(n)) for r in range(1, rounds + 1)]
            row[paradigm] = {
                "round_wall_s": sum(r.wall_time_s for r in recs) / rounds,
                "bytes_per_round": {lt: sum(r.links[lt]["bytes"] for r in recs) / rounds
                                    for lt in ("uplink", "downlink", "d2d")},
                "mean_cluster_size": recs[-1].diagnostics.get("mean_cluster_size"),
            }
        row["semi_uplink_reduction"] = (row["centralized"]["bytes_per_round"]["uplink"]
                                        / row["semi"]["bytes_per_round"]["uplink"])
        row["semi_reduction_meets_cluster_size"] = (row["semi_uplink_reduction"]
                                                    >= row["semi"]["mean_cluster_size"] - 1e-9)
        out["paradigms"][str(n)] = row
    gen = torch.Generator().manual_seed(0)
    updates = []
    for _ in range(32):
        t = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in big.shared_state().items()}
        updates.append(t)
    agg_ms: dict[str, float] = {}
    for name, opts in (("fedavg", {}), ("exact_lora", {}), ("median", {}), ("trimmed_mean", {"trim": 3}),
                       ("krum", {"num_byzantine": 3})):
        s = make_strategy(name, **opts)
        # updates in the strategy's common space (products for exact_lora and the robust aggregators)
        contribs = [ClientUpdate(f"d{i}", 0, s.encode(t, big.lora_scale), 10 + i, ("rgb", "audio"),
                                 ("object_recognition",)) for i, t in enumerate(updates)]
        s.aggregate(contribs)  # warm-up
        t0 = time.perf_counter()
        s.aggregate(contribs)
        agg_ms[name] = (time.perf_counter() - t0) * 1e3
    out["aggregation_ms"] = {"updates": 32, **agg_ms}
    return out


def run_round_bench(args: argparse.Namespace) -> int:
    res = measure(list(args.devices), args.rounds, args.local_steps, args.width, args.rank)
    Path(args.json).write_text(json.dumps(res, indent=2))
    print(f"lora_compression: {res['lora_compression']:.1f}x  "
          f"({res['model']['full_model_update_bytes']} B full vs {res['model']['lora_update_bytes']} B LoRA)")
    for n, row in res["paradigms"].items():
        walls = ", ".join(f"{p} {row[p]['round_wall_s'] * 1e3:.0f} ms" for p in ("centralized", "semi", "decentralized"))
        print(f"{n} devices: {walls}; semi uplink reduction {row['semi_uplink_reduction']:.2f}x "
              f"(mean cluster size {row['semi']['mean_cluster_size']:.2f})")
    print("aggregation (32 updates): " + ", ".join(f"{k} {v:.1f} ms" for k, v in res["aggregation_ms"].items()
                                                   if k != "updates"))
    print(f"wrote {args.json}")
    return 0
