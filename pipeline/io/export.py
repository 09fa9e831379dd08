"""Export: detections as RFC 7946 GeoJSON (lon/lat), one Polygon Feature per change."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio.transform
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from ..detect.classify import Detection
from ..errors import PipelineError
from .outputs import write_text_atomic
from .raster import Grid


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
        "class_fit": round(det.class_fit, 3),
        "centroid_px": [round(b.centroid_px[0], 2), round(b.centroid_px[1], 2)],
        "change_score": round(b.mean_score, 2),
        "moved_with": det.moved_with or None,
        "found_by": det.found_by,
        "detector_before": det.seen_before,
        "detector_after": det.seen_after,
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


def pixel_feature_collection(detections: list[Detection]) -> dict:
    """The detections as a FeatureCollection in BEFORE pixel coordinates (x right, y down).

    For plain images without georeference (``--gsd``): not RFC 7946 (no lon/lat), so written
    as ``detections_px.geojson``; sizes are still in metres at the given pixel size.
    """
    features = []
    for det in detections:
        # corners_px are pixel indexes (centres); +0.5 puts them on GDAL's pixel-corner axes
        ring = [[round(float(x) + 0.5, 2), round(float(y) + 0.5, 2)] for x, y in det.blob.corners_px]
        features.append({"type": "Feature", "id": det.id,
                         "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
                         "properties": detection_properties(det)})
    return {"type": "FeatureCollection", "coordinates": "BEFORE pixels: x right, y down, (0, 0) the top-left corner",
            "features": features}


def write_geojson(path: str | Path, detections: list[Detection], grid: Grid) -> Path:
    """Write the detections: lon/lat GeoJSON, or pixel coordinates for a pixel-frame grid."""
    fc = pixel_feature_collection(detections) if grid.pixel_frame else \
        feature_collection(detections, grid)
    write_text_atomic(path, json.dumps(fc, indent=1))
    return Path(path)
