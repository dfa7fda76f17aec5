"""One seed in, every generator out: the reproducibility rule of xrfed.

An experiment's config carries one integer seed. Everything random -- the scene, each device's weight
initialisation, its batches, the round's participant draw, DP noise -- gets its own generator seeded by
:func:`derive_seed` from that root and a path of names (``derive_seed(seed, "device", "ava", "init")``), so

* two streams never share state (adding a device does not shift another device's draws),
* the same config and seed give the same numbers in a fresh process, a resumed run, or a Ray actor,
* nothing depends on Python's salted ``hash()`` or on the order in which processes start.

:func:`seed_everything` seeds the process-wide generators (``random``, numpy's legacy global, torch) for code
that draws from them implicitly (peft's LoRA initialisation, dropout); :func:`forked_torch_seed` does it for torch
inside a block only, so the caller's global state is untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np

__all__ = ["derive_seed", "seed_everything", "forked_torch_seed", "SEED_BITS"]

#: derived seeds are non-negative integers below 2**SEED_BITS (fits torch.manual_seed and numpy)
SEED_BITS = 63


def _word(part: int | str) -> int:
    if isinstance(part, bool):
        raise TypeError(f"seed path parts must be int or str, got bool {part!r}")
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError(f"seed path integers must be >= 0, got {part}")
        return int(part)
    if isinstance(part, str):
        return int.from_bytes(hashlib.sha256(part.encode()).digest()[:8], "little")
    raise TypeError(f"seed path parts must be int or str, got {type(part).__name__}")


def derive_seed(root: int, *path: int | str) -> int:
    """A seed for the stream named ``path`` under ``root`` (stable across processes, platforms and versions).

    Built with numpy's :class:`~numpy.random.SeedSequence` (integer words only; strings enter as the first 8 bytes
    of their SHA-256), so it is the same everywhere numpy is.
    """
    words = [_word(root), *(_word(p) for p in path)]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) | (int(state[1]) << 32)) & ((1 << SEED_BITS) - 1))


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch's (CPU) generator from ``seed``."""
    random.seed(derive_seed(seed, "python"))
    np.random.seed(derive_seed(seed, "numpy") % (2**32))  # noqa: NPY002 -- the legacy global is what we seed
    import torch

    torch.manual_seed(derive_seed(seed, "torch"))


@contextlib.contextmanager
def forked_torch_seed(seed: int) -> Iterator[None]:
    """Inside the block torch's global CPU generator starts from ``seed``; afterwards it is restored."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
