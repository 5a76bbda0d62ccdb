"""Time the vectorised bootstrap: 200 items x 2000 resamples, every statistic, in one process.

Run: .venv/bin/python bench/bootstrap.py [--items 200] [--boot 2000]
Prints wall time and resamples/s for an ordinal 1-5 rubric (judge on 1-10), a continuous judge score,
a pairwise A/B/tie set, and a full `calibrate()` call (points + CIs + 3-annotator ceiling + fits); for each,
BCa's extra cost (the jackknife tables and the corrected percentiles) next to the percentile interval's.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from calibration import calibrate
from calibration.agreement import build_design, encode_cells
from calibration.bootstrap import bootstrap, jackknife
from judge.stats import bca_ci, percentile_ci


def _time(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    n, b = args.items, args.boot
    rng = np.random.default_rng(0)
    human = rng.integers(1, 6, n).astype(float)
    cases = {
        "ordinal 1-5 vs judge 1-10": ("ordinal", human, np.clip(human * 2 + rng.integers(-2, 3, n), 1, 10)),
        "ordinal vs continuous judge": ("ordinal", human, human + rng.normal(0, 1, n)),
        "pairwise A/B/tie": ("pairwise", rng.integers(0, 3, n).astype(float), rng.integers(0, 3, n).astype(float)),
    }
    print(f"bootstrap: {n} items x {b} resamples (best of 3)")
    for name, (kind, y, p) in cases.items():
        design = build_design(kind, y, p)
        cells = encode_cells(design, y, p)
        secs = _time(lambda design=design, cells=cells: bootstrap(design, cells, n_boot=b, seed=0))
        reps = bootstrap(design, cells, n_boot=b, seed=0)
        est = {k: float(np.nanmedian(v)) for k, v in reps.items()}  # any estimate: the cost is the same

        def percentile(reps=reps) -> None:  # type: ignore[no-untyped-def]
            for v in reps.values():
                percentile_ci(v)

        def bca(design=design, cells=cells, reps=reps, est=est) -> None:  # type: ignore[no-untyped-def]
            jack = jackknife(design, cells)
            for k, v in reps.items():
                bca_ci(v, est[k], jack[k][0], weights=jack[k][1])

        pct, extra = _time(percentile), _time(bca)
        print(
            f"  {name:<30} {len(design.metrics):>2} stats  {secs * 1000:8.1f} ms  {b / secs:>12,.0f} resamples/s"
            f"  | percentile CIs {pct * 1000:5.1f} ms, BCa CIs (jackknife + percentiles) {extra * 1000:5.1f} ms"
        )

    ids = [f"i{k}" for k in range(n)]
    labels = pd.DataFrame(
        {
            "id": np.repeat(ids, 3),
            "annotator": np.tile(["a1", "a2", "a3"], n),
            "label": np.clip(np.repeat(human, 3) + rng.integers(-1, 2, 3 * n), 1, 5),
        }
    )
    scores = pd.DataFrame({"id": ids, "score": np.clip(human + rng.integers(-1, 2, n), 1, 5)})
    for method in ("percentile", "bca"):
        run = lambda m=method: calibrate(scores, labels, label_type="ordinal", n_boot=b, seed=0, ci_method=m)  # noqa: E731
        secs = _time(run, repeat=1)
        print(f"  full calibrate() with 3-annotator ceiling, fits, {method:<10}: {secs * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
