"""Statistics of the privacy audit: attack AUC and lower bounds on the epsilon achieved.

Two bounds, both from the scores of ``m`` canaries of which a fair coin put each in the
training data or not (one training run):

- :func:`one_run_epsilon_lower_bound` (Steinke, Nasr and Jagielski, "Privacy auditing with one
  (1) training run", NeurIPS 2023, Theorem 3.1 / Proposition 5.2): the auditor guesses "in" for
  the ``k_plus`` highest scores and "out" for the ``k_minus`` lowest and abstains on the rest.
  Under (epsilon, delta)-DP, the number of correct guesses among the ``r = k_plus + k_minus``
  made is stochastically dominated by Binomial(r, e^eps / (1 + e^eps)) (plus a delta term).
  The bound is the largest epsilon that this tail rejects at the confidence level, maximised
  over a grid of (k_plus, k_minus) with a Bonferroni correction for the choices tried. It is
  valid for ONE run because the randomness is the canaries' coins, not repeated training.
- :func:`clopper_pearson_epsilon_lower_bound`: at a threshold on the score, the
  Clopper-Pearson interval of the true positive rate (members above it) and of the false
  positive rate (non-members above it); eps_lb = log((TPR_lo - delta) / FPR_hi), the classic
  auditing bound (Jagielski et al. 2020; Nasr et al. 2021). Its intervals treat the canaries
  as independent trials: strictly, that holds across training runs; in one run it is the
  literature's usual approximation (the one-run bound above is the rigorous one).

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = [
    "AuditBound",
    "attack_auc",
    "clopper_pearson",
    "clopper_pearson_epsilon_lower_bound",
    "one_run_epsilon_lower_bound",
]

MAX_EPSILON = 50.0  # no bound is searched above this (e^50 is "no privacy" already)


@dataclass(frozen=True)
class AuditBound:
    """A lower bound on epsilon, with what produced it."""

    epsilon: float  # 0.0 when the attack shows nothing at this confidence
    confidence: float
    method: str
    detail: dict[str, float | int]

    def to_dict(self) -> dict[str, object]:
        return {
            "epsilon": round(self.epsilon, 4),
            "confidence": self.confidence,
            "method": self.method,
            **self.detail,
        }


def _scores_labels(
    scores: Sequence[float] | np.ndarray, members: Sequence[bool] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(members)
    if s.ndim != 1 or y.ndim != 1 or len(s) != len(y):
        raise ValueError("scores and members must be 1-D and of the same length")
    if len(s) == 0:
        raise ValueError("at least one canary is needed")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("members must be booleans (or 0/1)")
        y = y.astype(bool)
    return s, y


def _check_confidence(confidence: float, delta: float) -> None:
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta}")


def attack_auc(scores: Sequence[float] | np.ndarray, members: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of "higher score = member" (ties count one half).

    0.5 is guessing; 1.0 separates every member from every non-member. Needs both classes.
    """
    s, y = _scores_labels(scores, members)
    n_in, n_out = int(y.sum()), int((~y).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError("the AUC needs at least one member and one non-member")
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The two-sided Clopper-Pearson interval of a binomial proportion (exact, conservative)."""
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = 1 - confidence
    low = (
        0.0
        if successes == 0
        else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    )
    high = (
        1.0
        if successes == trials
        else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    )
    return low, high


def clopper_pearson_epsilon_lower_bound(
    scores: Sequence[float] | np.ndarray,
    members: Sequence[bool] | np.ndarray,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
) -> AuditBound:
    """eps_lb = max over thresholds of log((TPR_lo - delta) / FPR_hi), Clopper-Pearson.

    Every threshold between distinct scores is tried, so the confidence is split over them
    (Bonferroni): each interval is at ``1 - (1 - confidence) / thresholds``, two-sided, hence
    the whole statement holds at ``confidence``. Both directions (member scores high) only.
    """
    s, y = _scores_labels(scores, members)
    _check_confidence(confidence, delta)
    n_in, n_out = int(y.sum()), int((~y).sum())
    if n_in == 0 or n_out == 0:
        raise ValueError("the bound needs at least one member and one non-member")
    thresholds = np.unique(s)
    per = 1 - (1 - confidence) / len(thresholds)
    best = AuditBound(0.0, confidence, "clopper-pearson", {"threshold_count": len(thresholds)})
    for t in thresholds:
        tp = int((s[y] >= t).sum())
        fp = int((s[~y] >= t).sum())
        tpr_lo, _ = clopper_pearson(tp, n_in, per)
        _, fpr_hi = clopper_pearson(fp, n_out, per)
        if tpr_lo - delta <= 0 or fpr_hi <= 0:
            continue
        eps = math.log((tpr_lo - delta) / fpr_hi)
        if eps > best.epsilon:
            best = AuditBound(
                eps,
                confidence,
                "clopper-pearson",
                {
                    "threshold_count": len(thresholds),
                    "threshold": float(t),
                    "true_positives": tp,
                    "members": n_in,
                    "false_positives": fp,
                    "non_members": n_out,
                    "tpr_low": round(tpr_lo, 4),
                    "fpr_high": round(fpr_hi, 4),
                },
            )
    return best


def _one_run_p_value(r: int, correct: int, epsilon: float, delta: float, m: int) -> float:
    """Steinke et al. 2023, Theorem 3.1: the bound on P[correct guesses >= v] under
    (eps, delta)-DP: ``f(v) + 2 m delta max_{i=1..m} (f(v - i) - f(v)) / i`` with
    ``f(v) = P[W >= v]``, ``W ~ Binomial(r, e^eps / (1 + e^eps))``.
    """
    p = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(correct - 1, r, p))
    if delta == 0:
        return tail
    below = float(stats.binom.cdf(correct - 1, r, p))
    i = np.arange(1, m + 1)
    mass = below - stats.binom.cdf(correct - i - 1, r, p)  # P[v - i <= W < v]
    slack = float(np.max(mass / i))
    return tail + 2 * m * delta * slack


def _largest_rejected_epsilon(r: int, correct: int, alpha: float, delta: float, m: int) -> float:
    """The largest eps with p-value(eps) <= alpha (p grows with eps); 0 if even eps=0 is not."""
    if r == 0 or _one_run_p_value(r, correct, 0.0, delta, m) > alpha:
        return 0.0
    if _one_run_p_value(r, correct, MAX_EPSILON, delta, m) <= alpha:
        return MAX_EPSILON
    return float(
        optimize.brentq(
            lambda e: _one_run_p_value(r, correct, e, delta, m) - alpha, 0.0, MAX_EPSILON, xtol=1e-6
        )
    )


def one_run_epsilon_lower_bound(
    scores: Sequence[float] | np.ndarray,
    members: Sequence[bool] | np.ndarray,
    *,
    delta: float = 1e-5,
    confidence: float = 0.95,
    guesses: Sequence[int] | None = None,
) -> AuditBound:
    """The one-run lower bound of Steinke, Nasr and Jagielski (2023) at ``confidence``.

    For each ``r`` in ``guesses`` (default: 4, 8, 16, 32, ... and m), guess "in" for the ``r/2``
    highest and "out" for the ``r/2`` lowest scores; count the correct guesses; the bound for
    that ``r`` is the largest epsilon that the binomial tail rejects at level
    ``(1 - confidence) / len(guesses)`` (Bonferroni over the choices tried). Returned: the
    largest. ``members`` must be the canaries' coin flips (each in with probability 1/2,
    independently): that is what makes the bound valid from one training run.
    """
    s, y = _scores_labels(scores, members)
    _check_confidence(confidence, delta)
    m = len(s)
    if guesses is None:
        guesses = sorted({r for r in (4, 8, 16, 32, 64, 128, 256) if r < m} | {m})
    guesses = [int(r) for r in guesses]
    if not guesses or any(r < 1 or r > m for r in guesses):
        raise ValueError(f"each number of guesses must be between 1 and {m}")
    alpha = (1 - confidence) / len(guesses)
    order = np.argsort(-s, kind="stable")
    best = AuditBound(0.0, confidence, "one-run (Steinke et al. 2023)", {"canaries": m})
    for r in guesses:
        k_plus = (r + 1) // 2
        k_minus = r - k_plus
        top = order[:k_plus]
        bottom = order[m - k_minus :] if k_minus else order[:0]
        correct = int(y[top].sum() + (~y[bottom]).sum())
        eps = _largest_rejected_epsilon(r, correct, alpha, delta, m)
        if eps > best.epsilon:
            best = AuditBound(
                eps,
                confidence,
                "one-run (Steinke et al. 2023)",
                {"canaries": m, "guesses": r, "correct": correct, "choices_tried": len(guesses)},
            )
    return best
