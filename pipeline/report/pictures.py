"""Report: overlay.png, report.html (self-contained) and report.json for one pair.

Pictures are drawn with OpenCV on decimated reads of BEFORE and of AFTER on the BEFORE grid; the
chips of report.html are full-resolution crops around each detection, with their change score
recomputed from the numbers that report.json records (radiometry, score unit, difference config).
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import math
import os
import threading
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from ..io import raster as rio
from ..detect.classify import Detection
from ..config import Config
from ..coreg.shift import Shift
from ..change.difference import change_score
from ..change.radiometry import Radiometry, comparable, normalise

# colour-blind-safe pair (RGB): amber for appeared, sky blue for disappeared
CHANGE_COLOURS = {"appeared": (255, 176, 0), "disappeared": (0, 150, 255)}
CHANGE_MEANING = {"appeared": "in AFTER only", "disappeared": "in BEFORE only"}
PANEL_GAP_PX = 8
CHIP_DISPLAY_PX = 200      # chips narrower than this are enlarged (nearest) to it
ARROW_COLOURS = {True: (40, 220, 90), False: (255, 40, 40)}   # inlier, outlier (RGB)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def display_limits(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B, M, N) values -> (3, 2) display range per shown band: its 2nd and 98th percentiles."""
    bands = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    limits = np.zeros((3, 2), np.float64)
    for k in range(3):
        v = bands[k][valid]
        lo, hi = (np.percentile(v, (2, 98)) if v.size else (0.0, 1.0))
        limits[k] = lo, (hi if hi > lo else lo + 1)
    return limits


def to_display(data: np.ndarray, valid: np.ndarray, limits: np.ndarray | None = None) -> np.ndarray:
    """(B, M, N) values -> (M, N, 3) uint8; invalid pixels black.

    ``limits`` (3, 2) is the value range mapped to 0-255 per shown band (:func:`display_limits`);
    by default the 2-98 % range of ``data`` itself. Chips are drawn with the limits of their whole
    scene, so that a chip of bare concrete does not stretch its noise into texture.
    """
    bands = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    if limits is None:
        limits = display_limits(data, valid)
    out = np.zeros(bands.shape[1:] + (3,), np.uint8)
    for k in range(3):
        lo, hi = limits[k]
        out[..., k] = np.clip((bands[k] - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def detection_label(det_id: str) -> str:
    """The short number drawn on pictures for a detection id: ``d007`` -> ``7``."""
    return det_id.lstrip("d").lstrip("0") or "0"


def picture_grid(grid: rio.Grid, max_side_px: int) -> rio.Grid:
    """``grid`` scaled down (never up) so that its longest side is ``max_side_px``.

    Unlike :func:`pipeline.io.raster.decimated_grid` the factor need not be an integer: a
    1024-pixel scene fills a 1000-pixel panel instead of shrinking to 512.
    """
    s = min(1.0, max_side_px / max(grid.width, grid.height))
    width, height = max(1, round(grid.width * s)), max(1, round(grid.height * s))
    transform = grid.transform @ Affine.scale(grid.width / width, grid.height / height)
    return rio.Grid(grid.crs, transform, width, height,
                    (grid.res_m[0] * grid.width / width, grid.res_m[1] * grid.height / height))


class Overview:
    """Decimated BEFORE and AFTER pictures, filled block by block (:meth:`add`)."""

    def __init__(self, grid: rio.Grid, picture: rio.Grid, n_before: int, n_after: int):
        self.grid = picture
        self._sx = picture.width / grid.width
        self._sy = picture.height / grid.height
        self.before = np.zeros((n_before, picture.height, picture.width), np.float32)
        self.after = np.zeros((n_after, picture.height, picture.width), np.float32)
        self.valid_before = np.zeros((picture.height, picture.width), bool)
        self.valid_after = np.zeros((picture.height, picture.width), bool)

    def add(self, col_off: int, row_off: int, before, valid_before, after, valid_after) -> None:
        """Paste one block (its core: arrays (B, m, n) at ``col_off``, ``row_off``)."""
        h, w = valid_before.shape
        x0, x1 = round(col_off * self._sx), round((col_off + w) * self._sx)
        y0, y1 = round(row_off * self._sy), round((row_off + h) * self._sy)
        if x1 <= x0 or y1 <= y0:
            return
        size = (x1 - x0, y1 - y0)
        for src, dst in ((before, self.before), (after, self.after)):
            dst[:, y0:y1, x0:x1] = _area_resize(_integer_reduce(src, size), size)
        for src, dst in ((valid_before, self.valid_before), (valid_after, self.valid_after)):
            if src.all():
                dst[y0:y1, x0:x1] = True
            else:
                dst[y0:y1, x0:x1] = cv2.resize(src.astype(np.uint8), size,
                                               interpolation=cv2.INTER_NEAREST) > 0


def _integer_reduce(bands: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, m, n) averaged over k x k cells, the largest k that keeps it at least ``size``.

    OpenCV averages by an integer factor several times faster than by any other, so a block
    reduced to a few dozen overview pixels goes that way first; the last k - 1 rows and columns
    at most are left out, less than one overview pixel.
    """
    k = min(bands.shape[2] // max(size[0], 1), bands.shape[1] // max(size[1], 1))
    if k < 2:
        return bands
    h, w = bands.shape[1] // k * k, bands.shape[2] // k * k
    return np.stack([cv2.resize(b[:h, :w], (w // k, h // k), interpolation=cv2.INTER_AREA)
                     for b in bands])


def _area_resize(bands: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, m, n) float32 -> (B, size[1], size[0]), each band averaged over pixel areas.

    Three or four bands go through one call (a third of the time, the same values), except for
    an exact halving, where OpenCV's three-band path rounds differently from its one-band one.
    """
    out = np.empty((bands.shape[0], size[1], size[0]), np.float32)
    halving = size == (bands.shape[2] // 2, bands.shape[1] // 2)
    k = 0
    while k < bands.shape[0]:
        n = min(4, bands.shape[0] - k)
        if n >= 3 and not halving:
            merged = cv2.resize(cv2.merge(list(bands[k:k + n])), size, interpolation=cv2.INTER_AREA)
            out[k:k + n] = merged.reshape(size[1], size[0], n).transpose(2, 0, 1)
        else:
            n = 1
            out[k] = cv2.resize(bands[k], size, interpolation=cv2.INTER_AREA)
        k += n
    return out


def scene_pictures(b_ds, a_vrt, grid: rio.Grid, detections: list[Detection], b_bands, a_bands,
                   config: Config, *, nodata=None, overview=None) -> dict:
    """Decimated BEFORE/AFTER pictures, and full-resolution chips around every detection.

    Returns a dict with ``before``, ``after`` ((M, N, 3) uint8), ``scale`` (picture pixels per
    BEFORE pixel), ``res_m`` (BEFORE pixel size, metres), ``detections``, ``chips``
    ({id: [before, after]} display chips with the outline drawn) and ``chip_data``
    ({id: dict(before, after, valid, window)}: the values read, float32 (B, m, n), for the
    change-score chip of :func:`write_html`); both are mappings that read a chip when it is
    asked for, so memory does not grow with the number of detections. ``overview`` (a :class:`Overview` on the picture
    grid, filled while the blocks were read) saves a second read of both scenes.
    """
    small = picture_grid(grid, max(256, (config.output.overlay_max_px - PANEL_GAP_PX) // 2))
    scale = small.width / grid.width
    if overview is not None and overview.grid == small:
        # built block by block while the pipeline read the scene: no second read
        b, vb, a, va = overview.before, overview.valid_before, overview.after, overview.valid_after
    else:
        b, vb = rio.read_display(b_ds, small, bands=b_bands, nodata=nodata)
        a, va = rio.read_display(a_vrt, small, bands=a_bands, nodata=nodata)
    b_limits, a_limits = display_limits(b, vb), display_limits(a, va)
    half = max(16, int(round(config.output.chip_m / grid.mean_res_m / 2)))
    chips = _Chips(b_ds, a_vrt, grid, detections, b_bands, a_bands, nodata, half,
                   (b_limits, a_limits))
    return {"before": to_display(b, vb, b_limits), "after": to_display(a, va, a_limits),
            "scale": scale, "res_m": grid.mean_res_m, "detections": detections,
            "pixel_frame": grid.pixel_frame,
            "chips": _ChipView(chips, "pictures"), "chip_data": _ChipView(chips, "data")}


class _Chips:
    """The chips of :func:`scene_pictures`, read when asked for, one detection held at a time.

    A large scene has hundreds of detections; holding all their chips until report.html is
    written would make memory grow with the scene. When the run's handles are closed by then,
    the files are opened again by name (closed with this object), and read with a small GDAL
    block cache.
    """

    CACHE_BYTES = 64 * 1024 * 1024

    def __init__(self, b_ds, a_vrt, grid: rio.Grid, detections: list[Detection], b_bands,
                 a_bands, nodata, half_px: int, limits):
        self._given = (b_ds, a_vrt)
        self._given_lock = threading.Lock()  # the run's own handles serve one thread at a time
        self._local = threading.local()  # each thread's own handles and last chip
        self._opened: list = []
        self._args = (grid, b_bands, a_bands, nodata, limits)
        full = Window(0, 0, grid.width, grid.height)
        self.windows = {}
        for det in detections:
            cx, cy = det.blob.centroid_px
            w = Window(int(cx) - half_px, int(cy) - half_px, 2 * half_px, 2 * half_px)
            self.windows[det.id] = (det, w.intersection(full))
        weakref.finalize(self, _close_all, self._opened)

    def _read(self, w: Window):
        """BEFORE and AFTER values and validity in ``w``: through the run's handles while they
        are open, else through this thread's own (the files opened again by name)."""
        grid, b_bands, a_bands, nodata, _ = self._args
        b_ds, a_vrt = self._given
        with rasterio.Env(GDAL_CACHEMAX=self.CACHE_BYTES):
            if not (b_ds.closed or a_vrt.ds.closed):
                with self._given_lock:
                    return (*rio.read_window(b_ds, w, bands=b_bands, nodata=nodata),
                            *rio.read_window(a_vrt, w, bands=a_bands, nodata=nodata))
            readers = getattr(self._local, "readers", None)
            if readers is None:
                b = rasterio.open(b_ds.name)
                a = rasterio.open(a_vrt.ds.name)
                a_grid = rio.AfterOnGrid(a, a_vrt.grid, shift_px=a_vrt.shift_px, nodata=a_vrt.nodata)
                self._opened += [a_grid, a, b]
                readers = self._local.readers = (b, a_grid)
            return (*rio.read_window(readers[0], w, bands=b_bands, nodata=nodata),
                    *rio.read_window(readers[1], w, bands=a_bands, nodata=nodata))

    def get(self, det_id: str) -> tuple[list, dict]:
        """([before, after] display chips, dict(before, after, valid, window)) of a detection."""
        last = getattr(self._local, "last", (None, None))
        if last[0] == det_id:
            return last[1]
        _, _, _, _, (b_limits, a_limits) = self._args
        det, w = self.windows[det_id]
        cb, cvb, ca, cva = self._read(w)
        offset = (int(w.col_off), int(w.row_off))
        chip = ([chip_picture(to_display(cb, cvb, b_limits), det, offset),
                 chip_picture(to_display(ca, cva, a_limits), det, offset)],
                {"before": cb, "after": ca, "valid": cvb & cva, "window": w})
        self._local.last = (det_id, chip)
        return chip


def _close_all(handles: list) -> None:
    for h in handles:
        h.close()


class _ChipView(Mapping):
    """``{detection id: chip}`` over :class:`_Chips`: its display pictures or its data."""

    def __init__(self, chips: _Chips, part: str):
        self._chips, self._index = chips, ("pictures", "data").index(part)

    def __getitem__(self, det_id: str):
        return self._chips.get(det_id)[self._index]

    def __iter__(self):
        return iter(self._chips.windows)

    def __len__(self) -> int:
        return len(self._chips.windows)


def chip_picture(rgb: np.ndarray, det: Detection, offset=(0, 0)) -> np.ndarray:
    """A chip enlarged (nearest) to at least :data:`CHIP_DISPLAY_PX`, its detection outlined."""
    k = max(1, math.ceil(CHIP_DISPLAY_PX / max(rgb.shape[:2])))
    if k > 1:
        rgb = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    return _outline(rgb, det, offset, float(k))


def _outline(img: np.ndarray, det: Detection, offset=(0, 0), scale: float = 1.0,
             thickness: int = 1) -> np.ndarray:
    pts = (np.asarray(det.blob.corners_px) - np.asarray(offset, float) + 0.5) * scale - 0.5
    img = np.ascontiguousarray(img)
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], True,
                  CHANGE_COLOURS[det.change], thickness, cv2.LINE_AA, shift=4)
    return img


def _tag_size(text: str, font_scale: float) -> tuple[int, int, int, int]:
    """Width and height of a tag box, text thickness and padding."""
    thick = max(1, int(round(font_scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, _FONT, font_scale, thick)
    pad = max(2, int(round(3 * font_scale)))
    return tw + 2 * pad, th + 2 * pad, thick, pad


def _tag(img: np.ndarray, text: str, org: tuple[int, int], colour, font_scale: float) -> None:
    """``text`` in black on a box of ``colour`` with a dark border, top-left corner at ``org``."""
    bw, bh, thick, pad = _tag_size(text, font_scale)
    h, w = img.shape[:2]
    x = int(np.clip(org[0], 0, max(0, w - bw - 1)))
    y = int(np.clip(org[1], 0, max(0, h - bh - 1)))
    cv2.rectangle(img, (x, y), (x + bw, y + bh), colour, -1)
    cv2.rectangle(img, (x, y), (x + bw, y + bh), (20, 20, 20), 1)
    cv2.putText(img, text, (x + pad, y + bh - pad), _FONT, font_scale, (0, 0, 0), thick, cv2.LINE_AA)


def _place_tags(outlines: list[np.ndarray], sizes: list[tuple[int, int]], shape: tuple[int, int],
                gap: int) -> list[tuple[int, int]]:
    """Top-left corners for number tags beside their outlines, covering no outline nor tag.

    ``outlines`` are (4, 2) corner arrays in picture pixels. Tries beside the top, right, left
    and bottom corners of each outline and takes the first place inside the picture that covers
    nothing drawn yet (an occupancy raster); falls back on the first.
    """
    h, w = shape
    taken = np.zeros((h, w), np.uint8)
    for pts in outlines:
        cv2.fillPoly(taken, [np.round(pts).astype(np.int32)], 1)
        cv2.polylines(taken, [np.round(pts).astype(np.int32)], True, 1, 2 * gap + 1)
    out = []
    for pts, (bw, bh) in zip(outlines, sizes):
        top, bottom = pts[np.argmin(pts[:, 1])], pts[np.argmax(pts[:, 1])]
        left, right = pts[np.argmin(pts[:, 0])], pts[np.argmax(pts[:, 0])]
        cands = [(top[0] + gap, top[1] - bh - gap), (right[0] + gap, right[1] - bh / 2),
                 (right[0] + gap, right[1] - bh - gap), (left[0] - gap - bw, left[1] - bh / 2),
                 (top[0] - bw / 2, top[1] - gap - bh), (bottom[0] - bw / 2, bottom[1] + gap),
                 (top[0] - bw - gap, top[1] - bh - gap)]
        rects = [(int(round(x)), int(round(y))) for x, y in cands]
        pick = next(((x, y) for x, y in rects if 0 <= x and 0 <= y and x + bw < w and y + bh < h
                     and not taken[y:y + bh + 1, x:x + bw + 1].any()), rects[0])
        x, y = max(0, pick[0]), max(0, pick[1])
        taken[y:y + bh + 1, x:x + bw + 1] = 1
        out.append((x, y))
    return out


def _nice_length_m(target_m: float) -> float:
    """The largest of 1, 2, 5 x 10^k metres not above ``target_m``."""
    if target_m <= 0:
        return 0.0
    k = 10 ** math.floor(math.log10(target_m))
    return max(m * k for m in (1, 2, 5) if m * k <= target_m)


def _scale_bar(img, origin, px_per_m: float, max_px: float, font_scale: float) -> int:
    """Draw a scale bar at ``origin`` (x, baseline y); returns its right end."""
    length_m = _nice_length_m(max_px / px_per_m)
    if length_m <= 0:
        return origin[0]
    x, y = origin
    n = int(round(length_m * px_per_m))
    cv2.rectangle(img, (x, y - 8), (x + n, y), (0, 0, 0), -1)
    cv2.rectangle(img, (x + n // 2, y - 7), (x + n - 1, y - 1), (255, 255, 255), -1)
    label = f"{length_m:g} m"
    cv2.putText(img, label, (x + n + 8, y), _FONT, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return x + n + 8 + cv2.getTextSize(label, _FONT, font_scale, 1)[0][0]


def overlay_image(pictures: dict) -> np.ndarray:
    """BEFORE | AFTER side by side, detections outlined and numbered, with titles and a legend.

    The legend names both colours with their counts, explains the numbers and carries a scale
    bar; text sizes follow the picture's width so the labels stay legible at full size.
    """
    dets: list[Detection] = pictures["detections"]
    scale = pictures["scale"]
    panels = []
    h, w = pictures["before"].shape[:2]
    fs = float(np.clip(w / 1400, 0.45, 0.8))           # label font scale
    line = max(2, int(round(w / 500)))                  # outline thickness
    outlines = [(np.asarray(d.blob.corners_px, float) + 0.5) * scale - 0.5 for d in dets]
    places = _place_tags(outlines, [_tag_size(detection_label(d.id), fs)[:2] for d in dets],
                         (h, w), gap=line + 1)
    for key in ("before", "after"):
        img = np.ascontiguousarray(pictures[key].copy())
        for det in dets:
            img = _outline(img, det, scale=scale, thickness=line)
        for det, place in zip(dets, places):
            _tag(img, detection_label(det.id), place, CHANGE_COLOURS[det.change], fs)
        panels.append(img)
    title_fs = fs * 1.35
    head = int(34 * title_fs / 0.9) + 6
    foot = int(44 * fs / 0.6)
    canvas = np.full((h + head + foot, 2 * w + PANEL_GAP_PX, 3), 255, np.uint8)
    canvas[head:head + h, :w] = panels[0]
    canvas[head:head + h, w + PANEL_GAP_PX:] = panels[1]
    base = head - int(10 * title_fs)
    cv2.putText(canvas, "BEFORE", (6, base), _FONT, title_fs, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(canvas, "AFTER (co-registered onto BEFORE)", (w + PANEL_GAP_PX + 6, base), _FONT,
                title_fs, (0, 0, 0), 2, cv2.LINE_AA)
    y = h + head + foot // 2 + int(8 * fs)
    box = int(22 * fs / 0.6)
    x = 8
    for change, colour in CHANGE_COLOURS.items():
        n = sum(d.change == change for d in dets)
        cv2.rectangle(canvas, (x, y - box + 3), (x + box, y + 3), colour, line + 1)
        label = f"{change} ({n}): {CHANGE_MEANING[change]}"
        cv2.putText(canvas, label, (x + box + 8, y), _FONT, fs, (0, 0, 0), 1, cv2.LINE_AA)
        x += box + 8 + cv2.getTextSize(label, _FONT, fs, 1)[0][0] + int(40 * fs)
    _tag(canvas, "7", (x, y - box + 2), (230, 230, 230), fs * 0.9)
    x += int(26 * fs / 0.6)
    geojson = "detections_px.geojson" if pictures.get("pixel_frame") else "detections.geojson"
    label = f"= detection d007 in report.html and {geojson}"
    cv2.putText(canvas, label, (x, y), _FONT, fs, (0, 0, 0), 1, cv2.LINE_AA)
    x += cv2.getTextSize(label, _FONT, fs, 1)[0][0] + int(40 * fs)
    res_m = pictures.get("res_m")
    if res_m:
        room = canvas.shape[1] - x - int(120 * fs)
        if room > 40:
            _scale_bar(canvas, (x, y), scale / res_m, min(room, w / 5), fs)
    return canvas


def shift_arrows_image(picture: np.ndarray, scale: float, coregistration: dict,
                       res_m: float | None = None) -> tuple[np.ndarray, float] | None:
    """The measured shift of every matching window drawn as an arrow over a scene picture.

    Parameters
    ----------
    picture : (M, N, 3) uint8
        The decimated BEFORE scene.
    scale : float
        Picture pixels per BEFORE pixel.
    coregistration : dict
        ``report.json``'s ``coregistration``, with ``windows`` (``col_px``, ``row_px``,
        ``dx_px``, ``dy_px``, ``inlier``) and the consensus ``shift_x_px``, ``shift_y_px``;
        in local mode its ``local`` field is drawn instead, node by node (green: measured,
        red: filled from the neighbours).
    res_m : float, optional
        BEFORE pixel size, metres, for the reference arrow's label.

    Returns
    -------
    (image, gain) or None
        The picture with a legend strip, and how many picture pixels one BEFORE pixel of shift
        is drawn as; None when no window was measured. Shifts of a pixel or two are invisible
        at true scale: the arrows are exaggerated so that the longest is a tenth of the picture.
    """
    local = coregistration.get("local")
    if local:  # local mode: the smoothed field at its nodes (measured nodes green)
        wins = [{"col_px": c, "row_px": r, "dx_px": local["field_dx_px"][j][i],
                 "dy_px": local["field_dy_px"][j][i], "inlier": bool(local["measured_mask"][j][i])}
                for j, r in enumerate(local["grid_rows_px"])
                for i, c in enumerate(local["grid_cols_px"])]
    else:
        wins = [w for w in coregistration.get("windows") or []
                if all(k in w for k in ("col_px", "row_px", "dx_px", "dy_px"))]
    if not wins:
        return None
    h, w = picture.shape[:2]
    longest = max(math.hypot(v["dx_px"], v["dy_px"]) for v in wins)
    gain = max(w, h) / 10 / max(longest, 0.05)
    img = np.ascontiguousarray(picture.copy())
    img = (img * 0.6 + 255 * 0.4).astype(np.uint8)    # lighten so the arrows stand out
    thick = max(2, int(round(w / 300)))
    for v in wins:
        x0, y0 = v["col_px"] * scale, v["row_px"] * scale
        x1, y1 = x0 + v["dx_px"] * gain, y0 + v["dy_px"] * gain
        colour = ARROW_COLOURS[bool(v.get("inlier", True))]
        cv2.circle(img, (int(x0), int(y0)), thick + 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.arrowedLine(img, (int(x0), int(y0)), (int(x1), int(y1)), (0, 0, 0), thick + 2,
                        cv2.LINE_AA, tipLength=0.25)
        cv2.arrowedLine(img, (int(x0), int(y0)), (int(x1), int(y1)), colour, thick, cv2.LINE_AA,
                        tipLength=0.25)
    fs = float(np.clip(w / 900, 0.45, 0.8))
    foot = int(40 * fs / 0.5)
    canvas = np.full((h + foot, w, 3), 255, np.uint8)
    canvas[:h] = img
    y = h + foot // 2 + 6
    ref = int(round(gain))
    cv2.arrowedLine(canvas, (8, y - 5), (8 + ref, y - 5), (0, 0, 0), thick, cv2.LINE_AA,
                    tipLength=min(0.5, 12 / max(ref, 1)))
    one = f" ({res_m:.2g} m)" if res_m else ""
    kinds = "green: measured node, red: filled node" if local else "green: inlier, red: outlier"
    label = f"= 1 px{one} of shift (x{gain / scale:.0f}); {kinds}"
    cv2.putText(canvas, label, (16 + ref, y), _FONT, fs, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas, gain


def score_chip(before: np.ndarray, after: np.ndarray, valid: np.ndarray, report: dict,
               window: Window | None = None) -> np.ndarray:
    """Recompute the change score of a chip from the numbers report.json records.

    Parameters
    ----------
    before, after : (B, M, N) float32
        BEFORE and AFTER values on the BEFORE grid (AFTER co-registered, not yet normalised).
    valid : (M, N) bool
        Pixels valid in both.
    report : dict
        ``report.json``: its ``radiometry`` (``gains``, ``offsets``, ``level``, ``score_unit``)
        and ``config.difference`` (``smoothing_px``, ``tolerance_px``).
    window : rasterio Window, optional
        Where the chip lies on the BEFORE grid; needed when the radiometry has a ``level`` field.

    Returns
    -------
    (M, N) float32
        Change score in noise standard deviations, as :func:`pipeline.change.difference.change_score`
        gives it inside the pipeline (up to the chip's border, where the smoothing sees less).
    """
    rad = report["radiometry"]
    diff = report["config"]["difference"]
    b, a = comparable(before, after)
    if len(rad["gains"]) != b.shape[0] or len(rad["score_unit"]) != b.shape[0]:
        raise ValueError(f"report radiometry has {len(rad['gains'])} bands, the chip {b.shape[0]}")
    a = normalise(a, _radiometry_of(rad), window)
    return change_score(b, a, valid, np.asarray(rad["score_unit"], np.float32),
                        smoothing_px=float(diff["smoothing_px"]),
                        tolerance_px=int(diff["tolerance_px"]))


def _level_note(rad: dict, e) -> str:
    """The level field in a few words: how many nodes, and how far it strays."""
    level = rad.get("level")
    if not level:
        return ""
    nodes = len(level["node_cols_px"]) * len(level["node_rows_px"])
    return (f", then a local level field of {nodes} nodes subtracted (standard deviation "
            f"{e(str(level['std']))}, range {e(str(level['min']))} to {e(str(level['max']))})")


_PARSED: list = [None, None]  # the last report radiometry read, and its Radiometry


def _radiometry_of(rad: dict) -> Radiometry:
    """``Radiometry.from_dict(rad)``, parsed once for the many chips of one report."""
    if _PARSED[0] is not rad:
        _PARSED[:] = [rad, Radiometry.from_dict(rad)]
    return _PARSED[1]


def colour_score(score: np.ndarray, top_sigma: float) -> np.ndarray:
    """(M, N) score -> (M, N, 3) uint8 RGB on the inferno scale, 0 to ``top_sigma`` (clipped)."""
    v = np.clip(score / max(top_sigma, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(v, cv2.COLORMAP_INFERNO)[..., ::-1].copy()


def score_colour_stops(n: int = 6) -> list[str]:
    """CSS colours of the score scale, low to high (for a colour bar)."""
    ramp = cv2.applyColorMap(np.linspace(0, 255, n).astype(np.uint8)[None], cv2.COLORMAP_INFERNO)
    return ["#%02x%02x%02x" % tuple(int(c) for c in bgr[::-1]) for bgr in ramp[0]]


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


def _jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _img_tag(rgb: np.ndarray, alt: str, css_class: str = "", *, photo: bool = False) -> str:
    """An <img> with the picture inline; ``photo``: JPEG (a scene overview is a photograph, and
    as PNG it would make the page several times larger), else PNG (exact pixels of chips)."""
    if photo:
        data, mime = base64.b64encode(_jpeg(rgb)).decode(), "image/jpeg"
    else:
        data, mime = base64.b64encode(_png(rgb)).decode(), "image/png"
    cls = f' class="{css_class}"' if css_class else ""
    return (f'<img alt="{html.escape(alt)}"{cls} width="{rgb.shape[1]}" height="{rgb.shape[0]}" '
            f'src="data:{mime};base64,{data}">')


def zone_counts(report: dict, detections: list[Detection]) -> dict | None:
    """Counts by zone, category and change, or None when the run has no zones.

    Taken from ``report["counts_by_zone"]`` (``{zone: {category: {change: n}}}``) when the
    pipeline wrote it, else from a ``zone`` attribute of the detections.
    """
    if isinstance(report.get("counts_by_zone"), dict) and report["counts_by_zone"]:
        return report["counts_by_zone"]
    zoned = [d for d in detections if getattr(d, "zone", None)]
    if not zoned:
        return None
    out: dict = {}
    for d in zoned:
        cat = out.setdefault(d.zone, {}).setdefault(d.category, {"appeared": 0, "disappeared": 0})
        cat[d.change] = cat.get(d.change, 0) + 1
    return out


def _counts_table(counts_by_cat: dict, e) -> str:
    rows, tot_a, tot_d = [], 0, 0
    for cat, c in counts_by_cat.items():
        a, d = int(c.get("appeared", 0)), int(c.get("disappeared", 0))
        tot_a, tot_d = tot_a + a, tot_d + d
        rows.append(f"<tr><td>{e(cat)}</td><td class=num>{a}</td><td class=num>{d}</td>"
                    f"<td class=num>{a + d}</td></tr>")
    rows.append(f"<tr class=total><td>all</td><td class=num>{tot_a}</td><td class=num>{tot_d}</td>"
                f"<td class=num>{tot_a + tot_d}</td></tr>")
    return ("<table><tr><th>category</th><th class=appeared>appeared</th>"
            "<th class=disappeared>disappeared</th><th>total</th></tr>" + "".join(rows) + "</table>")


def _zone_table(zones: dict, e) -> str:
    rows = []
    for zone, cats in zones.items():
        for cat, c in cats.items():
            a, d = int(c.get("appeared", 0)), int(c.get("disappeared", 0))
            rows.append(f"<tr><td>{e(str(zone))}</td><td>{e(cat)}</td><td class=num>{a}</td>"
                        f"<td class=num>{d}</td></tr>")
    return ("<h3>By zone</h3><table><tr><th>zone</th><th>category</th><th class=appeared>appeared"
            "</th><th class=disappeared>disappeared</th></tr>" + "".join(rows) + "</table>")


def _local_field_row(co: dict) -> str:
    """A table row on the local shift field, when the run measured one."""
    local = co.get("local")
    if not isinstance(local, dict):
        return ""
    try:
        dx, dy = local["dx_px"], local["dy_px"]
        return (f"<tr><th>local shift field</th><td>{local['measured']} of {local['nodes']} nodes "
                f"measured; dx {dx['min']:+.2f} to {dx['max']:+.2f} px, dy {dy['min']:+.2f} to "
                f"{dy['max']:+.2f} px</td></tr>")
    except (KeyError, TypeError):
        return "<tr><th>local shift field</th><td>measured (see report.json)</td></tr>"


def _coregistration_html(co: dict, pictures: dict, e) -> str:
    def num(key, fmt):
        v = co.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "&ndash;"

    n_win = co.get("n_windows", len(co.get("windows") or []))
    n_in = co.get("n_inliers", sum(bool(w.get("inlier")) for w in co.get("windows") or []))
    applied = "yes" if co.get("applied", True) else "<b>no</b> (reprojection alone)"
    table = f"""<table class=kv>
<tr><th>shift x (right)</th><td>{num('shift_x_px', '+.3f')} px ({num('shift_x_m', '+.2f')} m east)</td></tr>
<tr><th>shift y (down)</th><td>{num('shift_y_px', '+.3f')} px ({num('shift_y_m', '+.2f')} m north)</td></tr>
<tr><th>quality</th><td>{num('quality', '.2f')} (0 to 1)</td></tr>
<tr><th>method</th><td>{e(str(co.get('method', '')))}</td></tr>
<tr><th>windows</th><td>{n_win} measured, {n_in} inliers</td></tr>
<tr><th>spread of inliers</th><td>{num('spread_px', '.3f')} px</td></tr>
<tr><th>applied</th><td>{applied}</td></tr>{_local_field_row(co)}</table>
<p class=note>The shift is AFTER's content relative to BEFORE, as measured before it was removed.</p>"""
    arrows = None
    if "before" in pictures and "scale" in pictures:
        arrows = shift_arrows_image(pictures["before"], pictures["scale"], co, pictures.get("res_m"))
    if arrows is None:
        return f"<div class=row><div>{table}</div></div>"
    img, gain = arrows
    return (f"<div class=row><div>{table}</div><figure>"
            f"{_img_tag(img, 'shift measured in each matching window', 'arrows', photo=True)}"
            f"<figcaption>Shift of each matching window, exaggerated x{gain / pictures['scale']:.0f}"
            f" (arrow from the window's centre).</figcaption></figure></div>")


def _gallery_rows(report: dict, detections: list[Detection], pictures: dict, e):
    """The gallery's table rows, made one at a time as the file is written (a scene's chips
    need not all sit in memory), and whether score chips could be drawn."""
    diff = report.get("config", {}).get("difference", {})
    top = 2.0 * float(diff.get("threshold_sigma", 5.0))

    def score_of(d: Detection):
        data = pictures.get("chip_data", {}).get(d.id)
        if data is None:
            return None, None
        try:
            return score_chip(data["before"], data["after"], data["valid"], report,
                              data.get("window")), data
        except (KeyError, ValueError):
            return None, data

    def row(d: Detection) -> str:
        b, a = pictures["chips"][d.id]
        s, data = score_of(d)
        score_cell = "<td class=na>no score</td>"
        if s is not None:
            w = data["window"]
            picture = chip_picture(colour_score(s, top), d, (int(w.col_off), int(w.row_off)))
            score_cell = f"<td>{_img_tag(picture, d.id + ' change score', 'chip')}</td>"
        colour = "#%02x%02x%02x" % CHANGE_COLOURS[d.change]
        return (
            f'<tr id="{e(d.id)}"><td class=idcell><span class=tag style="background:{colour}">'
            f"{e(detection_label(d.id))}</span><br>{e(d.id)}</td>"
            f"<td>{_img_tag(b, d.id + ' before', 'chip')}</td>"
            f"<td>{_img_tag(a, d.id + ' after', 'chip')}</td>{score_cell}"
            f"<td class=nw><b>{e(d.klass)}</b><br>{e(d.category)}</td>"
            f"<td class={e(d.change)}>{e(d.change)}</td>"
            f"<td class=nw>{d.blob.length_m:.1f} &times; {d.blob.width_m:.1f} m<br>{d.blob.area_m2:.0f} m&sup2;</td>"
            f"<td class=num>{d.blob.heading_deg:.0f}&deg;</td>"
            f"<td class=num>{d.score:.2f}<br><span class=note>{d.blob.mean_score:.1f} &sigma;</span></td></tr>")

    def rows():
        # chips are read, scored and encoded on ``threads`` threads (GDAL, OpenCV and zlib
        # release the GIL), in order, with a few rows ahead at most
        threads = report.get("config", {}).get("processing", {}).get("threads") or os.cpu_count() or 1
        if threads < 2 or len(detections) < 4:
            yield from map(row, detections)
            return
        with ThreadPoolExecutor(threads) as pool:
            ahead = []
            for d in detections:
                ahead.append(pool.submit(row, d))
                if len(ahead) > 2 * threads:
                    yield ahead.pop(0).result()
            for f in ahead:
                yield f.result()

    # the legend stands above the rows: usually the first detection settles it
    any_score = any(score_of(d)[0] is not None for d in detections)
    return rows(), any_score


_GALLERY_ROWS = "\x00gallery rows\x00"  # where write_html streams the rows into the page


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1500px; padding: 0 1em; color: #222; line-height: 1.4; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
th { background: #f3f3f3; } td.num { text-align: right; } tr.total td { font-weight: bold; }
table.kv th { width: 11em; }
img.overview, img.arrows { max-width: 100%; height: auto; border: 1px solid #ccc; }
img.arrows { max-width: 560px; }
img.chip { width: 180px; height: auto; display: block; }
.appeared { color: #9a6a00; font-weight: bold; } .disappeared { color: #0060c0; font-weight: bold; }
td.idcell { text-align: center; font-family: monospace; }
.tag { display: inline-block; min-width: 1.6em; padding: 1px 4px; border: 1px solid #222;
       font-weight: bold; text-align: center; }
.note { color: #666; font-size: 0.9em; } .na { color: #999; } .nw { white-space: nowrap; }
th .note { font-weight: normal; }
.row { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; } figcaption { color: #555; font-size: 0.9em; max-width: 560px; }
.colourbar { display: inline-block; width: 200px; height: 12px; vertical-align: middle;
             border: 1px solid #888; }
.summary { font-size: 1.1em; }
"""


def _frame_note(report: dict, e) -> str:
    if report.get("grid", {}).get("frame") != "pixel":
        return ""
    gsd = report["grid"]["pixel_size_m"][0]
    return (f"<p class=warning>The inputs have no georeference: they were placed on a nominal "
            f"grid of {e(f'{gsd:g}')} m pixels (--gsd). Detections are in pixel coordinates of "
            "BEFORE (x right, y down) in detections_px.geojson; there is no map position.</p>")


def write_html(path: str | Path, report: dict, detections: list[Detection], pictures: dict) -> Path:
    """One self-contained HTML file (pictures as data URIs) that an analyst reviews in a browser.

    Sections: a summary, the BEFORE/AFTER overview with detections outlined and numbered,
    counts by category and change (and by zone when the run has zones), the co-registration
    (numbers and the shift of each matching window drawn as arrows), the inputs, and a gallery
    with one row per detection: BEFORE, AFTER and change-score chips, class, change, size,
    heading and score.
    """
    e = html.escape
    co = report["coregistration"]
    rows, any_score = _gallery_rows(report, detections, pictures, e)
    by_change = {c: sum(d.change == c for d in detections) for c in CHANGE_COLOURS}
    zones = zone_counts(report, detections)
    inputs = "".join(
        f"<tr><td>{e(k)}</td><td>{e(str(v.get('path', '')))}</td><td>{e(str(v.get('crs', '')))}</td>"
        f"<td>{v.get('width')} &times; {v.get('height')}</td><td>{v['pixel_size_m'][0]:.3g} m</td>"
        f"<td>{v.get('bands')} &times; {e(str(v.get('dtype', '')))}</td></tr>"
        for k, v in report["inputs"].items())
    rad = report.get("radiometry", {})
    diff = report.get("config", {}).get("difference", {})
    thr = float(diff.get("threshold_sigma", 5.0))
    chip_m = report.get("config", {}).get("output", {}).get("chip_m")
    stops = ", ".join(score_colour_stops())
    score_legend = (f"<p class=note>Change score chips: <span class=colourbar style=\"background: "
                    f"linear-gradient(to right, {stops})\"></span> 0 to {2 * thr:g} noise "
                    f"&sigma; (seed threshold {thr:g} &sigma;, middle of the bar).</p>"
                    if any_score else "")
    names = " &rarr; ".join(e(Path(str(v.get("path", k))).name) for k, v in report["inputs"].items())
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in report.get("timings_s", {}).items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>detect-changes report: {names}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}</style></head><body>
<h1>Change detections</h1>
<p class=note>{names}</p>
<p class=summary><b>{len(detections)}</b> detections:
<span class=appeared>{by_change['appeared']} appeared</span> (in AFTER only),
<span class=disappeared>{by_change['disappeared']} disappeared</span> (in BEFORE only).
AFTER shifted by {co['shift_x_px']:+.2f}, {co['shift_y_px']:+.2f} px (quality {co['quality']:.2f});
{report['overlap']:.0%} of BEFORE covered by AFTER.</p>
{_frame_note(report, e)}
<h2>Overview</h2>
<p class=note>Outlines are each object's minimum-area rectangle; the numbers are the detection ids
of the table below (7 = d007).</p>
{_img_tag(overlay_image(pictures), "overview of BEFORE and AFTER with detections", 'overview', photo=True)}
<h2>Counts</h2>
{_counts_table(report['counts'], e)}
{_zone_table(zones, e) if zones else ''}
<h2>Co-registration</h2>
{_coregistration_html(co, pictures, e)}
<h2>Inputs</h2>
<table><tr><th></th><th>path</th><th>CRS</th><th>size</th><th>pixel</th><th>bands</th></tr>{inputs}</table>
<p class=note>Radiometry: {e(str(rad.get('method', '')))} ({e(str(rad.get('mode', '')))}), gains
{e(str(rad.get('gains', '')))}, offsets {e(str(rad.get('offsets', '')))}{_level_note(rad, e)}; score unit (noise &sigma;)
{e(str(rad.get('score_unit', '')))}{'; structure unit ' + e(str(rad['structure_unit']))
if rad.get('structure_unit') else ''}.</p>
<h2>Detections</h2>
<p class=note>Chips are {f'{chip_m:g} m' if chip_m else 'a fixed size'} across, centred on the
detection, at full resolution, BEFORE and AFTER on the same grid; score: confidence 0 to 1, and
the blob's mean change score in noise &sigma;.</p>
{score_legend}
<table class=gallery><tr><th>#</th><th>BEFORE</th><th>AFTER</th><th>change score</th><th>class</th>
<th>change</th><th>size<br><span class=note>length &times; width, area</span></th>
<th>heading<br><span class=note>from north</span></th><th>score<br><span class=note>0 to 1</span></th></tr>
{_GALLERY_ROWS}</table>
<p class=note>detect-changes {e(str(report.get('version', '')))}{'; ' + e(timings) if timings else ''}</p>
</body></html>
"""
    head, tail = page.split(_GALLERY_ROWS)
    rio.write_parts_atomic(path, itertools.chain([head], rows, [tail]))
    return Path(path)
