"""Benchmark: our LightGBM and XGBoost training (through the `Trainer` interface) against each library's own training.

Workload: a seeded SYNTHETIC matrix (numpy, not market data) of `--rows` rows (default 1,000,000; AETHER_BENCH_ROWS
overrides, e.g. 50000 for a quick run) x `--features` (default 40) float64 features, binary labels from a noisy
linear signal, uniform sample weights. For each library, in the same run and on the same matrix:

- ours: `create(name, params).fit(X, y, w)` (input checks, the library's data structure, the library's train);
- peer: `lgb.train(p, lgb.Dataset(X, y, weight=w), rounds)` / `xgb.train(p, xgb.DMatrix(X, y, weight=w), rounds)`
  with `p` the very parameters our trainer hands the library (`library_params`), so both train the same model.

A small untimed warm-up fit of each side comes first (library initialisation, thread pools); then each side runs
`--repeat` times, alternating which goes first; the line reports each side's best wall time and the
overhead ours / peer - 1 (target <= 10 %), and whether both models predict bit for bit the same probabilities.
Prints one JSON line. Needs no stack; needs the `ml` extra (lightgbm, xgboost).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import xgboost as xgb

from ml.trainers import create
from ml.trainers.lightgbm import LightGBMTrainer
from ml.trainers.xgboost import XGBoostTrainer

TARGET_OVERHEAD = 0.10


def _matrix(rows: int, features: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features))
    signal = x[:, : min(5, features)].sum(axis=1) + rng.normal(scale=2.0, size=rows)
    return x, (signal > 0).astype(np.int64)


def _best(runs: list[float]) -> float:
    return min(runs)


Fit = Callable[[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64]], Any]


def _compare(
    name: str, ours: Fit, peer: Fit, data: tuple[Any, Any, Any], repeat: int
) -> tuple[dict[str, Any], Any, Any]:
    """Best wall seconds of each side over `repeat` alternating runs after a warm-up, and each side's last model."""
    warm = tuple(part[:10_000] for part in data)
    ours(*warm)
    peer(*warm)
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    models: dict[str, Any] = {}
    sides = [("ours", ours), ("peer", peer)]
    for index in range(repeat):
        for side, run in sides if index % 2 == 0 else sides[::-1]:  # alternate who goes first
            started = time.perf_counter()
            models[side] = run(*data)
            times[side].append(time.perf_counter() - started)
    best = {side: _best(values) for side, values in times.items()}
    return {f"{name}_ours_s": round(best["ours"], 3), f"{name}_peer_s": round(best["peer"], 3),
            f"{name}_overhead": round(best["ours"] / best["peer"] - 1, 4)}, models["ours"], models["peer"]  # fmt: skip


def main() -> None:
    """Run the benchmark and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=int(os.environ.get("AETHER_BENCH_ROWS", "1000000")))
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="library threads (0: the library's default, all cores)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    x, y = _matrix(args.rows, args.features, seed=1)
    w = np.ones(args.rows)
    probe = x[:10_000]
    line: dict[str, Any] = {"bench": "training", "workload": "synthetic", "rows": args.rows,
                            "features": args.features, "rounds": args.rounds}  # fmt: skip

    lgb_params = {"num_boost_round": args.rounds, "num_threads": args.threads}
    lgb_peer_params = LightGBMTrainer(lgb_params).library_params(2)

    def lgb_ours(x: Any, y: Any, w: Any) -> Any:
        model = create("lightgbm", lgb_params)
        model.fit(x, y, w)
        return model

    def lgb_peer(x: Any, y: Any, w: Any) -> Any:
        data = lgb.Dataset(x, label=y, weight=w, params={"verbosity": -1}, free_raw_data=True)
        return lgb.train(lgb_peer_params, data, num_boost_round=args.rounds)

    figures, ours, peer = _compare("lightgbm", lgb_ours, lgb_peer, (x, y, w), args.repeat)
    line.update(figures)
    line["lightgbm_identical_predictions"] = bool(np.array_equal(ours.predict_proba(probe)[:, 1], peer.predict(probe)))

    xgb_params = {"num_boost_round": args.rounds, "nthread": args.threads}
    xgb_peer_params = XGBoostTrainer(xgb_params).library_params(2)

    def xgb_ours(x: Any, y: Any, w: Any) -> Any:
        model = create("xgboost", xgb_params)
        model.fit(x, y, w)
        return model

    def xgb_peer(x: Any, y: Any, w: Any) -> Any:
        data = xgb.DMatrix(x, label=y, weight=w, nthread=args.threads or -1)
        return xgb.train(xgb_peer_params, data, num_boost_round=args.rounds)

    figures, ours, peer = _compare("xgboost", xgb_ours, xgb_peer, (x, y, w), args.repeat)
    line.update(figures)
    peer_proba = np.asarray(peer.predict(xgb.DMatrix(probe)), dtype=np.float64)
    line["xgboost_identical_predictions"] = bool(np.array_equal(ours.predict_proba(probe)[:, 1], peer_proba))
    line["target_overhead"] = TARGET_OVERHEAD
    line["ok"] = line["lightgbm_overhead"] <= TARGET_OVERHEAD and line["xgboost_overhead"] <= TARGET_OVERHEAD
    line.update(
        {"repeat": args.repeat, "cpus": os.cpu_count(), "lightgbm": lgb.__version__, "xgboost": xgb.__version__}
    )
    print(json.dumps(line))


if __name__ == "__main__":
    main()
