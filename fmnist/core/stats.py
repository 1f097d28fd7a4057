"""Means over seeds with their intervals: what every compared figure is quoted as (n, mean, std, 95 % interval).

Student's t interval on the mean (scipy.stats.t): with 3-10 seeds per configuration a bootstrap has too few values
to resample from; t assumes roughly normal seed-to-seed spread, which accuracy over seeds is. Paired differences
(two configurations run with the same seeds: the same init and batch order) use the t interval of the per-seed
differences, which removes the seed's own share of the noise.
"""

from __future__ import annotations

import math
import statistics

from scipy import stats

LEVEL = 0.95
ACCURACY = (0.0, 1.0)  # where an accuracy's mean can lie


def interval(values: list[float], level: float = LEVEL, bounds: tuple[float, float] | None = None) -> dict:
    """{n, mean, std, low, high, level, method} of `values`; with one value the interval is unknown (None).
    `bounds`: where the true mean must lie (ACCURACY for accuracies). A t interval knows nothing of them and, with few
    seeds and a wide spread, runs past 100 %; cut there, it covers the mean as often and says nothing impossible."""
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarize")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if n > 1 else None
    low = high = None
    if n > 1:
        half = stats.t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n)
        low, high = mean - half, mean + half
        if bounds:
            low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"n": n, "mean": mean, "std": std, "low": low, "high": high, "level": level, "method": "t"}


def quoted(s: dict | None, scale: float = 100, digits: int = 2, ci: bool = True) -> str:
    """A summary as every table quotes it: "mean ± std [low, high] (n=N)" (scale 100: accuracies in %); one value
    "mean (n=1)"; no summary "-"."""
    if not s:
        return "-"
    if s["std"] is None:
        return f"{scale * s['mean']:.{digits}f} (n=1)"
    text = f"{scale * s['mean']:.{digits}f} ± {scale * s['std']:.{digits}f}"
    if ci:
        text += f" [{scale * s['low']:.{digits}f}, {scale * s['high']:.{digits}f}]"
    return f"{text} (n={s['n']})"


def quoted_difference(d: dict) -> str:
    """A paired difference of accuracies in points: "+x.xx points [+low, +high] (n=N)"."""
    if d["low"] is None:
        return f"{100 * d['mean']:+.2f} points (one seed: no interval)"
    return f"{100 * d['mean']:+.2f} points [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] (n={d['n']})"


def rounds_for(r: dict, halfwidth: float, most: int = 100_000) -> int | None:
    """How many rounds a ratio (from `ratio`) would need for its interval to be within ±`halfwidth`, if its per-round
    spread stayed as measured: the smallest m whose t interval, t(m-1) * sd / sqrt(m) on the log scale, is narrow
    enough; None with fewer than two rounds (no spread known) or beyond `most`."""
    if r["low"] is None:
        return None
    n, level = r["n"], r["level"]
    t = stats.t.ppf((1 + level) / 2, n - 1)
    sd = math.log(r["high"] / r["ratio"]) * math.sqrt(n) / t  # the per-round log ratios' standard deviation
    goal = math.log(1 + halfwidth)  # halfwidth's upper side; the lower, 1 - exp(-h), is the narrower one
    m = 2
    while stats.t.ppf((1 + level) / 2, m - 1) * sd / math.sqrt(m) > goal:
        m += 1
        if m > most:
            return None
    return m


def seeds_for(d: dict, power: float = 0.8, most: int = 1000) -> int | None:
    """How many seeds a paired difference (from `paired`) would need for its interval to clear zero with probability
    `power`, were its mean and per-seed spread the true ones: the power of the paired t test (scipy.stats.nct, the
    noncentral t), the planning figure for a comparison its seeds left open. None with no spread known or beyond
    `most`."""
    if d["std"] is None or d["mean"] == 0:
        return None
    if d["std"] == 0:
        return 2
    for n in range(2, most + 1):
        t = stats.t.ppf((1 + d["level"]) / 2, n - 1)
        shift = abs(d["mean"]) / (d["std"] / math.sqrt(n))
        if stats.nct.sf(t, n - 1, shift) + stats.nct.cdf(-t, n - 1, shift) >= power:
            return n
    return None


def paired(a: dict, b: dict, level: float = LEVEL) -> dict:
    """b - a over the keys (seeds) both have: the interval of the per-key differences, and the keys used."""
    keys = sorted(set(a) & set(b))
    if not keys:
        raise ValueError("no common seeds to pair")
    return {**interval([b[k] - a[k] for k in keys], level), "paired_by": keys}


def against(summary: dict, other: float) -> str:
    """The verdict against `other`: "above" only where the interval's lower end clears it (the only case that may be
    called beating it), "below" where its upper end is under it, "inside" otherwise (one value: no interval)."""
    if summary["low"] is None:
        return "inside"
    return "above" if summary["low"] > other else "below" if summary["high"] < other else "inside"


def prob_above(summary: dict, other: float) -> float | None:
    """The probability that the true mean is above `other`, from the t distribution of the mean (what a flat prior
    gives): 0.5 at the mean, near 1 where the interval's lower end clears `other`; None with one value."""
    if summary["std"] is None:
        return None
    if summary["std"] == 0:
        return float(summary["mean"] > other)
    return float(stats.t.cdf((summary["mean"] - other) / (summary["std"] / math.sqrt(summary["n"])), summary["n"] - 1))


def ratio(numerators: list[float], denominators: list[float], level: float = LEVEL) -> dict:
    """The ratio of two timings paired by round (a_r / b_r: both timed in round r, so a round's drift cancels): the
    geometric mean of the per-round ratios with a t interval on their logs (ratios are symmetric on a log scale).
    `halfwidth` is the interval's larger relative distance from the ratio (0.05: within ±5 %)."""
    if len(numerators) != len(denominators):
        raise ValueError("ratio: one numerator and one denominator per round")
    logs = interval([math.log(a / b) for a, b in zip(numerators, denominators, strict=True)], level)
    center = math.exp(logs["mean"])
    low = math.exp(logs["low"]) if logs["low"] is not None else None
    high = math.exp(logs["high"]) if logs["high"] is not None else None
    half = max(high / center - 1, 1 - low / center) if low is not None else None
    return {
        "n": logs["n"],
        "ratio": center,
        "low": low,
        "high": high,
        "halfwidth": half,
        "level": level,
        "method": "t on log ratios, paired by round",
    }
