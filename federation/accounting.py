"""Communication accounting: bytes and device-side energy per link type (uplink, downlink, D2D).

A message's size is the exact byte size of its tensor payload (``numel * element_size`` summed), the quantity a
real transport would put on the air before headers. Energy is charged on the *device* ends of a message with
the profiles' J/bit figures (``bridge/data/devices.yaml``):

* uplink (device -> server): the sender's ``uplink_uj_per_bit``;
* downlink (server -> device): the receiver's ``uplink_uj_per_bit`` -- the same WAN radio, and the AAU
  anchors behind those figures were measured on downloads;
* D2D: the sender's and the receiver's ``d2d_uj_per_bit`` (both radios are busy).

The server is mains powered and not charged. Transfer time uses the profile's ``uplink_mbps``/``d2d_mbps``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from bridge.devices import DeviceProfile

from .messages import LinkRecord, LinkType

__all__ = ["SERVER", "tensor_nbytes", "common_nbytes", "transfer_time_s", "CommLedger", "WIRE_ELEMENT_BYTES"]

#: bytes per element of a common-space message on the wire (adapters are float32 on the device)
WIRE_ELEMENT_BYTES = 4

#: Name of the server endpoint in link records.
SERVER = "server"


def tensor_nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """Exact payload bytes of a tensor dict: sum of ``numel * element_size``."""
    return int(sum(t.numel() * t.element_size() for t in tensors.values()))


def common_nbytes(tensors: Mapping[str, torch.Tensor], rank_bounds: Mapping[str, int] | None = None, *,
                  elem_bytes: int = WIRE_ELEMENT_BYTES) -> int:
    """Bytes of a common-space message (see :mod:`federation.strategies`) as it would cross the air.

    A LoRA product ``dW`` [d, n] whose rank is known to be at most R (a sum of R rank-one terms: the devices it
    combines) travels as factors when that is smaller, ``min(d * n, R * (d + n))`` elements; without a bound it
    travels dense. Other tensors travel as they are. Elements are ``elem_bytes`` each (float32 on the wire,
    whatever precision the arithmetic used)."""
    from .aggregate import is_product_key

    total = 0
    for k, t in tensors.items():
        n = t.numel()
        if t.ndim == 2 and is_product_key(k) and rank_bounds is not None and k in rank_bounds:
            d, m = t.shape
            n = min(n, int(rank_bounds[k]) * (d + m))
        total += n
    return int(total * elem_bytes)


def transfer_time_s(nbytes: int, rate_mbps: float) -> float:
    """Seconds to move ``nbytes`` at ``rate_mbps`` megabits per second (no protocol overhead)."""
    return nbytes * 8 / (rate_mbps * 1e6)


class CommLedger:
    """Every message of a run, with totals by round, link type and device.

    ``profiles`` maps device id -> :class:`DeviceProfile` (the J/bit figures come from there).
    """

    def __init__(self, profiles: Mapping[str, DeviceProfile]):
        self.profiles = dict(profiles)
        self.records: list[LinkRecord] = []

    def _profile(self, device_id: str) -> DeviceProfile:
        try:
            return self.profiles[device_id]
        except KeyError:
            raise KeyError(f"no device profile for {device_id!r}; known: {sorted(self.profiles)}") from None

    def record(self, round_idx: int, link: LinkType, src: str, dst: str, nbytes: int) -> LinkRecord:
        """Log one message and return its record (energy computed from the endpoint profiles)."""
        link = LinkType(link)
        if link is LinkType.UPLINK:
            joules = self._profile(src).uplink_joules(nbytes)
        elif link is LinkType.DOWNLINK:
            joules = self._profile(dst).uplink_joules(nbytes)
        else:
            joules = self._profile(src).d2d_joules(nbytes) + self._profile(dst).d2d_joules(nbytes)
        rec = LinkRecord(round_idx, link, src, dst, int(nbytes), float(joules))
        self.records.append(rec)
        return rec

    def device_joules(self, rec: LinkRecord) -> dict[str, float]:
        """Split a record's energy between its device endpoints."""
        if rec.link is LinkType.UPLINK:
            return {rec.src: rec.joules}
        if rec.link is LinkType.DOWNLINK:
            return {rec.dst: rec.joules}
        return {rec.src: self._profile(rec.src).d2d_joules(rec.nbytes),
                rec.dst: self._profile(rec.dst).d2d_joules(rec.nbytes)}

    def round_totals(self, round_idx: int) -> dict[str, dict[str, float]]:
        """``{link: {"bytes": .., "joules": .., "messages": ..}}`` for one round (all three links present)."""
        out = {lt.value: {"bytes": 0.0, "joules": 0.0, "messages": 0.0} for lt in LinkType}
        for r in self.records:
            if r.round == round_idx:
                out[r.link.value]["bytes"] += r.nbytes
                out[r.link.value]["joules"] += r.joules
                out[r.link.value]["messages"] += 1
        return out

    def device_totals(self, round_idx: int | None = None) -> dict[str, dict[str, float]]:
        """Per device: bytes sent/received and comm energy (J), for one round or the whole run."""
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"bytes_sent": 0.0, "bytes_received": 0.0,
                                                                "comm_joules": 0.0})
        for r in self.records:
            if round_idx is not None and r.round != round_idx:
                continue
            if r.src != SERVER:
                out[r.src]["bytes_sent"] += r.nbytes
            if r.dst != SERVER:
                out[r.dst]["bytes_received"] += r.nbytes
            for dev, j in self.device_joules(r).items():
                out[dev]["comm_joules"] += j
        return dict(out)

    def drop_round(self, round_idx: int) -> None:
        """Forget a round's records (used when resuming re-runs a round that was interrupted)."""
        self.records = [r for r in self.records if r.round != round_idx]

    def to_rows(self) -> list[dict[str, object]]:
        return [{"round": r.round, "link": r.link.value, "src": r.src, "dst": r.dst, "nbytes": r.nbytes,
                 "joules": r.joules} for r in self.records]

    def load_rows(self, rows: list[dict[str, Any]]) -> None:
        self.records = [LinkRecord(int(r["round"]), LinkType(r["link"]), str(r["src"]), str(r["dst"]),
                                   int(r["nbytes"]), float(r["joules"])) for r in rows]
