"""xrfed.federation: federated rounds over the three coordination paradigms of the seed paper's Fig. 3.

select -> local train (per-device agents) -> adapter updates -> topology (server / clusters + D2D / gossip)
-> aggregation (LoRA-aware, modality-/task-aware, robust, DP) -> broadcast, with every byte and joule accounted.

The maths are pure functions (:mod:`.aggregate`, :mod:`.topology`, :mod:`.privacy`, :mod:`.continual`,
:mod:`.stats`); strategies (:mod:`.strategies`, DP as a wrapper) and paradigms (:mod:`.paradigms`) are registered
classes; the round engine (:mod:`.rounds`) and the experiment runner (:mod:`.runner`) build on them. The runner,
report and Ray executor are imported from their modules (they pull matplotlib / Ray).
"""

from __future__ import annotations

from .accounting import SERVER, CommLedger, tensor_nbytes
from .client import Client, DeviceLost, Executor, LocalExecutor, RayExecutor, connect_ray, make_executor
from .config import (
    AggregatorConfig,
    ContinualConfig,
    DeviceConfig,
    DPConfig,
    EvalConfig,
    ExperimentConfig,
    RayConfig,
    RoundsConfig,
    load_config,
)
from .errors import (
    AggregationError,
    CheckpointError,
    ConfigError,
    ExecutorError,
    FederationError,
    TopologyError,
    UnknownNameError,
)
from .messages import Broadcast, ClientUpdate, EvalReport, LinkRecord, LinkType, TrainReport
from .paradigms import Paradigm, make_paradigm, paradigm_names, register_paradigm
from .privacy import RdpAccountant
from .rounds import RoundEngine, RoundRecord
from .strategies import (
    AggregateResult,
    DifferentialPrivacy,
    Strategy,
    make_strategy,
    register_strategy,
    strategy_names,
)

__all__ = [
    "AggregateResult", "AggregationError", "AggregatorConfig", "Broadcast", "CheckpointError", "Client",
    "ClientUpdate", "CommLedger", "ConfigError", "ContinualConfig", "DPConfig", "DeviceConfig", "DeviceLost",
    "DifferentialPrivacy", "EvalConfig", "EvalReport", "Paradigm", "make_paradigm", "paradigm_names",
    "register_paradigm",
    "Executor", "ExecutorError", "ExperimentConfig", "FederationError", "LinkRecord", "LinkType", "LocalExecutor",
    "RayConfig", "RayExecutor", "RdpAccountant", "RoundEngine", "RoundRecord", "RoundsConfig", "SERVER", "Strategy",
    "TopologyError", "TrainReport", "UnknownNameError", "connect_ray", "load_config", "make_executor", "make_strategy",
    "register_strategy", "strategy_names", "tensor_nbytes",
]
