"""Speed of the verification protocol: sort/searchsorted vs the threshold loop, same run.

60,000 pairs (10x LFW), 128-d random embeddings; the loop is the plain restatement of
insightface's calculate_roc/calculate_val from tests/test_verification.py. Reports the ratio
and checks the accuracies are identical.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from fsbench.verification import evaluate_pairs

_spec = importlib.util.spec_from_file_location(
    "_verification_reference", Path(__file__).resolve().parents[1] / "test_verification.py"
)
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)


def test_speed_60k_pairs():
    rng = np.random.default_rng(0)
    n, dim = 60_000, 128
    same = rng.random(n) < 0.5
    e1 = rng.normal(size=(n, dim)).astype(np.float32)
    e2 = np.where(same[:, None], e1 + rng.normal(scale=5.0, size=(n, dim)), rng.normal(size=(n, dim)))
    e2 = e2.astype(np.float32)

    t0 = time.perf_counter()
    acc, best_t, val, far = _ref.loop_protocol(e1, e2, same, 10)
    t_loop = time.perf_counter() - t0

    fast = []
    for _ in range(3):
        t0 = time.perf_counter()
        res = evaluate_pairs(e1, e2, same, n_folds=10)
        fast.append(time.perf_counter() - t0)
    t_fast = min(fast)

    np.testing.assert_array_equal(res.accuracies, acc)
    np.testing.assert_array_equal(res.thresholds, best_t)
    assert res.tar_at_far == np.mean(val) and res.far == np.mean(far)
    ratio = t_loop / t_fast
    print(f"\nverification, {n} pairs x 10 folds: loop {t_loop:.2f} s, sort/searchsorted "
          f"{t_fast * 1000:.1f} ms (best of 3; includes AUC and TAR@FAR=1e-4), ratio {ratio:.0f}x; "
          f"accuracy {res.accuracy:.4f} +- {res.std:.4f} identical, TAR@FAR=1e-3 {res.tar_at_far:.4f}")
    assert ratio >= 20
