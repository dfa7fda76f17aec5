"""Small statistics for reports: means with t confidence intervals over seeds, and paired comparisons.

Results stand next to their baselines with seeds and confidence intervals: :func:`mean_ci` gives the mean of
per-seed values with a two-sided Student-t interval (n - 1 degrees of freedom; a single seed has no interval),
:func:`paired_difference` the mean difference of two conditions run on the same seeds, its interval, and whether
its sign holds on every seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Estimate", "mean_ci", "paired_difference"]


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` seeds with its ``level`` confidence interval [lo, hi] (NaN bounds when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int
    level: float = 0.95
    #: for paired differences: the difference has the mean's sign on every seed
    sign_holds: bool | None = None
    values: tuple[float, ...] = ()

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def overlaps(self, other: Estimate) -> bool:
        if any(math.isnan(v) for v in (self.lo, self.hi, other.lo, other.hi)):
            return True
        return not (self.hi < other.lo or other.hi < self.lo)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None: strict JSON has no NaN)."""
        def clean(x: Any) -> Any:
            return None if isinstance(x, float) and math.isnan(x) else x

        d = {k: clean(v) for k, v in asdict(self).items()}
        d["values"] = [clean(v) for v in self.values]
        return d

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.3f}"
        return f"{self.mean:.3f} ± {self.half_width:.3f}"


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> Estimate:
    """Mean of ``values`` with a Student-t ``level`` interval. Missing values (None, NaN) are left out of the
    statistics but kept, as NaN, in ``Estimate.values``, so the values stay aligned with the seeds they came from."""
    from scipy import stats

    every = tuple(math.nan if x is None else float(x) for x in values)
    v = [x for x in every if not math.isnan(x)]
    n = len(v)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, level, values=every)
    m = sum(v) / n
    if n < 2:
        return Estimate(m, math.nan, math.nan, n, level, values=every)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, level, values=every)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Estimate:
    """``a - b`` per seed (same seeds, same order; a seed missing on either side is left out): mean, t interval,
    and whether every seed has the mean's sign."""
    if len(a) != len(b):
        raise ValueError(f"paired difference needs the same seeds on both sides ({len(a)} vs {len(b)} values)")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and not math.isnan(float(x)) and not math.isnan(float(y))]
    est = mean_ci(diffs, level)
    holds = bool(diffs) and all((d > 0) if est.mean > 0 else (d < 0) if est.mean < 0 else d == 0 for d in diffs)
    return Estimate(est.mean, est.lo, est.hi, est.n, level, holds, est.values)
