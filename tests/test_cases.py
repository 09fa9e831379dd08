"""Accuracy cases: annotations, truth from boxes of two dates, GeoJSON truth, ignore regions."""
import json

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner
from conftest import shared_dataset, write_tif

from pipeline.cli import eval_main
from pipeline.errors import InputError, UnreadableInputError
from pipeline.evaluate import evaluate, load_features
from pipeline.testing.cases import (
    Box,
    Case,
    airbus_cases,
    build_truth,
    fill_mask,
    frame_offset,
    image_shape,
    load_annotations,
    merge_duplicates,
    score_case,
    truth_collection,
    wrap_case,
    write_truth,
)

CRS = "EPSG:32636"
TRANSFORM = Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)


def _csv(tmp_path, *rows):
    path = tmp_path / "annotations.csv"
    path.write_text("id,image_id,geometry,class\n" + "".join(r + "\n" for r in rows))
    return path


def test_annotations_become_bounding_boxes_per_image(tmp_path):
    path = _csv(tmp_path,
                '1,a.jpg,"[(135, 522), (245, 522), (245, 600), (135, 600), (135, 522)]",Airplane',
                '2,a.jpg,"[(0, 10), (40, 10), (40, 30), (0, 30), (0, 10)]",Truncated_airplane',
                '3,b.jpg,"[(5, 6), (7, 9)]",Airplane')
    boxes = load_annotations(path)
    assert boxes == {"a.jpg": [Box(135, 522, 245, 600, "Airplane"),
                               Box(0, 10, 40, 30, "Truncated_airplane")],
                     "b.jpg": [Box(5, 6, 7, 9, "Airplane")]}


@pytest.mark.parametrize("geometry", ['"[(1, 2), (3,"', '"__import__(\'os\').getcwd()"',
                                      '"[(1, 2), (1, 9)]"', '"[(1, \'x\'), (3, 4)]"'])
def test_malformed_row_names_file_and_line(tmp_path, geometry):
    path = _csv(tmp_path, '1,a.jpg,"[(0, 0), (10, 10)]",Airplane', f"2,a.jpg,{geometry},Airplane")
    with pytest.raises(InputError, match=r"annotations\.csv: row at line 3"):
        load_annotations(path)


def test_missing_column_and_missing_file_are_input_errors_naming_the_file(tmp_path):
    (tmp_path / "x.csv").write_text("id,image_id,class\n1,a.jpg,Airplane\n")
    with pytest.raises(InputError, match="missing column.*geometry") as caught:
        load_annotations(tmp_path / "x.csv")
    assert caught.value.path == str(tmp_path / "x.csv")
    with pytest.raises(UnreadableInputError, match="not found") as caught:
        load_annotations(tmp_path / "absent.csv")
    assert caught.value.path == str(tmp_path / "absent.csv") and isinstance(caught.value, OSError)
    assert caught.value.reason == "annotation file not found"


def test_eval_inputs_missing_or_not_geojson_are_named(tmp_path):
    with pytest.raises(UnreadableInputError, match="file not found") as caught:
        load_features(tmp_path / "absent.geojson")
    assert caught.value.path == str(tmp_path / "absent.geojson")
    with pytest.raises(UnreadableInputError, match="cannot be read"):
        load_features(tmp_path)  # a folder
    (tmp_path / "list.geojson").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a GeoJSON FeatureCollection") as caught:
        load_features(tmp_path / "list.geojson")
    assert caught.value.path == str(tmp_path / "list.geojson")
    result = CliRunner().invoke(eval_main, [str(tmp_path / "absent.geojson"),
                                            str(tmp_path / "list.geojson")])
    assert result.exit_code == 2 and result.stderr.strip() == (
        f"detect-changes: error: {tmp_path / 'absent.geojson'}: file not found")


# BEFORE's (x, y) lies at AFTER's (x + 30, y - 20): AFTER's frame covers BEFORE's
# x in [-30, 970], y in [20, 1020]
OFFSET = (30.0, -20.0)
SHAPE = (1000, 1000)


def _hand_made():
    before = [Box(100, 200, 160, 250),                         # stays
              Box(500, 500, 580, 560),                         # leaves
              Box(300, 600, 360, 650, "Truncated_airplane"),   # cannot be judged
              Box(5, 400, 60, 450),                            # at BEFORE's left edge
              Box(100, 2, 150, 15),                            # outside AFTER's frame
              Box(700, 700, 800, 780)]                         # stand taken by another aircraft
    after = [Box(133, 178, 193, 232),                          # the one that stays, 3 px off
             Box(700, 300, 760, 350),                          # arrives
             Box(960, 100, 995, 140),                          # at AFTER's right edge
             Box(745, 690, 805, 740)]                          # a smaller aircraft on that stand
    return before, after


def test_truth_moves_after_boxes_and_splits_appeared_disappeared_ignored():
    before, after = _hand_made()
    truth = build_truth(before, after, OFFSET, SHAPE, SHAPE)
    assert truth.appeared == [Box(670, 320, 730, 370)]
    assert truth.disappeared == [Box(500, 500, 580, 560)]
    assert sorted((b.x0, reason) for b, reason in truth.ignore) == [
        (5, "edge"), (100, "edge"), (300, "Truncated_airplane"), (930, "edge")]
    assert [b for b, _ in truth.unchanged] == [Box(100, 200, 160, 250), Box(700, 700, 800, 780)]
    assert truth.residual_px == pytest.approx((-1.0, -2.5))  # medians of (3, 0) and (-5, -5)


def test_aircraft_on_neighbouring_stands_are_not_the_same():
    # two business jets a wingspan apart: one leaves, the other arrives next to it
    truth = build_truth([Box(400, 400, 460, 460)], [Box(460 + 30, 400 - 20, 520 + 30, 460 - 20)],
                        OFFSET, SHAPE, SHAPE)
    assert len(truth.appeared) == 1 and len(truth.disappeared) == 1 and not truth.unchanged


def test_an_aircraft_boxed_twice_is_one_aircraft():
    # three boxes of one jet in a chain (centres 15 px apart, 18 allowed; the ends 30 apart),
    # one boxed twice with one box truncated, and two jets parked wing to wing (centres 32 px
    # apart, 0.53 of the longer side)
    boxes = [Box(100, 100, 160, 150), Box(130, 100, 190, 150), Box(115, 100, 175, 150),
             Box(300, 300, 360, 340), Box(302, 303, 358, 341, "Truncated_airplane"),
             Box(500, 500, 560, 540), Box(532, 500, 592, 540)]
    merged = sorted(merge_duplicates(boxes), key=lambda b: (b.x0, b.y0))
    assert merged == [Box(100, 100, 190, 150), Box(300, 300, 360, 341, "Truncated_airplane"),
                      Box(500, 500, 560, 540), Box(532, 500, 592, 540)]
    # the truth merges each date's duplicates first: a jet boxed twice that stays is unchanged,
    # not one unchanged and one gone; one that leaves is one change, not two
    stays, leaves = [Box(100, 200, 160, 250), Box(103, 202, 162, 251)], [Box(500, 500, 580, 560),
                                                                        Box(502, 497, 581, 559)]
    after = [Box(130, 180, 190, 230)]  # the jet that stays, in AFTER pixels (OFFSET)
    truth = build_truth(stays + leaves, after, OFFSET, SHAPE, SHAPE)
    assert (len(truth.unchanged), len(truth.disappeared), truth.appeared) == (1, 1, [])
    unmerged = build_truth(stays + leaves, after, OFFSET, SHAPE, SHAPE, duplicate_frac=0)
    assert (len(unmerged.unchanged), len(unmerged.disappeared)) == (1, 3)


def test_boxes_on_or_near_either_images_black_fill_cannot_be_judged(tmp_path):
    # AFTER's scene ends at its column 600 (black beyond), BEFORE's is whole but for a dark
    # speck of 3 px, which is not fill; BEFORE's x is AFTER's x - 30
    after_img = np.full((3, 1000, 1000), 90, np.uint8)
    after_img[:, :, 600:] = 0
    before_img = np.full((3, 1000, 1000), 90, np.uint8)
    before_img[:, 300:303, 300:303] = 0
    fill_b = fill_mask(write_tif(tmp_path / "b.tif", before_img, transform=TRANSFORM))
    fill_a = fill_mask(write_tif(tmp_path / "a.tif", after_img, transform=TRANSFORM))
    assert not fill_b.any() and fill_a[:, 600:].all() and not fill_a[:, :600].any()
    gone = [Box(280, 280, 330, 330),   # on BEFORE's speck: judged, AFTER sees it empty
            Box(500, 100, 540, 140),   # AFTER's x 530-570: 30 px short of its fill: judged
            Box(550, 300, 590, 340),   # AFTER's x 580-620: half in the fill
            Box(555, 500, 565, 520)]   # AFTER's x 585-595: 5 px short of the fill
    truth = build_truth(gone, [], OFFSET, SHAPE, SHAPE, fill=(fill_b, fill_a))
    assert truth.disappeared == gone[:2]
    assert [(b, reason) for b, reason in truth.ignore] == [(gone[2], "nodata"),
                                                          (gone[3], "nodata")]
    # without the fill, the boxes in it count as disappeared
    assert build_truth(gone, [], OFFSET, SHAPE, SHAPE).disappeared == gone


def _truth_features():
    before, after = _hand_made()
    truth = build_truth(before, after, OFFSET, SHAPE, SHAPE)
    return truth, truth_collection(truth, TRANSFORM, CRS, (0.5, 0.5))["features"]


def test_truth_geojson_is_lonlat_boxes_with_change_and_ignore_flags(tmp_path):
    truth, features = _truth_features()
    tif = write_tif(tmp_path / "before.tif", np.zeros((3, 64, 64), np.uint8), transform=TRANSFORM)
    path = write_truth(tmp_path / "truth.geojson", truth, tif)
    loaded = load_features(path)
    assert loaded == json.loads(json.dumps(features))
    props = [f["properties"] for f in loaded]
    assert [p["change"] for p in props].count("appeared") == 1
    assert [p["change"] for p in props].count("disappeared") == 1
    assert sum(p.get("ignore") is True for p in props) == 4
    assert all(p["category"] == "aircraft" for p in props)
    gone = next(p for p in props if p["change"] == "disappeared")
    assert (gone["length_m"], gone["width_m"]) == (40.0, 30.0)  # 80 x 60 px at 0.5 m
    lon, lat = loaded[0]["geometry"]["coordinates"][0][0]
    assert 32 < lon < 34 and 35 < lat < 37  # EPSG:4326 near the UTM 36N origin used


def _det(feature, change=None, category="aircraft", dx_m=0.0):
    """A detection over a truth feature, moved east by ``dx_m``."""
    ring = [[x + dx_m / 90_800.0, y] for x, y in feature["geometry"]["coordinates"][0]]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"category": category,
                           "change": change or feature["properties"]["change"]}}


def test_scores_skip_ignore_regions_and_count_launchers_apart():
    _, features = _truth_features()
    appeared = next(f for f in features if f["properties"]["change"] == "appeared")
    gone = next(f for f in features if f["properties"]["change"] == "disappeared")
    ignored = next(f for f in features if f["properties"].get("ignore"))
    detections = [_det(appeared, dx_m=2.0),                      # right
                  _det(ignored, change="appeared"),              # on an ignore region: left out
                  _det(appeared, dx_m=300.0),                    # nothing there
                  _det(gone, change="appeared"),                 # right place, wrong change
                  _det(appeared, category="launcher", dx_m=80.0)]
    s = score_case(features, detections)
    assert (s.score.tp, s.score.fp, s.score.fn) == (1, 2, 1)
    assert (s.excused, s.launchers, s.wrong_change) == (1, 1, 1)
    # detect-changes-eval reads the same truth: ignore regions are no truth there either, but
    # its overall line counts the launcher as a false positive
    total = evaluate(features, detections)[("all", "all")]
    assert (total.tp, total.fp, total.fn) == (1, 3, 1)


def test_eval_command_reads_truth_with_ignore_regions(tmp_path):
    _, features = _truth_features()
    truth = tmp_path / "truth.geojson"
    truth.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    dets = tmp_path / "detections.geojson"
    real = [f for f in features if not f["properties"].get("ignore")]
    dets.write_text(json.dumps({"type": "FeatureCollection", "features": real}))
    result = CliRunner().invoke(eval_main, [str(truth), str(dets)])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1].split()
    assert last[:5] == ["all", "all", "2", "2", "2"] and last[-1] == "1.000"


def test_detection_matching_truth_is_not_excused_by_a_nearby_ignore_region():
    before, after = [Box(100, 100, 160, 150), Box(100, 160, 160, 210, "Truncated_airplane")], []
    truth = build_truth(before, after, (0.0, 0.0), SHAPE, SHAPE)
    features = truth_collection(truth, TRANSFORM, CRS, (0.5, 0.5))["features"]
    gone = features[0]
    assert gone["properties"]["change"] == "disappeared"
    s = score_case(features, [_det(gone)])
    assert (s.score.tp, s.score.fp, s.score.fn, s.excused) == (1, 0, 0, 0)


# --- real imagery ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def airbus():
    d = shared_dataset("airbus-aircraft-sample")
    return d, load_annotations(d / "annotations.csv"), airbus_cases(d)


def _case(cases, before, after) -> Case:
    return next(c for c in cases if c.before.name.startswith(before)
                and c.after.name.startswith(after))


@pytest.mark.realdata
def test_airbus_pairs_and_controls(airbus):
    _, _, cases = airbus
    assert len(cases) == 41  # G4's unannotated extras image left out
    assert {(c.name, c.after_offset_px) for c in cases if c.control} == {
        ("G5_b3c7c22d_fc8f9dc5", (0.0, 0.0)), ("G8_e9021b38_ef92f434", (512.0, -768.0))}


@pytest.mark.realdata
@pytest.mark.parametrize("pair, expected", [(("b3c7c22d", "fc8f9dc5"), (-3.49, -12.33)),
                                            (("e9021b38", "ef92f434"), (-512.0, 768.0))])
def test_airbus_controls_offset_and_empty_truth(airbus, tmp_path, pair, expected):
    _, boxes, cases = airbus
    case = _case(cases, *pair)
    before, after = wrap_case(case, tmp_path)
    offset = frame_offset(before, after, _nodata0())
    # SOURCE.md: G5 re-cut by (-3.49, -12.33) px; G8: ef92f434[y + 768, x - 512] == e9021b38[y, x]
    assert offset == pytest.approx(expected, abs=0.15)
    truth = build_truth(boxes[case.before_id], boxes[case.after_id], offset,
                        image_shape(case.before), image_shape(case.after))
    assert truth.appeared == [] and truth.disappeared == []
    assert len(truth.unchanged) >= 20
    assert max(map(abs, truth.residual_px)) < 3  # the boxes agree with the offset


@pytest.mark.realdata
def test_airbus_g1_truth_is_what_the_box_counts_imply(airbus, tmp_path):
    _, boxes, cases = airbus
    case = _case(cases, "20bfce20", "b7ab0316")
    before, after = wrap_case(case, tmp_path)
    offset = frame_offset(before, after, _nodata0())
    assert max(map(abs, offset)) < 3  # SOURCE.md: sub-2 px offsets in G1
    b, a = boxes[case.before_id], boxes[case.after_id]
    truth = build_truth(b, a, offset, image_shape(case.before), image_shape(case.after))
    n_b = sum(x.label == "Airplane" for x in b)
    n_a = sum(x.label == "Airplane" for x in a)
    assert (n_b, n_a) == (15, 8)
    # every aircraft is unchanged, changed or ignored; the net change is the count difference,
    # up to the boxes that cannot be judged
    assert len(truth.disappeared) - len(truth.appeared) == pytest.approx(n_b - n_a,
                                                                         abs=len(truth.ignore))
    assert len(truth.unchanged) + len(truth.disappeared) <= n_b
    assert len(truth.unchanged) + len(truth.appeared) <= n_a
    assert 1 <= len(truth.unchanged) and 8 <= len(truth.disappeared) + len(truth.appeared) <= 23


@pytest.mark.realdata
def test_airbus_image_with_every_aircraft_boxed_twice(airbus):
    # G7's 1e7e0450 has 52 Airplane rows for 26 aircraft; every other image of the groups has
    # no two boxes whose centres lie within half the longer side (0.54 at the closest)
    _, boxes, cases = airbus
    counts = {}
    for case in cases:
        for image in (case.before_id, case.after_id):
            counts[image[:8]] = (len(boxes[image]), len(merge_duplicates(boxes[image])))
    assert counts.pop("1e7e0450") == (52, 26)
    assert all(n == m for n, m in counts.values())


def _nodata0():
    from pipeline.config import Config

    return Config().with_overrides({"input": {"nodata": 0}})


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("pair, min_f1, min_recall", [
    # measured F1 0.84 / 0.75, recall 0.88 / 0.80 (benchmarks/accuracy.py); the floor leaves room
    # for the order in which blobs are found, not for a real loss
    (("4c9d2482", "cc4f3226"), 0.78, 0.82), (("074737f4", "135fdc4c"), 0.68, 0.72)])
def test_real_pairs_find_the_aircraft_that_came_and_went(airbus, tmp_path, pair, min_f1,
                                                         min_recall):
    from pipeline.run import run_pair

    _, boxes, cases = airbus
    case = _case(cases, *pair)
    before, after = wrap_case(case, tmp_path)
    offset = frame_offset(before, after, _nodata0())
    truth = build_truth(boxes[case.before_id], boxes[case.after_id], offset,
                        image_shape(case.before), image_shape(case.after))
    write_truth(tmp_path / "truth.geojson", truth, before)
    run_pair(before, after, tmp_path / "out", _nodata0())
    s = score_case(load_features(tmp_path / "truth.geojson"),
                   load_features(tmp_path / "out" / "detections.geojson")).score
    assert s.f1 >= min_f1 and s.recall >= min_recall, s
