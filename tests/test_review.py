"""review.py: loading an output folder, rebuilding its layers and chips, filtering, and verdicts
that round-trip through review.csv into detect-changes-eval as confirmed truth."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.report import review
from pipeline.run import run_pair


@pytest.fixture(scope="module")
def run_dir(sample_pair, tmp_path_factory) -> Path:
    before, after, _ = sample_pair
    out = tmp_path_factory.mktemp("review") / "hmeimim"
    run_pair(before, after, out)
    return out


@pytest.fixture
def out_dir(run_dir, tmp_path) -> Path:
    """A fresh copy of the run's folder, so each test starts with no review.csv."""
    return Path(shutil.copytree(run_dir, tmp_path / "run"))


def _eval_command() -> list[str]:
    script = Path(sys.executable).with_name("detect-changes-eval")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from pipeline.cli import eval_main; eval_main()"]


def test_load_outputs_reads_detections_report_and_inputs(run_dir, sample_pair):
    outputs = review.load_outputs(run_dir)
    assert outputs.ids == [f"d{i + 1:03d}" for i in range(len(outputs.ids))]
    assert outputs.report.detections == len(outputs.detections)
    assert outputs.paths["before"] == sample_pair[0].resolve()
    assert outputs.paths["after"] == sample_pair[1].resolve()
    assert outputs.config.difference.threshold_sigma > 0


def test_load_outputs_refuses_a_folder_without_outputs(tmp_path):
    with pytest.raises(InputError, match="detections.geojson"):
        review.load_outputs(tmp_path)


def test_inputs_recorded_relative_are_found_from_the_output_folder(out_dir, sample_pair,
                                                                   tmp_path, monkeypatch):
    # a checkout: project/sample/*.tif and project/out/run, the run started in project/
    project = tmp_path / "project"
    (project / "sample").mkdir(parents=True)
    for src in sample_pair[:2]:
        shutil.copy(src, project / "sample" / src.name)
    run = Path(shutil.copytree(out_dir, project / "out" / "run"))
    doc = json.loads((run / "report.json").read_text())
    doc["inputs"]["before"]["path"] = "sample/before.tif"
    doc["inputs"]["after"]["path"] = "sample/after.tif"
    (run / "report.json").write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path)           # as from a notebook started elsewhere
    outputs = review.load_outputs(run)
    assert outputs.paths["before"] == (project / "sample" / "before.tif").resolve()
    doc["inputs"]["before"]["path"] = "moved/before.tif"
    (run / "report.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="pass before=PATH"):
        review.chips(review.load_outputs(run))


def test_scene_layers_show_each_detection_in_score_and_mask(run_dir):
    outputs = review.load_outputs(run_dir)
    layers = review.scene_layers(outputs, max_px=400)
    assert layers.before.shape[:2] == layers.score.shape == layers.mask.shape
    assert max(layers.score.shape) == 400
    thr = outputs.config.difference.threshold_sigma
    for f in outputs.detections:
        col, row = f["properties"]["centroid_px"]
        r, c = int(row * layers.scale), int(col * layers.scale)
        near = (slice(max(0, r - 2), r + 3), slice(max(0, c - 2), c + 3))
        assert (layers.mask[near] == 1).any(), f["properties"]["id"]
        assert layers.score[near].max() > thr, f["properties"]["id"]


def _blob_score(chip) -> float:
    """The chip's mean score over the detection's blob: the mask's piece under its outline,
    shadow and fringe included, as the pipeline's ``change_score`` averages it."""
    inside = np.zeros(chip.mask.shape, np.uint8)
    cv2.fillPoly(inside, [np.round(chip.outline).astype(np.int32)], 1)
    sel = (inside > 0) & (chip.mask == 1)
    assert sel.sum() > 10, chip.id
    _, pieces = cv2.connectedComponents((chip.mask == 1).astype(np.uint8), connectivity=8)
    return float(chip.score[pieces == np.bincount(pieces[sel]).argmax()].mean())


def test_chip_scores_agree_with_the_pipeline(run_dir):
    outputs = review.load_outputs(run_dir)
    for chip in review.chips(outputs):
        expected = chip.feature["properties"]["change_score"]
        if chip.feature["properties"].get("found_by") == "detector":
            continue  # its score is over the object its image shows, not over a mask piece
        assert _blob_score(chip) == pytest.approx(expected, rel=0.01), chip.id
        assert chip.before.shape == chip.after.shape == chip.mask.shape + (3,)


def test_chips_follow_a_local_shift_field_recorded_in_the_report(out_dir):
    # a run in local mode records its field; a uniform one equal to the global shift must
    # give the same chips as the global shift
    doc = json.loads((out_dir / "report.json").read_text())
    co = doc["coregistration"]
    cols, rows = [128.0, 512.0, 896.0], [128.0, 512.0, 896.0]
    co["local"] = {"nodes": 9, "measured": 9, "grid_cols_px": cols, "grid_rows_px": rows,
                   "field_dx_px": [[co["shift_x_px"]] * 3] * 3,
                   "field_dy_px": [[co["shift_y_px"]] * 3] * 3,
                   "measured_mask": [[1] * 3] * 3,
                   "dx_px": {"min": co["shift_x_px"], "max": co["shift_x_px"]},
                   "dy_px": {"min": co["shift_y_px"], "max": co["shift_y_px"]}}
    (out_dir / "report.json").write_text(json.dumps(doc))
    outputs = review.load_outputs(out_dir)
    assert callable(review.run_shift(outputs.report))
    for chip in review.chips(outputs):
        expected = chip.feature["properties"]["change_score"]
        if chip.feature["properties"].get("found_by") == "detector":
            continue  # its score is over the object its image shows, not over a mask piece
        assert _blob_score(chip) == pytest.approx(expected, rel=0.01), chip.id


def _as_first_version(doc: dict) -> dict:
    """report.json as the versions before the review tools wrote it: no grid frame, no
    coregistration mode, applied flag or window counts, radiometry with ``noise_sigma`` and no
    level field or score unit, no timings."""
    doc = json.loads(json.dumps(doc))
    doc["grid"].pop("frame")
    for key in ("mode", "applied", "spread_px", "n_windows", "n_inliers", "local"):
        doc["coregistration"].pop(key, None)
    rad = doc["radiometry"]
    rad["noise_sigma"] = rad.pop("score_unit")
    for key in ("level", "structure_unit"):
        rad.pop(key, None)
    doc.pop("timings_s")
    return doc


def test_a_report_of_an_early_version_still_loads(out_dir):
    doc = _as_first_version(json.loads((out_dir / "report.json").read_text()))
    (out_dir / "report.json").write_text(json.dumps(doc))
    outputs = review.load_outputs(out_dir)
    assert outputs.report.detections == len(outputs.detections)
    assert outputs.report.coregistration.applied        # as the early versions applied it
    assert review.run_shift(outputs.report) == (doc["coregistration"]["shift_x_px"],
                                                doc["coregistration"]["shift_y_px"])
    assert outputs.report.radiometry.score_unit is None
    assert "d001" in review.detections_table(outputs)
    with pytest.raises(ValueError, match="score unit"):   # its chips cannot be scored
        review.chips(outputs)


def test_load_outputs_names_a_report_json_that_is_no_report(out_dir):
    (out_dir / "report.json").write_text(json.dumps({"detections": 3}))
    with pytest.raises(InputError, match="report.json: not a report"):
        review.load_outputs(out_dir)


def test_filter_detections_by_class_change_score_and_status(run_dir):
    feats = review.load_outputs(run_dir).detections
    props = {f["properties"]["id"]: f["properties"] for f in feats}
    helis = review.filter_detections(feats, classes=["helicopter"])
    assert helis and all(props[f["properties"]["id"]]["class"] == "helicopter" for f in helis)
    assert review.filter_detections(feats, classes="helicopter") == helis
    high = review.filter_detections(feats, min_score=0.75)
    assert {f["properties"]["id"] for f in high} == {i for i, p in props.items() if p["score"] >= 0.75}
    first = feats[0]["properties"]["id"]
    verdicts = {first: "rejected"}
    todo = review.filter_detections(feats, verdicts=verdicts, status="unreviewed")
    assert first not in {f["properties"]["id"] for f in todo} and len(todo) == len(feats) - 1
    assert [f["properties"]["id"] for f in
            review.filter_detections(feats, verdicts=verdicts, status="rejected")] == [first]
    with pytest.raises(ValueError):
        review.filter_detections(feats, status="maybe")


def test_verdicts_round_trip_and_merge(out_dir):
    assert review.load_verdicts(out_dir) == {}
    path = review.save_verdicts(out_dir, {"d001": "confirmed", "d002": "Rejected"})
    assert path == out_dir / "review.csv"
    assert review.load_verdicts(out_dir) == {"d001": "confirmed", "d002": "rejected"}
    review.save_verdicts(out_dir, {"d002": "confirmed", "d003": "rejected"})
    assert review.load_verdicts(out_dir) == {"d001": "confirmed", "d002": "confirmed",
                                             "d003": "rejected"}
    review.save_verdicts(out_dir, {"d004": "confirmed"}, merge=False)
    assert review.load_verdicts(out_dir) == {"d004": "confirmed"}
    header, row = path.read_text().splitlines()[:2]
    assert header == "id,verdict,category,class,change,score"
    assert row.startswith("d004,confirmed,")


def test_save_verdicts_refuses_unknown_ids_and_verdicts(out_dir):
    with pytest.raises(ValueError, match="d999"):
        review.save_verdicts(out_dir, {"d999": "confirmed"})
    with pytest.raises(ValueError, match="maybe"):
        review.save_verdicts(out_dir, {"d001": "maybe"})
    assert not (out_dir / "review.csv").exists()
    (out_dir / "review.csv").write_text("id,verdict\nd001,perhaps\n")
    with pytest.raises(InputError, match="line 2"):
        review.load_verdicts(out_dir)


def test_review_csv_is_read_back_by_eval_as_confirmed_truth(out_dir):
    outputs = review.load_outputs(out_dir)
    ids = outputs.ids
    assert len(ids) >= 3
    confirmed, rejected = ids[:2], ids[2:3]
    review.save_verdicts(out_dir, {**{i: "confirmed" for i in confirmed},
                                   **{i: "rejected" for i in rejected}})
    truth = review.verdicts_as_truth(out_dir)
    assert [f["properties"]["id"] for f in truth["features"]] == confirmed
    path = review.write_truth(out_dir)
    assert path == out_dir / "review_truth.geojson"
    done = subprocess.run([*_eval_command(), str(path), str(outputs.paths["detections"])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    total = next(line for line in done.stdout.splitlines() if line.startswith("all"))
    _, _, n_truth, n_found, tp, precision, recall, _ = total.split()
    assert (int(n_truth), int(n_found), int(tp)) == (len(confirmed), len(ids), len(confirmed))
    assert float(recall) == 1.0
    assert float(precision) == pytest.approx(len(confirmed) / len(ids), abs=1e-3)
