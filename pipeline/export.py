"""Export: detections as RFC 7946 GeoJSON (lon/lat), one Polygon Feature per change."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio.transform
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from .classify import Detection
from .errors import PipelineError
from .rasterio_io import Grid, write_text_atomic


def detection_properties(det: Detection) -> dict:
    """The CONTRACT's feature properties of one detection (plus a few extras)."""
    b = det.blob
    return {
        "id": det.id,
        "category": det.category,
        "class": det.klass,
        "change": det.change,
        "length_m": round(b.length_m, 2),
        "width_m": round(b.width_m, 2),
        "area_m2": round(b.area_m2, 2),
        "heading_deg": round(b.heading_deg, 1),
        "score": round(det.score, 3),
        "centroid_px": [round(b.centroid_px[0], 2), round(b.centroid_px[1], 2)],
        "change_score": round(b.mean_score, 2),
    }


def pixel_polygon_to_lonlat(corners_px, grid: Grid) -> Polygon:
    """A polygon of (col, row) corners on ``grid`` as a lon/lat polygon (counter-clockwise)."""
    pts = np.asarray(corners_px, dtype=float)
    xs, ys = rasterio.transform.xy(grid.transform, pts[:, 1], pts[:, 0], offset="center")
    lon, lat = warp_transform(grid.crs, "EPSG:4326", list(xs), list(ys))
    if not (np.all(np.isfinite(lon)) and np.all(np.isfinite(lat))):
        raise PipelineError(f"cannot transform coordinates from {grid.crs} to lon/lat "
                            "(a PROJ grid file may be missing)")
    return orient(Polygon(zip(np.round(lon, 8), np.round(lat, 8))), sign=1.0)


def feature_collection(detections: list[Detection], grid: Grid) -> dict:
    """RFC 7946 FeatureCollection of the detections, polygons in lon/lat (EPSG:4326)."""
    features = []
    for det in detections:
        poly = pixel_polygon_to_lonlat(det.blob.corners_px, grid)
        features.append({"type": "Feature", "id": det.id, "geometry": mapping(poly),
                         "properties": detection_properties(det)})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, detections: list[Detection], grid: Grid) -> Path:
    fc = feature_collection(detections, grid)
    write_text_atomic(path, json.dumps(fc, indent=1))
    return Path(path)
