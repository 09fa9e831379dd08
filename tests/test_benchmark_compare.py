"""``benchmarks/verifier.py compare``: the paired bootstrap that says whether two dumps' F1
differ by more than the table's noise."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("verifier")
    finally:
        sys.path.remove(str(BENCH))


def _folds(scores: dict[str, dict[str, tuple[int, int, int]]]) -> dict[str, dict]:
    return {g: {"verifier": pairs} for g, pairs in scores.items()}


def _scores(rng, lose: int = 0) -> dict[str, dict[str, tuple[int, int, int]]]:
    """Three airports of four pairs; ``lose`` aircraft of each pair found are missed."""
    out = {}
    for g in ("G1", "G2", "G3"):
        out[g] = {}
        for k in range(4):
            tp, fp, fn = (int(v) for v in rng.integers((20, 0, 0), (40, 4, 4)))
            out[g][f"{g}_{k}"] = (tp - lose, fp, fn + lose)
    return out


def test_the_same_dump_against_itself_differs_by_nothing_in_every_draw(bench):
    folds = _folds(_scores(np.random.default_rng(0)))
    delta = bench.bootstrap_delta(folds, folds, draws=200)
    assert set(delta) == {"pairs", "airports"}
    for d in delta.values():
        assert d.shape == (200,) and np.all(d == 0)


def test_draws_are_paired_so_a_loss_on_every_pair_is_below_zero_in_every_draw(bench):
    # unpaired draws (different pairs for the two dumps) would often come out above zero:
    # the pairs' own F1 spread (20 to 40 found) is larger than the loss of one aircraft each
    worse = _folds(_scores(np.random.default_rng(1), lose=1))
    better = _folds(_scores(np.random.default_rng(1)))
    delta = bench.bootstrap_delta(worse, better, draws=300)
    for d in delta.values():
        assert np.all(d < 0)
    flipped = bench.bootstrap_delta(better, worse, draws=300)
    assert np.allclose(flipped["pairs"], -delta["pairs"])


def test_pairs_only_one_dump_holds_are_left_out(bench):
    a = _scores(np.random.default_rng(2))
    b = {g: dict(pairs) for g, pairs in a.items()}
    a["G1"]["G1_extra"] = (0, 50, 50)  # a pair only the first dump has: would lower its F1
    delta = bench.bootstrap_delta(_folds(a), _folds(b), draws=100)
    assert np.all(delta["pairs"] == 0) and np.all(delta["airports"] == 0)
