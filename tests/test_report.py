"""report.py: the self-contained report.html, the overlay's legend and labels, score chips."""
from __future__ import annotations

import json
import re

import cv2
import numpy as np
import pytest

from pipeline.report import pictures as report
from pipeline.run import run_pair


@pytest.fixture(scope="module")
def sample_run(sample_pair, tmp_path_factory):
    before, after, _ = sample_pair
    out = tmp_path_factory.mktemp("report") / "hmeimim"
    result = run_pair(before, after, out)
    return result, out


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


def test_report_shows_counts_and_coregistration_windows(sample_run):
    result, out = sample_run
    page = (out / "report.html").read_text(encoding="utf-8")
    co = result.report["coregistration"]
    assert f"{co['n_windows']} measured, {co['n_inliers']} inliers" in page
    assert 'alt="shift measured in each matching window"' in page
    total = sum(c["appeared"] + c["disappeared"] for c in result.report["counts"].values())
    assert re.search(rf"<tr class=total><td>all</td>.*?<td class=num>{total}</td></tr>", page)
    assert "By zone" not in page   # the default config has no zones


def test_zone_counts_shown_when_the_report_has_them(sample_run, tmp_path):
    result, out = sample_run
    doc = json.loads((out / "report.json").read_text())
    doc["counts_by_zone"] = {"north apron": {"aircraft": {"appeared": 2, "disappeared": 0}}}
    blank = np.full((64, 64, 3), 128, np.uint8)
    pictures = {"before": blank, "after": blank, "scale": 1.0, "res_m": 0.5, "detections": [],
                "chips": {}}
    report.write_html(tmp_path / "r.html", doc, [], pictures)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "By zone" in page and "north apron" in page


def test_score_chip_counts_noise_units_after_radiometric_map():
    rng = np.random.default_rng(1)
    before = rng.normal(100, 2, (3, 64, 64)).astype(np.float32)
    after = (2 * before + 10).astype(np.float32)        # AFTER = BEFORE on another scale...
    after[:, 20:30, 20:30] += 2 * 60                    # ...plus an object 60 BEFORE units bright
    doc = {"radiometry": {"gains": [0.5] * 3, "offsets": [-5.0] * 3, "score_unit": [6.0] * 3},
           "config": {"difference": {"smoothing_px": 0.0, "tolerance_px": 1}}}
    score = report.score_chip(before, after, np.ones((64, 64), bool), doc)
    assert score[23:27, 23:27].min() > 8                 # about 60 / 6, less the neighbourhood range
    assert score[45:, 45:].max() < 1e-3                  # the scale change alone scores nothing


def test_overlay_has_legend_strip_with_both_colours(sample_run):
    _, out = sample_run
    img = cv2.cvtColor(cv2.imread(str(out / "overlay.png")), cv2.COLOR_BGR2RGB)
    assert img.shape[1] <= 2000
    strip = img[-40:]
    for colour in report.CHANGE_COLOURS.values():
        assert np.all(strip == colour, axis=-1).sum() > 20, colour


def test_number_tags_cover_no_outline_and_no_other_tag():
    outlines = [np.array([[20, 30], [40, 30], [40, 40], [20, 40]], float),
                np.array([[44, 30], [64, 30], [64, 40], [44, 40]], float),     # close neighbours
                np.array([[20, 60], [70, 60], [70, 90], [20, 90]], float)]
    sizes = [(12, 14)] * 3
    places = report._place_tags(outlines, sizes, (120, 120), gap=2)
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
    co = {"windows": [{"col_px": 100, "row_px": 100, "dx_px": 0.5, "dy_px": 0.0, "inlier": True},
                      {"col_px": 300, "row_px": 300, "dx_px": 2.0, "dy_px": 0.0, "inlier": False}]}
    img, gain = report.shift_arrows_image(pic, 0.5, co, 0.5)
    assert gain * 2.0 == pytest.approx(30.0)             # longest arrow: 300 / 10 picture pixels
    assert img.shape[1] == 300 and img.shape[0] > 200     # legend strip below
    assert report.shift_arrows_image(pic, 0.5, {"windows": []}) is None
