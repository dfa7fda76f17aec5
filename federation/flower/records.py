"""What crosses between xrfed and Flower: tensors as Flower arrays, device facts as config records, and the errors.

Tensors cross as ``flwr.app.ArrayRecord`` (one ``Array`` per parameter name, numpy ``.npy`` bytes); nothing is
pickled. Every array that arrives is checked against the tensors the receiver expects -- its key set, and each
array's declared dtype and shape -- *before* its bytes are decoded, so a hostile or mismatched record is refused
with one line naming the key, never allocated.

Record and config keys used by xrfed's ClientApp and strategies (all prefixed ``xrfed.`` in config records):

* train/evaluate ``ConfigRecord`` ``"config"``: ``server-round``, ``xrfed.round`` (0-based), ``xrfed.phase``,
  ``xrfed.local-steps``, ``xrfed.seed`` (the device's training seed of the round), ``xrfed.install`` (load the
  arrays before training: False when the device still runs what it trained last round), and under client-level DP
  ``xrfed.dp-clip-norm``, ``xrfed.dp-noise-multiplier``, ``xrfed.dp-mode``, ``xrfed.lora-space``;
* ``ArrayRecord`` ``"arrays"``: the device's cut of the global model (its keys, ranks and dtypes) going down, its
  shared tensors (or, under DP, its clipped common-space release, float64) coming up;
* query reply: ``ConfigRecord`` ``"xrfed.device"`` (device id, profile, modalities, tasks, LoRA scale, personal)
  and ``ArrayRecord`` ``"arrays"`` (its starting shared tensors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import AggregationError, FederationError

__all__ = ["FlowerError", "to_array_record", "from_array_record", "check_arrays", "ARRAYS", "CONFIG", "DEVICE",
           "MAX_ARRAY_BYTES"]

#: record names inside a Message's RecordDict
ARRAYS, CONFIG, DEVICE = "arrays", "config", "xrfed.device"
#: the largest single array accepted from the wire (bytes); an adapter tensor of the tiny..base presets is < 8 MiB
MAX_ARRAY_BYTES = 256 * 2**20

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


class FlowerError(FederationError, RuntimeError):
    """Running xrfed on Flower failed: an unreachable SuperLink, a node that answered with an error, a process that
    did not start. The message names the address, node or device."""


def to_array_record(tensors: Mapping[str, torch.Tensor]) -> Any:
    """``{name: tensor}`` -> ``ArrayRecord`` (detached CPU copies; dtypes kept)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(t.detach().cpu().numpy()) for k, t in tensors.items()})


def check_arrays(record: Any, expected: Mapping[str, tuple[tuple[int, ...], str]], *, who: str,
                 exact: bool = True) -> None:
    """Refuse ``record`` unless its keys are ``expected``'s (a subset when ``exact`` is False) and every array has
    the expected shape and dtype (``expected[key] = (shape, dtype name)``). Reads only the arrays' headers."""
    keys = set(record.keys())
    unknown = sorted(keys - set(expected))
    if unknown:
        raise AggregationError(f"{who}: unexpected tensor {unknown[0]!r} (expected one of "
                               f"{sorted(expected)[:6]}{'...' if len(expected) > 6 else ''})")
    missing = sorted(set(expected) - keys)
    if exact and missing:
        raise AggregationError(f"{who}: tensor {missing[0]!r} is missing ({len(missing)} of {len(expected)} absent)")
    for k in sorted(keys):
        arr = record[k]
        shape, dtype = expected[k]
        got_shape = tuple(int(s) for s in arr.shape)
        if got_shape != tuple(shape):
            raise AggregationError(f"{who}: tensor {k!r} has shape {got_shape}, expected {tuple(shape)}")
        if str(arr.dtype) != dtype:
            raise AggregationError(f"{who}: tensor {k!r} has dtype {arr.dtype}, expected {dtype}")
        if len(arr.data) > MAX_ARRAY_BYTES:
            raise AggregationError(f"{who}: tensor {k!r} is {len(arr.data)} bytes, more than {MAX_ARRAY_BYTES}")


def from_array_record(record: Any, expected: Mapping[str, tuple[tuple[int, ...], str]] | None = None, *,
                      who: str = "arrays", exact: bool = True) -> dict[str, torch.Tensor]:
    """``ArrayRecord`` -> ``{name: tensor}``, checked against ``expected`` first when given (see :func:`check_arrays`)."""
    if expected is not None:
        check_arrays(record, expected, who=who, exact=exact)
    out: dict[str, torch.Tensor] = {}
    for k in record.keys():
        a = np.asarray(record[k].numpy())
        if a.dtype.kind != "f":
            raise AggregationError(f"{who}: tensor {k!r} has dtype {a.dtype}, expected a floating-point array")
        if not np.all(np.isfinite(a)):
            raise AggregationError(f"{who}: tensor {k!r} holds NaN or infinite values")
        out[k] = torch.from_numpy(a.copy())
    return out


def spec_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, numpy dtype name)}`` of some tensors: what :func:`check_arrays` expects of their copies."""
    return {k: (tuple(t.shape), str(t.detach().cpu().numpy().dtype) if t.dtype != torch.bfloat16 else "bfloat16")
            for k, t in tensors.items()}


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise AggregationError(f"unsupported tensor dtype {name!r}; expected one of {sorted(_DTYPES)}") from None
