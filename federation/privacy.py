"""Client-level differential privacy (DP-FedAvg) and a membership-inference audit.

DP-FedAvg (McMahan et al. 2018): every participating device's *update* (its adapters minus the global adapters it
last received) is clipped to L2 norm ``clip_norm``; the server sums the clipped updates, adds Gaussian noise of
standard deviation ``noise_multiplier * clip_norm`` per coordinate, and divides by the *expected* number of
contributors (a fixed denominator, so the count itself leaks nothing). With devices sampled with probability q per
round this is the sampled Gaussian mechanism, whose Renyi-DP is computed here exactly for integer orders
(Mironov, Talwar & Zhang 2019, the computation opacus' ``RDPAccountant`` performs) and converted to (epsilon,
delta) with the tighter conversion of Balle et al. (2020) that opacus also uses.

The audit is the paper's "privacy leakage risk" (Table 6): a membership-inference attack that scores every sample
and guesses "was in the training set" for low scores, reported as ROC AUC (0.5 = no leakage) and as TPR at a low
FPR, which the reference notes recommend over AUC alone. The raw score is the target model's loss (Yeom et al.
2018). It confuses difficulty with membership: a device's held-out steps come later in time and can be harder
(another room, another activity), so they have higher losses under *any* model, member or not. The calibrated
score (:func:`calibrated_scores`, Watson et al., ICLR 2022) subtracts each sample's loss under a reference model
that never saw it (the pretrained foundation model): what remains is how much more the target model learned that
sample than a model that never trained on it. :func:`membership_audit` reports both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import FederationError

__all__ = [
    "DEFAULT_ORDERS",
    "update_norm",
    "clip_update",
    "dp_average",
    "rdp_sampled_gaussian",
    "epsilon_from_rdp",
    "RdpAccountant",
    "account_dp_round",
    "dp_epsilon",
    "loss_threshold_auc",
    "tpr_at_fpr",
    "calibrated_scores",
    "MembershipAudit",
    "membership_audit",
]

#: Renyi orders evaluated by the accountant (integers, where the RDP of the sampled Gaussian is exact).
DEFAULT_ORDERS: tuple[int, ...] = tuple(range(2, 65)) + (80, 96, 128, 192, 256)


def update_norm(update: Mapping[str, torch.Tensor]) -> float:
    """Global L2 norm of a tensor dict (all tensors flattened together)."""
    return math.sqrt(sum(float(t.detach().to(torch.float64).pow(2).sum()) for t in update.values()))


def clip_update(update: Mapping[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], float]:
    """Scale ``update`` so its global L2 norm is at most ``clip_norm``; returns (clipped, original norm)."""
    if not clip_norm > 0:
        raise FederationError(f"clip_norm must be > 0, got {clip_norm}")
    norm = update_norm(update)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: t * factor for k, t in update.items()}, norm


def dp_average(updates: Sequence[Mapping[str, torch.Tensor]], *, clip_norm: float, noise_multiplier: float,
               expected_counts: Mapping[str, float], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per key: (sum of clipped updates + N(0, (noise_multiplier * clip_norm)^2)) / expected count.

    ``updates`` must already be clipped (:func:`clip_update`); ``expected_counts[key]`` is the expected number
    of contributors to that key (sampling rate x devices holding it), the fixed denominator of DP-FedAvg.
    """
    if noise_multiplier < 0:
        raise FederationError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    sums: dict[str, torch.Tensor] = {}
    for u in updates:
        for k, t in u.items():
            sums[k] = sums.get(k, torch.zeros(t.shape, dtype=torch.float64)) + t.detach().to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    std = noise_multiplier * clip_norm
    for k, s in sums.items():
        noise = torch.randn(s.shape, generator=generator, dtype=torch.float64) * std
        denom = max(float(expected_counts.get(k, 1.0)), 1.0)
        out[k] = (s + noise) / denom
    return out


def _log_add(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi if lo == -math.inf else hi + math.log1p(math.exp(lo - hi))


def rdp_sampled_gaussian(sample_rate: float, noise_multiplier: float, steps: int,
                         orders: Sequence[int] = DEFAULT_ORDERS) -> np.ndarray:
    """RDP epsilon at each integer order of ``steps`` compositions of the Poisson-sampled Gaussian mechanism.

    ``log A_a = log sum_i C(a, i) q^i (1-q)^(a-i) exp((i^2 - i) / (2 sigma^2))``, RDP = ``log A_a / (a - 1)``.
    q = 1 reduces to the plain Gaussian mechanism's ``a / (2 sigma^2)``.
    """
    q, sigma = float(sample_rate), float(noise_multiplier)
    if not 0.0 <= q <= 1.0:
        raise FederationError(f"sample_rate must be in [0, 1], got {q}")
    if steps < 0:
        raise FederationError(f"steps must be >= 0, got {steps}")
    out = np.zeros(len(orders))
    for j, a in enumerate(orders):
        if int(a) != a or a < 2:
            raise FederationError(f"orders must be integers >= 2, got {a}")
        a = int(a)
        if q == 0 or steps == 0:
            out[j] = 0.0
        elif sigma == 0:
            out[j] = math.inf
        elif q == 1.0:
            out[j] = a / (2 * sigma**2)
        else:
            log_a = -math.inf
            for i in range(a + 1):
                term = (math.lgamma(a + 1) - math.lgamma(i + 1) - math.lgamma(a - i + 1)
                        + i * math.log(q) + (a - i) * math.log1p(-q) + (i * i - i) / (2 * sigma**2))
                log_a = _log_add(log_a, term)
            out[j] = log_a / (a - 1)
    return out * steps


def epsilon_from_rdp(rdp: np.ndarray, orders: Sequence[int], delta: float) -> tuple[float, int]:
    """Smallest epsilon over the orders for the given delta, and the order that achieves it.

    ``eps = rdp - (log delta + log a) / (a - 1) + log((a - 1) / a)`` (Balle et al. 2020, Proposition 12).
    """
    if not 0 < delta < 1:
        raise FederationError(f"delta must be in (0, 1), got {delta}")
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    eps = r - (math.log(delta) + np.log(a)) / (a - 1) + np.log((a - 1) / a)
    eps = np.where(np.isnan(eps), np.inf, eps)
    j = int(np.argmin(eps))
    return max(0.0, float(eps[j])), int(orders[j])


@dataclass
class RdpAccountant:
    """Tracks the privacy spent by a sequence of sampled-Gaussian rounds; JSON-serialisable for checkpoints."""

    orders: tuple[int, ...] = DEFAULT_ORDERS
    history: list[tuple[float, float, int]] = field(default_factory=list)  # (noise_multiplier, sample_rate, steps)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Account ``steps`` more rounds (consecutive identical rounds are merged)."""
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            z, q, n = self.history[-1]
            self.history[-1] = (z, q, n + steps)
        else:
            self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))

    def rdp(self) -> np.ndarray:
        total = np.zeros(len(self.orders))
        for z, q, n in self.history:
            total = total + rdp_sampled_gaussian(q, z, n, self.orders)
        return total

    def get_epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any round)."""
        if not self.history:
            return 0.0
        return epsilon_from_rdp(self.rdp(), self.orders, delta)[0]

    def state_dict(self) -> dict[str, object]:
        return {"orders": list(self.orders), "history": [list(h) for h in self.history]}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> RdpAccountant:
        return cls(orders=tuple(int(o) for o in state["orders"]),
                   history=[(float(z), float(q), int(n)) for z, q, n in state["history"]])


def account_dp_round(mode: str, noise_multiplier: float, sample_rate: float, central: RdpAccountant,
                     local: Mapping[str, RdpAccountant], contributors: Sequence[str]) -> None:
    """Account one round of client-level DP.

    ``central``: the server noises the sum of devices sampled with probability ``sample_rate``. ``local``: each
    contributor's release clip(delta) + N(0, (z C)^2) -- two neighbouring releases differ by up to 2C, so the Gaussian
    mechanism's effective multiplier is z / 2, and the device knows it took part (no amplification by sampling)."""
    if mode == "central":
        central.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
    else:
        for d in contributors:
            local[d].step(noise_multiplier=noise_multiplier / 2, sample_rate=1.0)


def dp_epsilon(mode: str, delta: float, central: RdpAccountant, local: Mapping[str, RdpAccountant]) -> float:
    """Privacy spent so far: the central accountant's, or the worst device's under local DP."""
    if mode == "central":
        return central.get_epsilon(delta)
    return max((a.get_epsilon(delta) for a in local.values()), default=0.0)


def loss_threshold_auc(member_losses: Sequence[float] | np.ndarray,
                       nonmember_losses: Sequence[float] | np.ndarray) -> float:
    """ROC AUC of the threshold attack: P(member score < non-member score), ties counted one half.

    The scores are losses (the raw attack) or calibrated losses (:func:`calibrated_scores`); lower = member."""
    m = np.asarray(member_losses, dtype=np.float64)
    n = np.asarray(nonmember_losses, dtype=np.float64)
    if m.size == 0 or n.size == 0:
        raise FederationError("membership inference needs at least one member and one non-member loss")
    less = (m[:, None] < n[None, :]).sum()
    ties = (m[:, None] == n[None, :]).sum()
    return float((less + 0.5 * ties) / (m.size * n.size))


def tpr_at_fpr(member_losses: Sequence[float] | np.ndarray, nonmember_losses: Sequence[float] | np.ndarray,
               fpr: float = 0.1) -> float:
    """True-positive rate of the threshold attack at the threshold whose false-positive rate is <= ``fpr``
    (scores as in :func:`loss_threshold_auc`: a sample is called a member when its score is below the threshold)."""
    m = np.asarray(member_losses, dtype=np.float64)
    n = np.sort(np.asarray(nonmember_losses, dtype=np.float64))
    if m.size == 0 or n.size == 0:
        raise FederationError("membership inference needs at least one member and one non-member loss")
    k = int(math.floor(fpr * n.size))  # at most k non-members may fall below the threshold
    threshold = n[k] if k < n.size else math.inf
    return float((m < threshold).mean())


def calibrated_scores(target_losses: Sequence[float], reference_losses: Sequence[float]) -> np.ndarray:
    """Difficulty-calibrated membership scores: per sample, target loss minus reference loss (lower = member).

    The reference model never saw the samples, so its loss measures how hard each sample is; both lists must
    hold the same samples in the same order (Watson et al., "On the importance of difficulty calibration in
    membership inference attacks", ICLR 2022).
    """
    t = np.asarray(target_losses, dtype=np.float64)
    r = np.asarray(reference_losses, dtype=np.float64)
    if t.shape != r.shape:
        raise FederationError(f"calibration needs one reference loss per target loss: got {t.size} target and "
                              f"{r.size} reference losses")
    return t - r


@dataclass(frozen=True)
class MembershipAudit:
    """A membership-inference audit of one model on one device's members and non-members.

    ``auc`` / ``tpr_at_fpr`` are the calibrated attack's (None without reference losses); the ``*_uncalibrated``
    figures are the raw loss-threshold attack's on the same samples. 0.5 AUC (and TPR = ``fpr``) is no leakage.
    """

    auc: float | None
    tpr_at_fpr: float | None
    auc_uncalibrated: float
    tpr_at_fpr_uncalibrated: float
    fpr: float
    members: int
    nonmembers: int


def membership_audit(member_losses: Sequence[float], nonmember_losses: Sequence[float], *,
                     member_reference: Sequence[float] | None = None,
                     nonmember_reference: Sequence[float] | None = None, fpr: float = 0.1) -> MembershipAudit:
    """Raw and (with both reference lists) difficulty-calibrated threshold attacks on the target model's losses."""
    if not 0 <= fpr <= 1:
        raise FederationError(f"fpr must be in [0, 1], got {fpr}")
    if (member_reference is None) != (nonmember_reference is None):
        raise FederationError("calibration needs reference losses for both the members and the non-members")
    auc = tpr = None
    if member_reference is not None and nonmember_reference is not None:
        m = calibrated_scores(member_losses, member_reference)
        n = calibrated_scores(nonmember_losses, nonmember_reference)
        auc, tpr = loss_threshold_auc(m, n), tpr_at_fpr(m, n, fpr)
    return MembershipAudit(auc, tpr, loss_threshold_auc(member_losses, nonmember_losses),
                           tpr_at_fpr(member_losses, nonmember_losses, fpr), float(fpr), len(member_losses),
                           len(nonmember_losses))
