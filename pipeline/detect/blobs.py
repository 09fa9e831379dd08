"""Blobs: connected components of the change mask, measured in metres.

Each blob gets its minimum-area rectangle (length, width, heading) and area on the ground. Within a
block only blobs whose top-left corner lies in the block's core are kept, so that a blob seen by
two overlapping blocks is counted once. A blob that joins several objects at narrow necks
(aircraft parked wingtip to wingtip) can be cut into them (:func:`split_at_necks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from rasterio.windows import Window
from scipy import ndimage
from skimage.segmentation import watershed


@dataclass(frozen=True)
class Blob:
    """One connected region of change, in BEFORE-grid pixel coordinates (global, not per block).

    ``corners_px`` are the four corners (col, row) of the minimum-area rectangle;
    ``bbox_px`` is (col0, row0, col1, row1), end-exclusive.
    """

    bbox_px: tuple[int, int, int, int]
    area_px: int
    centroid_px: tuple[float, float]
    corners_px: tuple[tuple[float, float], ...]
    length_m: float
    width_m: float
    area_m2: float
    heading_deg: float
    mean_score: float
    max_score: float
    label: int = 0


def pixel_corners(points_px: np.ndarray) -> np.ndarray:
    """The four corners (K * 4, 2) of the pixels whose centres are ``points_px`` (K, 2) (col,
    row): each pixel a square, so that one pixel's outline is one pixel wide."""
    offsets = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    return (points_px[:, None, :] + offsets[None]).reshape(-1, 2)


def min_area_rect_m(points_px: np.ndarray, res_m: tuple[float, float]
                    ) -> tuple[float, float, float, np.ndarray]:
    """Minimum-area rectangle of pixel-centre points (K, 2) (col, row), measured in metres.

    Each pixel is a square: its four corners enter the hull, so a single pixel measures one
    pixel by one pixel. Returns length_m, width_m (length >= width), heading_deg (long axis,
    clockwise from north, 0 to 180) and the (4, 2) corners in pixel coordinates.
    """
    rx, ry = res_m
    metric = (pixel_corners(points_px) * np.array([rx, ry])).astype(np.float32)
    (cx, cy), (w, h), _ = rect = cv2.minAreaRect(metric)
    box_m = cv2.boxPoints(rect)
    e1 = box_m[1] - box_m[0]
    e2 = box_m[2] - box_m[1]
    long_edge = e1 if np.hypot(*e1) >= np.hypot(*e2) else e2
    # metric y grows down (rows); north is up
    east, north = float(long_edge[0]), float(-long_edge[1])
    heading = math.degrees(math.atan2(east, north)) % 180.0
    length, width = max(w, h), min(w, h)
    box_px = box_m / np.array([rx, ry], dtype=np.float32)
    return float(length), float(width), heading, box_px


def measure(pixels: np.ndarray, offset_px: tuple[int, int], res_m: tuple[float, float], *,
            score: np.ndarray | None = None) -> Blob:
    """Measure one region given as a boolean array whose [0, 0] lies at ``offset_px`` (col, row)."""
    rows, cols = np.nonzero(pixels)
    c0, r0 = int(cols.min()), int(rows.min())
    c1, r1 = int(cols.max()) + 1, int(rows.max()) + 1
    contours, _ = cv2.findContours(pixels[r0:r1, c0:c1].astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    pts += (c0 + offset_px[0], r0 + offset_px[1])
    length, width, heading, box = min_area_rect_m(pts, res_m)
    s = score[pixels] if score is not None else np.zeros(1, np.float32)
    gx, gy = offset_px
    return Blob(
        bbox_px=(c0 + gx, r0 + gy, c1 + gx, r1 + gy), area_px=int(rows.size),
        centroid_px=(float(cols.mean()) + gx, float(rows.mean()) + gy),
        corners_px=tuple((float(c), float(r)) for c, r in box),
        length_m=round(length, 3), width_m=round(width, 3),
        area_m2=round(rows.size * res_m[0] * res_m[1], 3), heading_deg=round(heading, 2),
        mean_score=float(s.mean()), max_score=float(s.max()))


def find_blobs(mask: np.ndarray, score: np.ndarray | None, res_m: tuple[float, float], *,
               window: Window | None = None, core: Window | None = None
               ) -> tuple[list[Blob], np.ndarray]:
    """Measure the connected components (8-connected) of ``mask``.

    Parameters
    ----------
    mask : (M, N) bool
        Change mask of one block (or the whole scene).
    score : (M, N) float32 or None
        Change score, for each blob's mean and max (0 when None).
    res_m : (float, float)
        Pixel size in metres, x and y.
    window : Window, optional
        Where ``mask`` lies on the BEFORE grid; blob coordinates are returned on that grid.
    core : Window, optional
        Keep only blobs whose bounding box's top-left pixel lies in ``core`` (grid coordinates).

    Returns
    -------
    blobs : list of Blob
    labels : (M, N) int32
        Component labels of the block; ``Blob.label`` indexes it.
    """
    col_off = int(window.col_off) if window is not None else 0
    row_off = int(window.row_off) if window is not None else 0
    _, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    # the components' boxes: a third of the time of OpenCV's statistics on a sparse mask
    boxes = ndimage.find_objects(labels)
    blobs = []
    for i, (rows, cols) in enumerate(boxes, start=1):
        x, y, w, h = cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start
        gx, gy = x + col_off, y + row_off
        if core is not None and not (core.col_off <= gx < core.col_off + core.width
                                     and core.row_off <= gy < core.row_off + core.height):
            continue
        sub = labels[y:y + h, x:x + w] == i
        blob = measure(sub, (gx, gy), res_m,
                       score=score[y:y + h, x:x + w] if score is not None else None)
        blobs.append(replace(blob, label=i))
    return blobs, labels


def split_at_necks(inside: np.ndarray, res_m: float, *, core_width_m: float,
                   min_separation_m: float) -> np.ndarray:
    """Cut a blob into the objects it joins at necks narrower than an object's body.

    Parameters
    ----------
    inside : (M, N) bool
        One blob (a single connected region).
    res_m : float
        Pixel size, metres.
    core_width_m : float
        An object's core is where a disc this wide fits inside the blob (the distance to the
        blob's edge is at least half of it): the body of the narrowest object sought. Wings,
        tails, towbars and the thin bridges of change between two parked aircraft are narrower.
    min_separation_m : float
        Cores closer than this (across the blob) are one object's.

    Returns
    -------
    (M, N) int32
        0 outside the blob, 1..K the parts. K is 1 (the blob itself) when fewer than two cores
        are found.

    Notes
    -----
    Marker-controlled watershed on the distance transform (Beucher and Meyer, 1993): the markers
    are the cores, each blob pixel goes to the core it reaches by the steepest ascent of the
    distance to the edge, so every part keeps its wings and the necks are cut at their narrowest.
    It depends only on the blob's pixels, never on where the blob lies in a block.
    """
    if inside.ndim != 2:
        raise ValueError("inside must be 2D")
    # padded so that the blob's edge is background on every side
    blob = np.pad(inside, 1).astype(np.uint8)
    dist_m = cv2.distanceTransform(blob, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * np.float32(res_m)
    cores = (dist_m >= core_width_m / 2).astype(np.uint8)
    r = max(1, int(math.ceil(min_separation_m / res_m / 2)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    joined = cv2.dilate(cores, disc) & blob
    n, markers = cv2.connectedComponents(joined, connectivity=8)
    if n - 1 < 2:
        return inside.astype(np.int32)
    parts = watershed(-dist_m, markers, mask=blob.astype(bool), connectivity=2)
    return parts[1:-1, 1:-1].astype(np.int32)
