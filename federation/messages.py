"""Wire messages of a federated round, as plain dataclasses.

Tensor payloads are ``dict[str, torch.Tensor]`` keyed by parameter name (peft's adapter state-dict naming);
everything else is a small header. Accounting counts the payload's exact tensor bytes (header bytes are not
counted: they are a few dozen bytes against kilobytes of adapter tensors). Nothing here is pickled for transport:
checkpoints store payloads as safetensors and headers as JSON.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["LinkType", "TrainReport", "EvalReport", "ClientUpdate", "Broadcast", "LinkRecord"]


class LinkType(str, enum.Enum):
    """The three kinds of radio link of Fig. 3: device->server, server->device, device<->device."""

    UPLINK = "uplink"
    DOWNLINK = "downlink"
    D2D = "d2d"


@dataclass
class TrainReport:
    """What a device reports after local training (before its update is collected).

    ``compute_gflop`` is the work done, used to simulate on-device time (divide by the profile's sustained
    GFLOP/s) and compute energy (profile J/GFLOP); ``wall_time_s`` is what the host actually spent.
    """

    num_samples: int
    loss: float
    steps: int
    compute_gflop: float
    wall_time_s: float = 0.0
    #: the model as deployed on the device (base + shared and personal adapters), Table 6's storage footprint;
    #: None when the client does not know it (the round engine then counts the update's bytes)
    storage_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    """A device's evaluation: accuracy per task in [0, 1], mean loss, mean inference latency per sample (ms)."""

    accuracy: dict[str, float]
    loss: float
    latency_ms: float
    num_samples: int
    per_sample_loss: list[float] = field(default_factory=list)

    @property
    def mean_accuracy(self) -> float:
        return float(sum(self.accuracy.values()) / len(self.accuracy)) if self.accuracy else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_sample_loss")
        d["mean_accuracy"] = self.mean_accuracy
        return d


@dataclass
class ClientUpdate:
    """One device's shared adapter tensors for a round, plus what aggregation needs to know about it.

    ``modalities`` and ``tasks`` drive modality-/task-aware partial aggregation; ``ranks`` maps a LoRA A-key to
    the device's rank (heterogeneous ranks); ``lora_scale`` is alpha/r so products can be formed exactly.
    """

    device_id: str
    round: int
    tensors: dict[str, torch.Tensor]
    num_samples: int
    modalities: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    lora_scale: float = 1.0


@dataclass
class Broadcast:
    """What the server (or a consensus step) sends back to one device."""

    device_id: str
    round: int
    tensors: dict[str, torch.Tensor]


@dataclass(frozen=True)
class LinkRecord:
    """One message on one link: who sent it to whom, its payload bytes and the device-side energy (J)."""

    round: int
    link: LinkType
    src: str
    dst: str
    nbytes: int
    joules: float
