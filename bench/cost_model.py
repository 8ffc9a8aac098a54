"""Pure rules over the pipeline benchmark's figures: did a load hold, and what does a camera cost.

A load of N cameras "held with bounded lag" when the detector (the stage that saturates first on a CPU)
kept up: at most 1% of the frames were dropped as stale, at most 1% were shed (skipped because a newer
frame of the same camera was detected instead: the pool was behind), and during the second half of the
capture the detector's input lag never exceeded two seconds' worth of frames (or two batches, whichever is
more). Frames that motion gating passed as unchanged are not shed: the detector chose not to need them.
An overloaded detector instead shows a lag that climbs until frames pass the stale age and are dropped.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

MAX_STALE_FRACTION = 0.01
LAG_SECONDS = 2.0
HELD_RULE = (f"at most {MAX_STALE_FRACTION:.0%} of frames dropped as stale and at most {MAX_STALE_FRACTION:.0%} shed "
             f"(a newer frame of the camera detected instead), and the detector's input lag in the second half of "
             f"the capture never above {LAG_SECONDS:g} s of frames (at least two batches)")


@dataclass(frozen=True)
class LoadVerdict:
    held: bool
    reason: str
    lag_bound: float


def verdict(cameras: int, fps: float, stale_fraction: float, late_lags: list[int], batch: int = 4,
            shed_fraction: float = 0.0) -> LoadVerdict:
    """`late_lags`: the detector's lag samples from the second half of the capture window."""
    bound = max(2 * batch, LAG_SECONDS * cameras * fps)
    worst = max(late_lags) if late_lags else 0
    if stale_fraction > MAX_STALE_FRACTION:
        return LoadVerdict(False, f"{stale_fraction:.1%} of frames dropped as stale", bound)
    if shed_fraction > MAX_STALE_FRACTION:
        return LoadVerdict(False, f"{shed_fraction:.1%} of frames shed (the detector was behind)", bound)
    if worst > bound:
        return LoadVerdict(False, f"detector lag reached {worst} frames (bound {bound:.0f})", bound)
    return LoadVerdict(True, f"no more than {stale_fraction:.1%} stale, lag at most {worst} (bound {bound:.0f})",
                       bound)


def per_camera_cost(runs: list[dict], idle_cores: float) -> dict:
    """CPU cores one camera adds, from the runs that held: (cores used - idle cores) / cameras, the median
    over those runs, and a least-squares line cores = fixed + per_camera * N when two or more held."""
    held = [r for r in runs if r["held"]]
    if not held:
        return {"per_camera_cores": None, "fit": None, "from_runs": []}
    each = [(r["cpu_cores"]["total"] - idle_cores) / r["cameras"] for r in held]
    fit = None
    if len(held) >= 2:
        xs = [r["cameras"] for r in held]
        ys = [r["cpu_cores"]["total"] for r in held]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        fit = {"fixed_cores": my - slope * mx, "per_camera_cores": slope}
    return {"per_camera_cores": statistics.median(each), "fit": fit, "from_runs": [r["cameras"] for r in held]}


def largest_held(runs: list[dict]) -> int:
    """The largest camera count that held, counting up from the smallest: a count above one that failed
    does not count even if it happened to hold (a burst of someone else's load is not capacity)."""
    best = 0
    for r in sorted(runs, key=lambda r: r["cameras"]):
        if not r["held"]:
            break
        best = r["cameras"]
    return best
