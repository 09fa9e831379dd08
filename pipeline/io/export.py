"""Export: detections as RFC 7946 GeoJSON (lon/lat), one Polygon Feature per change."""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path

import numpy as np
import rasterio.transform
from rasterio.warp import transform as warp_transform
from shapely.geometry import Polygon, mapping
from shapely.geometry.polygon import orient

from ..detect.classify import Detection
from ..errors import OutputError, PipelineError
from .outputs import utc_datetime, write_text_atomic
from .raster import Grid


def detection_properties(det: Detection, grid: Grid | None = None) -> dict:
    """The CONTRACT's feature properties of one detection (plus a few extras); positions in
    the input's own pixels (``grid.factor``)."""
    b = det.blob
    at = grid.input_px if grid is not None else float
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
        "centroid_px": [round(at(b.centroid_px[0]), 2), round(at(b.centroid_px[1]), 2)],
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
                         "properties": detection_properties(det, grid)})
    return {"type": "FeatureCollection", "features": features}


def pixel_feature_collection(detections: list[Detection], grid: Grid | None = None) -> dict:
    """The detections as a FeatureCollection in BEFORE pixel coordinates (x right, y down).

    For plain images without georeference (``--gsd``): not RFC 7946 (no lon/lat), so written
    as ``detections_px.geojson``; sizes are still in metres at the given pixel size.
    """
    features = []
    # corners_px are pixel indexes (centres); +0.5 puts them on GDAL's pixel-corner axes, then
    # in the input's own pixels
    scale = grid.factor if grid is not None else 1
    for det in detections:
        ring = [[round((float(x) + 0.5) * scale, 2), round((float(y) + 0.5) * scale, 2)]
                for x, y in det.blob.corners_px]
        features.append({"type": "Feature", "id": det.id,
                         "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
                         "properties": detection_properties(det, grid)})
    return {"type": "FeatureCollection", "coordinates": "BEFORE pixels: x right, y down, (0, 0) the top-left corner",
            "features": features}


def write_geojson(path: str | Path, detections: list[Detection], grid: Grid) -> Path:
    """Write the detections: lon/lat GeoJSON, or pixel coordinates for a pixel-frame grid."""
    fc = pixel_feature_collection(detections, grid) if grid.pixel_frame else \
        feature_collection(detections, grid)
    write_text_atomic(path, json.dumps(fc, indent=1))
    return Path(path)


#: the properties of detections.geojson kept in a GeoPackage, in order
GPKG_FIELDS = ("id", "category", "class", "change", "length_m", "width_m", "area_m2",
               "heading_deg", "score", "change_score")
GPKG_LAYER = "detections"


def write_detections_gpkg(path: str | Path, features: list[dict], *,
                          leading: dict[str, list] | None = None,
                          date_fields: tuple[str, ...] = ()) -> Path:
    """Write lon/lat detection features as one styled GeoPackage layer ``detections``, atomically.

    Parameters
    ----------
    path : path
        The ``.gpkg`` file; made under a temporary name beside it and renamed when complete.
    features : list of dict
        GeoJSON Features (EPSG:4326) with the properties of ``detections.geojson``.
    leading : dict of str to list, optional
        Fields put before the detection's properties, one value per feature (a batch's
        ``pair``, ``before_date``, ``after_date``).
    date_fields : tuple of str
        Which of ``leading`` are ISO dates or datetimes, written as GeoPackage DateTime (UTC).

    Notes
    -----
    The layer carries its QGIS style in the GeoPackage's ``layer_styles`` table
    (:func:`pipeline.report.styles.detections_qml`): QGIS opens it with appeared amber,
    disappeared blue, labelled ``class id``.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import shape

    from ..report.styles import add_layer_style, detections_qml

    path = Path(path)
    leading = leading or {}
    columns = list(leading) + list(GPKG_FIELDS)
    frame = pd.DataFrame({**{k: list(v) for k, v in leading.items()},
                          **{k: [f["properties"].get(k) for f in features] for k in GPKG_FIELDS}},
                         columns=columns)
    for col in columns:
        if col in date_fields:  # values were checked to be ISO dates or datetimes
            frame[col] = pd.Series([_naive_utc(v) for v in frame[col]],
                                   dtype="datetime64[ms]", index=frame.index)
        elif col in ("length_m", "width_m", "area_m2", "heading_deg", "score", "change_score"):
            frame[col] = frame[col].astype(float)
        else:
            frame[col] = frame[col].astype(object)
    geoms = gpd.GeoSeries([shape(f["geometry"]) for f in features], crs="EPSG:4326")
    gdf = gpd.GeoDataFrame(frame, geometry=geoms)
    # the GPKG driver makes the file itself, and wants the .gpkg extension
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{path.suffix}")
    try:
        gdf.to_file(tmp, layer=GPKG_LAYER, driver="GPKG", engine="pyogrio", geometry_type="Polygon")
        add_layer_style(tmp, GPKG_LAYER, detections_qml(),
                        description="detect-changes: appeared amber, disappeared blue")
        os.replace(tmp, path)
    except (OSError, sqlite3.Error) as err:
        raise OutputError(f"{path}: cannot write the GeoPackage ({err})", path=path) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _naive_utc(value: str | None):
    stamp = utc_datetime(value)
    return None if stamp is None else stamp.replace(tzinfo=None)
