"""The learned verifier of aircraft candidates (pipeline.verifier), on by default."""
import json

import numpy as np
import pytest

from pipeline import verifier
from pipeline.config import Config
from pipeline.run import run_pair


def test_shipped_model_loads_and_scores():
    model = json.loads(verifier.MODEL_PATH.read_text(encoding="utf-8"))
    assert model["features"] == list(verifier.FEATURES)
    v = verifier.load_verifier()
    assert 0 < v.threshold < 1 and v.trees
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(5, len(verifier.FEATURES)))
    p = v.probability(rows)
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))
    # one row walks the trees in Python, rows in numpy: the same probabilities
    assert [v.probability(r) for r in rows] == pytest.approx(list(p), abs=1e-12)
    assert v.probability(rows[:1]).shape == (1,)


def test_model_of_other_features_is_refused():
    model = json.loads(verifier.MODEL_PATH.read_text(encoding="utf-8"))
    model["features"] = model["features"][:-1]
    with pytest.raises(ValueError, match="retrain"):
        verifier.Verifier(model)


def _run(pair, out, **update):
    config = Config().model_copy(update={"verifier": Config().verifier.model_copy(update=update)})
    result = run_pair(pair[0], pair[1], out, config)
    return [(d.klass, d.category, d.change, d.blob.centroid_px) for d in result.detections]


@pytest.fixture(scope="module")
def classical(sample_pair, tmp_path_factory):
    return _run(sample_pair, tmp_path_factory.mktemp("off") / "out", enabled=False)


def test_on_keeping_what_the_rules_keep_is_the_classical_result(sample_pair, tmp_path,
                                                                  classical):
    assert Config().verifier.enabled is True
    # on, keeping every candidate the classical test keeps: the same detections as off
    assert _run(sample_pair, tmp_path / "keep", enabled=True, threshold=0.0,
                min_sigma=Config().difference.blob_sigma) == classical


def test_on_judges_aircraft_only(sample_pair, tmp_path, classical):
    assert any(c == "aircraft" for _, c, _, _ in classical)
    assert any(c == "launcher" for _, c, _, _ in classical)
    # a threshold nothing reaches drops every aircraft, never a launcher
    strict = _run(sample_pair, tmp_path / "strict", enabled=True, threshold=1.0)
    assert strict == [d for d in classical if d[1] == "launcher"]
    # the shipped model, the default, keeps the sample's aircraft
    result = run_pair(sample_pair[0], sample_pair[1], tmp_path / "default", Config())
    shipped = [(d.klass, d.category, d.change, d.blob.centroid_px) for d in result.detections]
    assert [d for d in shipped if d[1] == "aircraft"] == [d for d in classical if d[1] == "aircraft"]
