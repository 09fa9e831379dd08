"""Drawing: scene pictures stretched for display, detection outlines and number tags, the
overlay's panels and legend, the shift arrows, the change-score colour scale, PNG/JPEG encoding.

Pure functions of arrays (OpenCV); they read no file and hold no state.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from ..detect.classify import Detection
from .model import Coregistration

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


def chip_picture(rgb: np.ndarray, det: Detection, offset=(0, 0)) -> np.ndarray:
    """A chip enlarged (nearest) to at least :data:`CHIP_DISPLAY_PX`, its detection outlined."""
    k = max(1, math.ceil(CHIP_DISPLAY_PX / max(rgb.shape[:2])))
    if k > 1:
        rgb = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    return _outline(rgb, det, offset, float(k))


def _outline(img: np.ndarray, det: Detection, offset=(0, 0), scale: float = 1.0,
              thickness: int = 1) -> np.ndarray:
    """``det``'s rectangle drawn in its change colour; ``offset``: the BEFORE pixel at the
    picture's (0, 0), ``scale``: picture pixels per BEFORE pixel."""
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


def overlay_image(before: np.ndarray, after: np.ndarray, detections: Sequence[Detection], *,
                  scale: float, res_m: float | None = None, pixel_frame: bool = False
                  ) -> np.ndarray:
    """BEFORE | AFTER side by side, detections outlined and numbered, with titles and a legend.

    Parameters
    ----------
    before, after : (M, N, 3) uint8
        The scene pictures (AFTER on BEFORE's picture grid).
    detections : sequence of Detection
    scale : float
        Picture pixels per BEFORE pixel.
    res_m : float, optional
        BEFORE pixel size, metres: the legend then carries a scale bar.
    pixel_frame : bool
        The inputs are plain images (no georeference): the legend names detections_px.geojson.

    Returns
    -------
    (H, 2 * N + PANEL_GAP_PX, 3) uint8
        The legend names both colours with their counts, explains the numbers and carries a
        scale bar; text sizes follow the picture's width so the labels stay legible at full size.
    """
    dets = list(detections)
    panels = []
    h, w = before.shape[:2]
    fs = float(np.clip(w / 1400, 0.45, 0.8))           # label font scale
    line = max(2, int(round(w / 500)))                  # outline thickness
    outlines = [(np.asarray(d.blob.corners_px, float) + 0.5) * scale - 0.5 for d in dets]
    places = _place_tags(outlines, [_tag_size(detection_label(d.id), fs)[:2] for d in dets],
                         (h, w), gap=line + 1)
    for picture in (before, after):
        img = np.ascontiguousarray(picture.copy())
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
    geojson = "detections_px.geojson" if pixel_frame else "detections.geojson"
    label = f"= detection d007 in report.html and {geojson}"
    cv2.putText(canvas, label, (x, y), _FONT, fs, (0, 0, 0), 1, cv2.LINE_AA)
    x += cv2.getTextSize(label, _FONT, fs, 1)[0][0] + int(40 * fs)
    if res_m:
        room = canvas.shape[1] - x - int(120 * fs)
        if room > 40:
            _scale_bar(canvas, (x, y), scale / res_m, min(room, w / 5), fs)
    return canvas

def shift_arrows(coregistration: Coregistration) -> tuple[list[tuple], bool]:
    """The arrows :func:`shift_arrows_image` draws: ``[(col_px, row_px, dx_px, dy_px, inlier)]``
    on the BEFORE grid, and whether they are the nodes of a local shift field (measured nodes
    count as inliers) rather than the matching windows of the global shift."""
    local = coregistration.local
    if local is not None:
        return [(c, r, local.field_dx_px[j][i], local.field_dy_px[j][i],
                 bool(local.measured_mask[j][i]) if local.measured_mask is not None else True)
                for j, r in enumerate(local.grid_rows_px)
                for i, c in enumerate(local.grid_cols_px)], True
    return [(w.col_px, w.row_px, w.dx_px, w.dy_px, w.inlier) for w in coregistration.windows], False


def shift_arrows_image(picture: np.ndarray, scale: float,
                       coregistration: Coregistration | Mapping,
                       res_m: float | None = None) -> tuple[np.ndarray, float] | None:
    """The measured shift of every matching window drawn as an arrow over a scene picture.

    Parameters
    ----------
    picture : (M, N, 3) uint8
        The decimated BEFORE scene.
    scale : float
        Picture pixels per BEFORE pixel.
    coregistration : Coregistration or mapping
        report.json's ``coregistration`` (a mapping is validated): its ``windows`` (green: inlier, red: outlier); in
        local mode its ``local`` field is drawn instead, node by node (green: measured, red:
        filled from the neighbours).
    res_m : float, optional
        BEFORE pixel size, metres, for the reference arrow's label.

    Returns
    -------
    (image, gain) or None
        The picture with a legend strip, and how many picture pixels one BEFORE pixel of shift
        is drawn as; None when no window was measured. Shifts of a pixel or two are invisible
        at true scale: the arrows are exaggerated so that the longest is a tenth of the picture.
    """
    if not isinstance(coregistration, Coregistration):
        coregistration = Coregistration.model_validate(coregistration)
    arrows, local = shift_arrows(coregistration)
    if not arrows:
        return None
    h, w = picture.shape[:2]
    longest = max(math.hypot(dx, dy) for _, _, dx, dy, _ in arrows)
    gain = max(w, h) / 10 / max(longest, 0.05)
    img = np.ascontiguousarray(picture.copy())
    img = (img * 0.6 + 255 * 0.4).astype(np.uint8)    # lighten so the arrows stand out
    thick = max(2, int(round(w / 300)))
    for col, row, dx, dy, inlier in arrows:
        x0, y0 = col * scale, row * scale
        x1, y1 = x0 + dx * gain, y0 + dy * gain
        cv2.circle(img, (int(x0), int(y0)), thick + 2, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.arrowedLine(img, (int(x0), int(y0)), (int(x1), int(y1)), (0, 0, 0), thick + 2,
                        cv2.LINE_AA, tipLength=0.25)
        cv2.arrowedLine(img, (int(x0), int(y0)), (int(x1), int(y1)), ARROW_COLOURS[inlier],
                        thick, cv2.LINE_AA, tipLength=0.25)
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

def colour_score(score: np.ndarray, top_sigma: float) -> np.ndarray:
    """(M, N) score -> (M, N, 3) uint8 RGB on the inferno scale, 0 to ``top_sigma`` (clipped)."""
    v = np.clip(score / max(top_sigma, 1e-6) * 255.0, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(v, cv2.COLORMAP_INFERNO)[..., ::-1].copy()


def score_colour_stops(n: int = 6) -> list[str]:
    """CSS colours of the score scale, low to high (for a colour bar)."""
    ramp = cv2.applyColorMap(np.linspace(0, 255, n).astype(np.uint8)[None], cv2.COLORMAP_INFERNO)
    return [colour_hex(bgr[::-1]) for bgr in ramp[0]]


def colour_hex(rgb: Sequence[int]) -> str:
    """``(r, g, b)`` -> ``#rrggbb``."""
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def encode_png(rgb: np.ndarray) -> bytes:
    """(M, N, 3) uint8 RGB as PNG bytes (exact pixels)."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(rgb: np.ndarray, quality: int = 88) -> bytes:
    """(M, N, 3) uint8 RGB as JPEG bytes (for photographs: several times smaller than PNG)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
