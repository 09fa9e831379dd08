"""The report stage: report.json's model, the self-contained report.html (its template, chips
and score chips, also two pages written at once), the overlay's legend and labels."""
from __future__ import annotations

import base64
import json
import re
import sys
import threading

import cv2
import numpy as np
import pytest

from pipeline import io as rio
from pipeline.config import config_from_mapping
from pipeline.errors import InputError
from pipeline.io.readers import ReaderPool
from pipeline.report import draw, pictures
from pipeline.report.html import write_html
from pipeline.report.model import (
    Coregistration,
    ReportModel,
    as_report,
    load_report,
    write_json,
)
from pipeline.report.review import run_shift
from pipeline.report.score import ScoreRecipe, score_chip
from pipeline.run import run_pair


@pytest.fixture(scope="module")
def sample_run(sample_pair, tmp_path_factory):
    before, after, _ = sample_pair
    out = tmp_path_factory.mktemp("report") / "hmeimim"
    result = run_pair(before, after, out)
    return result, out


def _doc(result) -> dict:
    """The run's report as report.json holds it (a dict, whichever the pipeline returns)."""
    return json.loads(json.dumps(as_report(result.report).as_json_dict(), default=str))


def _config(doc: dict):
    """The run's configuration, from its report."""
    return config_from_mapping(doc["config"])


def _scene_pictures(sample_pair, detections, doc) -> pictures.ScenePictures:
    """The pictures of the sample pair as the pipeline makes them, its handles closed after."""
    before, after, _ = sample_pair
    config = _config(doc)
    with rio.open_raster(before, "BEFORE") as b_ds, rio.open_raster(after, "AFTER") as a_ds:
        grid = rio.grid_of(b_ds)
        b_bands, a_bands = rio.matching_bands(b_ds, a_ds)
        with rio.AfterOnGrid(a_ds, grid, shift_px=run_shift(doc)) as a_vrt:
            return pictures.scene_pictures(b_ds, a_vrt, grid, detections, b_bands=b_bands,
                                           a_bands=a_bands, config=config)


def _score_chips(page: str) -> dict[str, np.ndarray]:
    """The change-score chips of a page, decoded: {detection id: (M, N, 3) uint8}."""
    found = re.findall(r'<img alt="(d\d+) change score" class="chip" width="\d+" height="\d+" '
                       r'src="data:image/png;base64,([^"]+)"', page)
    return {i: cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
            for i, data in found}


# --- report.json ----------------------------------------------------------------------------

def test_report_json_round_trips_through_the_model(sample_run, tmp_path):
    _, out = sample_run
    text = (out / "report.json").read_text(encoding="utf-8")
    model = load_report(out / "report.json")
    assert isinstance(model, ReportModel)
    write_json(tmp_path / "again.json", model)
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == text   # same keys, order, values
    doc = json.loads(text)
    assert model.coregistration.shift_x_px == doc["coregistration"]["shift_x_px"]
    assert model.radiometry.score_unit == doc["radiometry"]["score_unit"]
    assert model.config.model_dump(exclude_unset=True) == doc["config"]  # free-form, kept whole


def test_report_json_holds_what_the_contract_requires(sample_run):
    _, out = sample_run
    doc = json.loads((out / "report.json").read_text())
    for key in ("inputs", "overlap", "coregistration", "radiometry", "counts", "detections",
                "timings_s", "version", "config"):
        assert key in doc, key
    for key in ("shift_x_px", "shift_y_px", "shift_x_m", "shift_y_m", "quality", "method"):
        assert key in doc["coregistration"], key
    for role in ("before", "after"):
        assert {"path", "crs", "pixel_size_m", "width", "height", "bands", "dtype"} <= set(
            doc["inputs"][role])


def test_a_report_lacking_a_required_part_is_refused_naming_it(sample_run, tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    del doc["overlap"]
    with pytest.raises(ValueError, match="overlap"):
        as_report(doc)
    (tmp_path / "report.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="overlap"):
        load_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a report"):
        load_report(tmp_path / "report.json")


def test_report_keeps_parts_it_does_not_name(sample_run):
    result, _ = sample_run
    doc = _doc(result)
    doc["extra_part"] = {"a": 1}
    doc["config"]["future_section"] = {"b": 2}
    again = as_report(doc).as_json_dict()
    assert again["extra_part"] == {"a": 1} and again["config"]["future_section"] == {"b": 2}


# --- report.html ----------------------------------------------------------------------------

def test_report_html_is_self_contained(sample_run):
    _, out = sample_run
    page = (out / "report.html").read_text(encoding="utf-8")
    srcs = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert srcs and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    assert "<link" not in page and "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_gallery_has_before_after_and_score_chip_per_detection(sample_run):
    result, out = sample_run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert result.detections
    for det in result.detections:
        row = re.search(rf'<tr id="{det.id}">(.*?)</tr>', page, re.S)
        assert row, det.id
        for what in ("before", "after", "change score"):
            assert f'alt="{det.id} {what}"' in row.group(1)
        assert det.klass in row.group(1) and det.change in row.group(1)
        assert f"{det.blob.heading_deg:.0f}&deg;" in row.group(1)
    assert "Change score chips:" in page                 # the colour scale's legend


def test_report_shows_counts_and_coregistration_windows(sample_run):
    result, out = sample_run
    page = (out / "report.html").read_text(encoding="utf-8")
    co = as_report(result.report).coregistration
    assert f"{co.n_windows} measured, {co.n_inliers} inliers" in page
    assert 'alt="shift measured in each matching window"' in page
    total = sum(c.total for c in as_report(result.report).counts.values())
    assert re.search(rf"<tr class=total><td>all</td>.*?<td class=num>{total}</td></tr>", page)
    assert "By zone" not in page   # the default config has no zones


def _blank_pictures() -> pictures.ScenePictures:
    blank = np.full((64, 64, 3), 128, np.uint8)
    return pictures.ScenePictures(blank, blank, 1.0, res_m=0.5)


def test_zone_counts_shown_when_the_report_has_them(sample_run, tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    doc["counts_by_zone"] = {"north apron": {"aircraft": {"appeared": 2, "disappeared": 0}}}
    write_html(tmp_path / "r.html", doc, [], _blank_pictures())
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "By zone" in page and "north apron" in page


def test_write_html_takes_the_model_or_its_dict_alike(sample_run, tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    write_html(tmp_path / "dict.html", doc, [], _blank_pictures())
    write_html(tmp_path / "model.html", as_report(doc), [], _blank_pictures())
    assert (tmp_path / "dict.html").read_bytes() == (tmp_path / "model.html").read_bytes()


def test_what_the_report_holds_is_escaped_in_the_page(sample_run, tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    doc["inputs"]["before"]["path"] = "scenes/<script>alert(1)</script>&co.tif"
    doc["coregistration"]["method"] = "<b>bold</b>"
    write_html(tmp_path / "r.html", doc, [], _blank_pictures())
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;co.tif" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


def test_report_of_an_early_version_renders_without_score_chips(sample_run, sample_pair,
                                                                tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    doc["radiometry"]["noise_sigma"] = doc["radiometry"].pop("score_unit")
    for key in ("applied", "n_windows", "n_inliers", "spread_px"):
        doc["coregistration"].pop(key)
    pics = _scene_pictures(sample_pair, result.detections, doc)
    write_html(tmp_path / "r.html", doc, result.detections, pics)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Change score chips:" not in page and not _score_chips(page)
    assert page.count("<td class=na>no score</td>") == len(result.detections)
    n = len(as_report(doc).coregistration.windows)
    assert f"{n} measured, " in page and "spread of inliers</th><td>&ndash; px" in page


def test_gallery_rows_keep_the_order_of_the_detections(sample_run, sample_pair, tmp_path):
    result, _ = sample_run
    doc = _doc(result)
    doc["config"]["processing"]["threads"] = 2            # rows made on two threads
    dets = [d.with_id(f"d{i + 1:03d}") for i, d in enumerate(result.detections * 2)][::-1]
    write_html(tmp_path / "r.html", doc, dets, _scene_pictures(sample_pair, dets, doc))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert re.findall(r'<tr id="(d\d+)">', page) == [d.id for d in dets]


def test_chips_are_read_through_the_checked_opener(sample_run, sample_pair, tmp_path):
    result, _ = sample_run
    before, after, _ = sample_pair
    doc = _doc(result)
    copies = []
    for src in (before, after):
        copies.append(tmp_path / src.name)
        copies[-1].write_bytes(src.read_bytes())
    with rio.open_raster(copies[0], "BEFORE") as b_ds, rio.open_raster(copies[1], "AFTER") as a_ds:
        grid = rio.grid_of(b_ds)
        b_bands, a_bands = rio.matching_bands(b_ds, a_ds)
        with rio.AfterOnGrid(a_ds, grid, shift_px=run_shift(doc)) as a_vrt:
            pics = pictures.scene_pictures(b_ds, a_vrt, grid, result.detections,
                                           b_bands=b_bands, a_bands=a_bands,
                                           config=_config(doc))
    copies[0].write_bytes(b"")                            # BEFORE emptied before the page
    with pytest.raises(InputError, match="BEFORE file is empty"):
        write_html(tmp_path / "r.html", doc, result.detections, pics)
    assert not (tmp_path / "r.html").exists()             # nothing half-written


def test_two_reports_written_at_once_use_each_its_own_radiometry(sample_run, sample_pair,
                                                                 tmp_path):
    result, _ = sample_run
    dets = [d.with_id(f"d{i + 1:03d}") for i, d in enumerate(result.detections * 4)]
    doc_a = _doc(result)
    doc_a["config"]["processing"]["threads"] = 2
    doc_b = json.loads(json.dumps(doc_a))
    rad = doc_b["radiometry"]                           # another radiometry: other scores
    rad["gains"] = [g * 1.02 for g in rad["gains"]]
    rad["score_unit"] = [u * 2 for u in rad["score_unit"]]
    pics = _scene_pictures(sample_pair, dets, doc_a)
    for name, doc in (("a", doc_a), ("b", doc_b)):      # each alone: the references
        write_html(tmp_path / f"{name}_alone.html", doc, dets, pics)
    start = threading.Barrier(2)
    errors = []

    def write(name, doc):
        try:
            start.wait()
            write_html(tmp_path / f"{name}_together.html", doc, dets, pics)
        except BaseException as err:  # noqa: BLE001 - raised below, on the test's thread
            errors.append(err)

    threads = [threading.Thread(target=write, args=a) for a in (("a", doc_a), ("b", doc_b))]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)      # the threads take turns every few bytecodes: races show
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors
    read = {n: (tmp_path / f"{n}.html").read_text(encoding="utf-8")
            for n in ("a_alone", "b_alone", "a_together", "b_together")}
    chips = {n: _score_chips(page) for n, page in read.items()}
    assert len(chips["a_alone"]) == len(dets)
    assert any(not np.array_equal(chips["a_alone"][i], chips["b_alone"][i]) for i in chips["a_alone"])
    for name in ("a", "b"):
        for det_id, alone in chips[f"{name}_alone"].items():
            assert np.array_equal(chips[f"{name}_together"][det_id], alone), (name, det_id)
        assert read[f"{name}_together"] == read[f"{name}_alone"]


def test_score_chip_counts_noise_units_after_radiometric_map():
    rng = np.random.default_rng(1)
    before = rng.normal(100, 2, (3, 64, 64)).astype(np.float32)
    after = (2 * before + 10).astype(np.float32)        # AFTER = BEFORE on another scale...
    after[:, 20:30, 20:30] += 2 * 60                    # ...plus an object 60 BEFORE units bright
    doc = {"inputs": {"before": {}, "after": {}}, "overlap": 1.0, "detections": 0, "counts": {},
           "coregistration": {"shift_x_px": 0.0, "shift_y_px": 0.0, "quality": 1.0},
           "radiometry": {"gains": [0.5] * 3, "offsets": [-5.0] * 3, "score_unit": [6.0] * 3},
           "config": {"difference": {"smoothing_px": 0.0, "tolerance_px": 1}}}
    recipe = ScoreRecipe.from_report(doc)
    score = score_chip(before, after, np.ones((64, 64), bool), recipe)
    assert score[23:27, 23:27].min() > 8                 # about 60 / 6, less the neighbourhood range
    assert score[45:, 45:].max() < 1e-3                  # the scale change alone scores nothing
    with pytest.raises(ValueError, match="bands"):
        score_chip(before[:2], after[:2], np.ones((64, 64), bool), recipe)


# --- the ordered reader pool the chips are read through ------------------------------------

def test_ordered_map_keeps_order_and_closes_each_workers_handles_on_its_thread():
    opened, closed = [], []

    class Handles:
        def __enter__(self):
            opened.append(threading.get_ident())
            return (threading.get_ident(),)

        def __exit__(self, *exc):
            closed.append(threading.get_ident())

    def slow_first(item, readers):
        if item == 0:
            threading.Event().wait(0.05)                # finishes after later items
        return item, readers[0]

    pool = ReaderPool(Handles, shared=(), workers=3)
    out = list(pool.map_ordered(slow_first, range(20)))
    assert [item for item, _ in out] == list(range(20))
    assert {t for _, t in out} <= set(opened) and sorted(opened) == sorted(closed)
    assert threading.get_ident() not in opened


def test_ordered_map_hands_errors_to_the_consumer():
    class Handles:
        def __enter__(self):
            return ()

        def __exit__(self, *exc):
            pass

    def fail_at_5(item, readers):
        if item == 5:
            raise ValueError("item 5")
        return item

    got = []
    with pytest.raises(ValueError, match="item 5"):
        for v in ReaderPool(Handles, shared=(), workers=2).map_ordered(fail_at_5, range(50)):
            got.append(v)
    assert got == [0, 1, 2, 3, 4]


# --- pictures ---------------------------------------------------------------------------------

def test_overlay_has_legend_strip_with_both_colours(sample_run):
    _, out = sample_run
    img = cv2.cvtColor(cv2.imread(str(out / "overlay.png")), cv2.COLOR_BGR2RGB)
    assert img.shape[1] <= 2000
    strip = img[-40:]
    for colour in draw.CHANGE_COLOURS.values():
        assert np.all(strip == colour, axis=-1).sum() > 20, colour


def test_number_tags_cover_no_outline_and_no_other_tag():
    outlines = [np.array([[20, 30], [40, 30], [40, 40], [20, 40]], float),
                np.array([[44, 30], [64, 30], [64, 40], [44, 40]], float),     # close neighbours
                np.array([[20, 60], [70, 60], [70, 90], [20, 90]], float)]
    sizes = [(12, 14)] * 3
    places = draw._place_tags(outlines, sizes, (120, 120), gap=2)
    rects = [(x, y, x + w, y + h) for (x, y), (w, h) in zip(places, sizes)]
    for i, r in enumerate(rects):
        for pts in outlines:
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            assert not (r[0] < x1 and x0 < r[2] and r[1] < y1 and y0 < r[3]), (r, pts)
        for s in rects[i + 1:]:
            assert not (r[0] < s[2] and s[0] < r[2] and r[1] < s[3] and s[1] < r[3])


def test_shift_arrows_are_exaggerated_to_a_tenth_of_the_picture():
    pic = np.full((200, 300, 3), 128, np.uint8)
    co = Coregistration(shift_x_px=0.0, shift_y_px=0.0, quality=1.0, windows=[
        {"col_px": 100, "row_px": 100, "dx_px": 0.5, "dy_px": 0.0, "inlier": True},
        {"col_px": 300, "row_px": 300, "dx_px": 2.0, "dy_px": 0.0, "inlier": False}])
    img, gain = draw.shift_arrows_image(pic, 0.5, co, 0.5)
    assert gain * 2.0 == pytest.approx(30.0)             # longest arrow: 300 / 10 picture pixels
    assert img.shape[1] == 300 and img.shape[0] > 200     # legend strip below
    none = Coregistration(shift_x_px=0.0, shift_y_px=0.0, quality=1.0)
    assert draw.shift_arrows_image(pic, 0.5, none) is None
