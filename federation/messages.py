"""Wire messages of a federated round, as plain dataclasses.

Tensor payloads are ``dict[str, torch.Tensor]`` keyed by parameter name (peft's adapter state-dict naming);
everything else is a small header. Accounting counts the payload's exact tensor bytes (header bytes are not
counted: they are a few dozen bytes against kilobytes of adapter tensors). Nothing here is pickled for transport:
checkpoints store payloads as safetensors and headers as JSON.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

# The device -> engine handoff types are the agents package's own (one report type per boundary).
from agents.reports import EvalReport, TrainReport

__all__ = ["LinkType", "TrainReport", "EvalReport", "ClientUpdate", "Broadcast", "LinkRecord"]


class LinkType(str, enum.Enum):
    """The three kinds of radio link of Fig. 3: device->server, server->device, device<->device."""

    UPLINK = "uplink"
    DOWNLINK = "downlink"
    D2D = "d2d"


@dataclass
class ClientUpdate:
    """One contribution to a round's aggregate: common-space tensors (see :mod:`federation.strategies`), their
    weight, and what partial aggregation needs to know about who sent them.

    ``device_id`` is the sender (a device, or a cluster's representative carrying its cluster's contribution);
    ``num_samples`` weights it; ``modalities`` and ``tasks`` drive modality-/task-aware partial aggregation.
    """

    device_id: str
    round: int
    tensors: dict[str, torch.Tensor]
    num_samples: int
    modalities: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()


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
