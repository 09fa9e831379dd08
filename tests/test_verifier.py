"""The learned verifier of aircraft candidates (pipeline.detect.verifier), on by default."""
import json

import numpy as np
import pytest

from pipeline.config import Config
from pipeline.detect import verifier
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


def _run(pair, out, recorder=None, split=None, **update):
    config = Config().with_overrides({"verifier": update, **({"split": split} if split else {})})
    result = run_pair(pair[0], pair[1], out, config, recorder=recorder)
    return [(d.klass, d.category, d.change, d.blob.centroid_px) for d in result.detections]


@pytest.fixture(scope="module")
def classical(sample_pair, tmp_path_factory):
    return _run(sample_pair, tmp_path_factory.mktemp("off") / "out", enabled=False)


@pytest.mark.slow
def test_on_keeping_every_candidate_is_the_classical_result_and_the_marked_others(tmp_path):
    assert Config().verifier.enabled is True
    # a scene where a classical rule drops an aircraft candidate (it touches static structure)
    from pipeline.testing import synth
    synth.write_pair(synth.make_pair(seed=0, size_px=1024, scenario="random", difficulty="easy"),
                     tmp_path)
    pair = (tmp_path / "before.tif", tmp_path / "after.tif")
    # every detection kept, overlapping or not (the training dump's mode: one_per_object
    # would otherwise keep the larger of a blob and the detector's sighting of one aircraft)
    whole = {"max_overlap": 1.0}
    classical = _run(pair, tmp_path / "off", enabled=False, split=whole)
    # on, keeping every candidate: the classical detections, and the aircraft too weak for the
    # classical test, that a classical rule drops or that the detector alone saw, marked so
    record: list = []
    every = _run(pair, tmp_path / "keep", enabled=True, recorder=record, split=whole)
    others = [r for r in record if not r["classical"]]
    assert any(r["features"][verifier.FEATURES.index("rule_static")] for r in others)
    centres = {tuple(r["centroid_px"]) for r in others}
    assert len(every) == len(classical) + len(centres)
    assert [d for d in every if d[3] not in centres] == classical


@pytest.mark.slow
def test_on_judges_aircraft_only(sample_pair, tmp_path, classical):
    assert any(c == "aircraft" for _, c, _, _ in classical)
    assert any(c == "launcher" for _, c, _, _ in classical)
    # a threshold nothing reaches drops every aircraft, never a launcher
    strict = _run(sample_pair, tmp_path / "strict", enabled=True, threshold=1.0)
    assert strict == [d for d in classical if d[1] == "launcher"]
    # the shipped model, the default, keeps the sample's aircraft, all of them where classical
    # detections of their class and change are (the detector's measure of one may replace the
    # blob's: a few pixels off), and drops what the classical rules wrongly took for one (a
    # vehicle that left, measured with its shadow as a small helicopter)
    result = run_pair(sample_pair[0], sample_pair[1], tmp_path / "default", Config())
    shipped = [(d.klass, d.category, d.change, d.blob.centroid_px) for d in result.detections]
    kept = [d for d in shipped if d[1] == "aircraft"]
    for k in kept:
        assert any(c[:3] == k[:3] and np.hypot(*np.subtract(c[3], k[3])) < 10 for c in classical), k
    truth = [f["properties"] for f in json.loads(sample_pair[2].read_text())["features"]]
    assert sorted((d[0], d[2]) for d in kept) == sorted(
        (p["class"], p["change"]) for p in truth if p["category"] == "aircraft")


def _scene(structure: bool, shape: str):
    """100 m chips of grey apron (0.5 m pixels) where an aircraft-sized object arrived: a filled
    rectangle (compact, like a vehicle), a cross (fuselage and wings) or a long cross (60 x 20 m:
    a transport whose wings the mask half lost, too narrow for its length); with ``structure`` a
    bright terminal stands in both images 1 m from it, in the nook of its wing and tail."""
    before = np.full((3, 200, 200), 100.0, np.float32)
    inside = np.zeros((200, 200), bool)
    if shape == "rectangle":
        inside[40:80, 35:85] = True
    elif shape == "long":
        inside[96:104, 40:160] = True
        inside[80:120, 90:98] = True
    else:
        inside[56:64, 30:90] = True  # fuselage, 30 m
        inside[35:85, 52:60] = True  # wings, 25 m
    if structure:
        before[:, 66:, 62:] = 220.0
    after = before.copy()
    after[:, inside] = 200.0
    changed = inside.copy()
    from pipeline.detect.blobs import measure
    from pipeline.detect.classify import ring_around
    score = np.where(inside, 20.0, 0.0).astype(np.float32)
    blob = measure(inside, (0, 0), (0.5, 0.5), score=score)
    ring = ring_around(inside, changed, 6)
    return blob, before, after, inside, ring, score


@pytest.mark.parametrize("structure, shape, rule", [
    (True, "cross", "static"), (False, "rectangle", "compact"), (False, "long", "noclass"),
    (False, "cross", None)])
def test_a_rule_the_classical_path_drops_by_is_a_feature_when_judged(structure, shape, rule):
    from pipeline.detect.classify import classical_rule, classify_blob
    blob, before, after, inside, ring, score = _scene(structure, shape)
    args = (blob, before, after, inside, ring, Config().classes)
    judged = classify_blob(*args, score=score, res_m=(0.5, 0.5), rules=False)
    assert judged is not None and judged.category == "aircraft" and judged.change == "appeared"
    assert classical_rule(blob, judged, before, after, inside, ring, score=score,
                          res_m=(0.5, 0.5)) == rule
    classical = classify_blob(*args, score=score, res_m=(0.5, 0.5))
    assert (classical is None) == (rule is not None)
    if rule == "noclass":  # the class of its length, fitting it not at all, and said so
        assert judged.klass == "large-transport" and judged.class_fit == 0
        from pipeline.io.export import detection_properties
        assert detection_properties(judged)["class_fit"] == 0
    x = verifier.candidate_features(blob, judged, before, after, inside, ring, score=score,
                                    gain=1.0, res_m=(0.5, 0.5), blob_sigma=5.0, rule=rule)
    flags = {r: x[verifier.FEATURES.index("rule_" + r.replace("-", "_"))] for r in verifier.RULES}
    assert flags == {r: float(r == rule) for r in verifier.RULES}
