"""Statistics for comparing methods on the same eval problems: bootstrap intervals, a paired
bootstrap test, McNemar's exact test and the minimum detectable difference.

Per-problem scores are arrays of shape (S, P): S seeds x P eval problems (one seed: (1, P)).
Every cell of a compare matrix is evaluated on the same P problems, so two methods' arrays are
paired problem by problem (and seed by seed: seed k shares the data order and eval sampling seed).

    ci = bootstrap_ci(scores)                       # resample problems (and seeds when S > 1)
    t = paired_bootstrap(scores_a, scores_b)        # a - b, same resampled problems/seeds for both
    t.diff, t.lo, t.hi, t.p_value, t.mde

The two-level bootstrap resamples seeds and problems independently with replacement (problems
are crossed with seeds, so one resampled problem set is used for every resampled seed); the
statistic is the mean over the resampled (seed, problem) grid.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# z_{1-α/2} + z_{power} for α = 0.05 two-sided and power 0.8: 1.95996 + 0.84162 = 2.80
MDE_FACTOR = 1.959964 + 0.841621


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float
    se: float                 # bootstrap standard deviation of the statistic
    n_seeds: int
    n_problems: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """Paired bootstrap of mean(a - b) over the same problems and seeds."""
    diff: float               # observed mean(a) - mean(b)
    lo: float                 # 95% percentile interval of the difference
    hi: float
    se: float                 # bootstrap SE of the paired difference
    p_value: float            # two-sided, from the bootstrap distribution shifted to the null
    mde: float                # 2.80 x se: smallest difference detectable at α 0.05 with power 0.8
    n_seeds: int
    n_problems: int
    method: str = "paired bootstrap (problems x seeds)"

    def to_dict(self) -> dict:
        return asdict(self)


def as_matrix(scores) -> np.ndarray:
    """(S, P) float array from a (P,) or (S, P) sequence; rows must have equal length."""
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (problems,) or (seeds, problems) array, got shape {a.shape}")
    return a


def bootstrap_means(scores, n_boot: int = 4000, seed: int = 0) -> np.ndarray:
    """(n_boot,) bootstrap replicates of the grid mean, resampling problems and (if S > 1) seeds."""
    a = as_matrix(scores)
    S, P = a.shape
    rng = np.random.default_rng(seed)
    wp = rng.multinomial(P, np.full(P, 1.0 / P), size=n_boot).astype(np.float64)    # (n_boot, P) counts
    if S > 1:
        ws = rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot).astype(np.float64)  # (n_boot, S)
    else:
        ws = np.ones((n_boot, 1))
    # mean over the resampled grid = Σ_s Σ_p ws_s wp_p a_sp / (S P)
    return np.einsum("bs,sp,bp->b", ws, a, wp) / (S * P)


def bootstrap_ci(scores, alpha: float = 0.05, n_boot: int = 4000, seed: int = 0) -> Interval:
    """Mean with a (1-α) percentile bootstrap interval over problems (and seeds when several)."""
    a = as_matrix(scores)
    reps = bootstrap_means(a, n_boot, seed)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    m = float(a.mean())
    return Interval(m, float(min(lo, m)), float(max(hi, m)), float(reps.std(ddof=1)), a.shape[0], a.shape[1])


def paired_bootstrap(a, b, alpha: float = 0.05, n_boot: int = 4000, seed: int = 0) -> PairedTest:
    """Paired bootstrap test of mean(a) - mean(b); a and b are (S, P) with the same problems/seeds.

    Resampling the per-(seed, problem) differences keeps the pairing. The p-value is two-sided,
    from the replicates centred on the null: p = (1 + #{|d* - d̄| >= |d̄|}) / (1 + n_boot), so
    identical arrays give p = 1 and a difference far outside the spread gives p ≈ 1/n_boot.
    """
    A, B = as_matrix(a), as_matrix(b)
    if A.shape != B.shape:
        raise ValueError(f"paired arrays must have the same (seeds, problems) shape, got {A.shape} and {B.shape}")
    d = A - B                                                                        # (S, P)
    reps = bootstrap_means(d, n_boot, seed)                                          # (n_boot,)
    obs = float(d.mean())
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    extreme = int(np.sum(np.abs(reps - obs) >= abs(obs) - 1e-12))
    p = (1 + extreme) / (1 + n_boot)
    se = float(reps.std(ddof=1))
    return PairedTest(obs, float(min(lo, obs)), float(max(hi, obs)), se, min(1.0, p), MDE_FACTOR * se,
                      A.shape[0], A.shape[1])


def mcnemar_exact(a, b) -> dict:
    """McNemar's exact (binomial) two-sided test on paired 0/1 outcomes (flattened over seeds).

    n01 = a wrong & b right, n10 = a right & b wrong; p = min(1, 2 P(X <= min(n01, n10))), X ~ Bin(n, 1/2).
    Only meaningful for binary scores (greedy correctness); returns p = 1 with no discordant pairs.
    """
    A, B = as_matrix(a).ravel() >= 0.5, as_matrix(b).ravel() >= 0.5
    n10, n01 = int(np.sum(A & ~B)), int(np.sum(~A & B))
    n = n10 + n01
    if n == 0:
        return {"n10": 0, "n01": 0, "p_value": 1.0}
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return {"n10": n10, "n01": n01, "p_value": min(1.0, 2.0 * tail)}


def is_binary(scores) -> bool:
    a = as_matrix(scores)
    return bool(np.all((a == 0.0) | (a == 1.0)))
