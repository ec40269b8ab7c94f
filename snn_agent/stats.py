"""Summary statistics of scores: the mean with its Student-t confidence interval."""
from __future__ import annotations

import numpy as np

from mstpn_base.errors import ParameterError


def mean_ci(scores, level: float = 0.95) -> dict:
    """Mean, sample standard deviation s (ddof 1) and the ``level`` confidence interval of the
    mean, mean +- t_{(1+level)/2, n-1} s / sqrt(n) (Student t).  With one score s and the
    interval are undefined: std 0.0 and ci None."""
    from scipy import stats

    x = np.asarray(scores, dtype=float)
    if x.size < 1 or not np.all(np.isfinite(x)):
        raise ParameterError("mean_ci needs at least one finite score")
    if not 0.0 < level < 1.0:
        raise ParameterError(f"confidence level must lie in (0, 1), got {level!r}")
    mean = float(x.mean())
    if x.size == 1:
        return {"mean": mean, "std": 0.0, "ci_level": level, "ci": None, "n": 1}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2.0, x.size - 1)) * sd / np.sqrt(x.size)
    return {"mean": mean, "std": sd, "ci_level": level, "ci": [mean - half, mean + half], "n": int(x.size)}
