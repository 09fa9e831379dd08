"""Report: overlay.png, report.html (self-contained) and report.json for one pair.

Pictures are drawn with OpenCV on decimated reads of BEFORE and of AFTER on the BEFORE grid.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import cv2
import numpy as np
from rasterio.windows import Window

from . import rasterio_io as rio
from .classify import Detection
from .config import Config
from .coregister import Shift

# colour-blind-safe pair (RGB): amber for appeared, sky blue for disappeared
CHANGE_COLOURS = {"appeared": (255, 176, 0), "disappeared": (0, 150, 255)}
PANEL_GAP_PX = 8


def to_display(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, M, N) values -> (M, N, 3) uint8 with a 2-98 % stretch per band; invalid pixels black."""
    bands = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    out = np.zeros(bands.shape[1:] + (3,), np.uint8)
    for k in range(3):
        v = bands[k][valid]
        lo, hi = (np.percentile(v, (2, 98)) if v.size else (0.0, 1.0))
        hi = hi if hi > lo else lo + 1
        out[..., k] = np.clip((bands[k] - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def scene_pictures(b_ds, a_vrt, grid: rio.Grid, detections: list[Detection], b_bands, a_bands,
                   config: Config, *, nodata=None) -> dict:
    """Decimated BEFORE/AFTER pictures and a before/after chip per detection."""
    panel_max = max(256, config.output.overlay_max_px // 2)
    small, _ = rio.decimated_grid(grid, panel_max)
    scale = small.width / grid.width
    b, vb = rio.read_display(b_ds, small, bands=b_bands, nodata=nodata)
    a, va = rio.read_display(a_vrt, small, bands=a_bands, nodata=nodata)
    chips = {}
    half = max(16, int(round(config.output.chip_m / grid.mean_res_m / 2)))
    for det in detections:
        cx, cy = det.blob.centroid_px
        w = Window(int(cx) - half, int(cy) - half, 2 * half, 2 * half)
        w = w.intersection(Window(0, 0, grid.width, grid.height))
        cb, cvb = rio.read_window(b_ds, w, bands=b_bands, nodata=nodata)
        ca, cva = rio.read_window(a_vrt, w, bands=a_bands, nodata=nodata)
        offset = (w.col_off, w.row_off)
        chips[det.id] = [_outline(to_display(c, v), det, offset, 1.0) for c, v in ((cb, cvb), (ca, cva))]
    return {"before": to_display(b, vb), "after": to_display(a, va), "scale": scale,
            "detections": detections, "chips": chips}


def _outline(img: np.ndarray, det: Detection, offset=(0, 0), scale: float = 1.0,
             thickness: int = 1) -> np.ndarray:
    pts = (np.asarray(det.blob.corners_px) - np.asarray(offset, float) + 0.5) * scale - 0.5
    img = np.ascontiguousarray(img)
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], True,
                  CHANGE_COLOURS[det.change], thickness, cv2.LINE_AA, shift=4)
    return img


def overlay_image(pictures: dict) -> np.ndarray:
    """BEFORE | AFTER side by side, detections outlined and numbered, with a title and legend."""
    dets: list[Detection] = pictures["detections"]
    scale = pictures["scale"]
    panels = []
    for key in ("before", "after"):
        img = pictures[key].copy()
        for det in dets:
            img = _outline(img, det, scale=scale, thickness=2)
            c0, r0, c1, r1 = det.blob.bbox_px
            x = int(c1 * scale) + 2
            y = max(12, int(r0 * scale) + 10)
            _text(img, det.id.lstrip("d").lstrip("0") or "0", (x, y), CHANGE_COLOURS[det.change], 0.45)
        panels.append(img)
    h, w = panels[0].shape[:2]
    head, foot = 34, 30
    canvas = np.full((h + head + foot, 2 * w + PANEL_GAP_PX, 3), 255, np.uint8)
    canvas[head:head + h, :w] = panels[0]
    canvas[head:head + h, w + PANEL_GAP_PX:] = panels[1]
    _text(canvas, "BEFORE", (6, 24), (0, 0, 0), 0.7, 2)
    _text(canvas, "AFTER (co-registered)", (w + PANEL_GAP_PX + 6, 24), (0, 0, 0), 0.7, 2)
    x = 6
    for change, colour in CHANGE_COLOURS.items():
        n = sum(d.change == change for d in dets)
        cv2.rectangle(canvas, (x, h + head + 9), (x + 22, h + head + 21), colour, -1)
        label = f"{change} ({n})"
        _text(canvas, label, (x + 28, h + head + 21), (0, 0, 0), 0.55, 1)
        x += 40 + 11 * len(label)
    _text(canvas, "numbers = detection ids in report.html", (x + 10, h + head + 21), (90, 90, 90), 0.45)
    return canvas


def _text(img, text, org, colour, scale=0.5, thickness=1):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255) if sum(colour) < 600 else (0, 0, 0),
                thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_overlay(path: str | Path, pictures: dict) -> Path:
    rio.write_bytes_atomic(path, _png(overlay_image(pictures)))
    return Path(path)


def counts(detections: list[Detection], config: Config) -> dict:
    """Counts by category and change: ``{category: {appeared: n, disappeared: n}}``."""
    cats = sorted({c.category for c in config.classes})
    out = {c: {"appeared": 0, "disappeared": 0} for c in cats}
    for d in detections:
        out.setdefault(d.category, {"appeared": 0, "disappeared": 0})[d.change] += 1
    return out


def coregistration_section(shift: Shift | None, grid: rio.Grid, allow_unregistered: bool) -> dict:
    """The ``coregistration`` member of report.json."""
    if shift is None:
        return {"shift_x_px": 0.0, "shift_y_px": 0.0, "shift_x_m": 0.0, "shift_y_m": 0.0,
                "quality": 0.0, "method": "none (unregistered)" if allow_unregistered else "disabled",
                "applied": False, "windows": []}
    t = grid.transform
    # map displacement of a content moving by (dx, dy) pixels: east, north
    dx_map, dy_map = t.a * shift.dx_px + t.b * shift.dy_px, t.d * shift.dx_px + t.e * shift.dy_px
    unit = grid.res_m[0] / max(abs(t.a), 1e-12)
    return {
        "shift_x_px": round(shift.dx_px, 4), "shift_y_px": round(shift.dy_px, 4),
        "shift_x_m": round(dx_map * unit, 3), "shift_y_m": round(dy_map * unit, 3),
        "quality": shift.quality, "method": shift.method, "applied": shift.method != "none (unregistered)",
        "spread_px": shift.spread_px, "n_windows": len(shift.windows), "n_inliers": shift.n_inliers,
        "windows": [{"col_px": w.col_px, "row_px": w.row_px, "dx_px": round(w.dx_px, 4),
                     "dy_px": round(w.dy_px, 4), "peak": round(w.peak, 4), "inlier": w.inlier}
                    for w in shift.windows],
    }


def write_json(path: str | Path, report: dict) -> Path:
    rio.write_text_atomic(path, json.dumps(report, indent=1, default=str))
    return Path(path)


def _img_tag(rgb: np.ndarray, alt: str, css: str = "") -> str:
    data = base64.b64encode(_png(rgb)).decode()
    return f'<img alt="{html.escape(alt)}" {css} src="data:image/png;base64,{data}">'


def write_html(path: str | Path, report: dict, detections: list[Detection], pictures: dict) -> Path:
    """One self-contained HTML file: overview, counts, co-registration, a row per detection."""
    e = html.escape
    co = report["coregistration"]
    rows = []
    for d in detections:
        b, a = pictures["chips"][d.id]
        rows.append(
            f"<tr><td>{e(d.id)}</td><td>{_img_tag(b, d.id + ' before', 'class=chip')}</td>"
            f"<td>{_img_tag(a, d.id + ' after', 'class=chip')}</td>"
            f"<td>{e(d.category)}<br><b>{e(d.klass)}</b></td>"
            f"<td class={e(d.change)}>{e(d.change)}</td>"
            f"<td>{d.blob.length_m:.1f} x {d.blob.width_m:.1f} m<br>{d.blob.area_m2:.0f} m&sup2;</td>"
            f"<td>{d.blob.heading_deg:.0f}&deg;</td><td>{d.score:.2f}</td></tr>")
    count_rows = "".join(
        f"<tr><td>{e(cat)}</td><td>{c['appeared']}</td><td>{c['disappeared']}</td></tr>"
        for cat, c in report["counts"].items())
    inputs = "".join(
        f"<tr><td>{e(k)}</td><td>{e(v['path'])}</td><td>{e(v['crs'])}</td>"
        f"<td>{v['width']} x {v['height']}</td><td>{v['pixel_size_m'][0]:.3g} m</td>"
        f"<td>{v['bands']} x {e(v['dtype'])}</td></tr>" for k, v in report["inputs"].items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>detect-changes report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }}
img.overview {{ max-width: 100%; }} img.chip {{ width: 160px; height: 160px; image-rendering: pixelated; }}
td.appeared {{ color: #b07800; font-weight: bold; }} td.disappeared {{ color: #0060c0; font-weight: bold; }}
</style></head><body>
<h1>Change detections</h1>
<p>{len(detections)} detections. Amber outlines: appeared (in AFTER only); blue: disappeared (in BEFORE only).</p>
{_img_tag(overlay_image(pictures), "overview of BEFORE and AFTER with detections", 'class=overview')}
<h2>Counts</h2>
<table><tr><th>category</th><th>appeared</th><th>disappeared</th></tr>{count_rows}</table>
<h2>Inputs</h2>
<table><tr><th></th><th>path</th><th>CRS</th><th>size</th><th>pixel</th><th>bands</th></tr>{inputs}</table>
<p>Overlap (BEFORE covered by valid AFTER): {report['overlap']:.1%}</p>
<h2>Co-registration</h2>
<table><tr><th>shift x</th><th>shift y</th><th>quality</th><th>method</th></tr>
<tr><td>{co['shift_x_px']:+.3f} px ({co['shift_x_m']:+.2f} m)</td><td>{co['shift_y_px']:+.3f} px ({co['shift_y_m']:+.2f} m)</td>
<td>{co['quality']:.2f}</td><td>{e(str(co['method']))}</td></tr></table>
<h2>Detections</h2>
<table><tr><th>id</th><th>BEFORE</th><th>AFTER</th><th>class</th><th>change</th><th>size</th><th>heading</th><th>score</th></tr>
{''.join(rows)}</table>
<p style="color:#777">detect-changes {e(report['version'])}</p>
</body></html>
"""
    rio.write_text_atomic(path, page)
    return Path(path)
