"""STAC out: each pair's result described as a STAC item, a batch's items linked by a catalog.

So that the next tool finds the results as it finds imagery: the pair's datetimes, the
footprint of the overlap, counts, and its files as assets (detections, the change-mask COG, the
overlay, the report). Items and catalog are made with pystac and written atomically, their
links relative (the folder can be moved or served as it is).
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from affine import Affine

from .. import __version__
from .outputs import MaskWriter, utc_datetime, write_text_atomic

ITEM_FILE = "item.json"
CATALOG_FILE = "catalog.json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
#: a pair's files as STAC assets: key, file, media type, roles, title
PAIR_ASSETS = (
    ("detections", "detections.geojson", "application/geo+json", ["data"],
     "Detections (lon/lat polygons)"),
    ("detections_px", "detections_px.geojson", "application/geo+json", ["data"],
     "Detections in BEFORE pixel coordinates"),
    ("detections_gpkg", "detections.gpkg", "application/geopackage+sqlite3", ["data"],
     "Detections, styled for QGIS"),
    ("change_mask", "change_mask.tif", "image/tiff; application=geotiff; profile=cloud-optimized",
     ["data"], "Change mask (0 no change, 1 change, 255 nodata)"),
    ("overlay", "overlay.png", "image/png", ["overview", "visual"],
     "BEFORE and AFTER with the detections outlined"),
    ("report", "report.html", "text/html", ["metadata"], "Report"),
    ("report_json", "report.json", "application/json", ["metadata"], "Report (machine-readable)"),
)


def overlap_footprint(mask_path: str | Path, *, max_px: int = 512):
    """The lon/lat outline (shapely, EPSG:4326) of the valid pixels of a change mask.

    The mask (its nodata, 255, is outside the overlap of valid data) is read decimated to at
    most ``max_px`` on a side, vectorised and simplified by a pixel of that read. None when the
    mask has no CRS or no valid pixel.
    """
    import rasterio
    import rasterio.features
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    with rasterio.open(mask_path) as ds:
        if ds.crs is None:
            return None
        scale = max(1.0, max(ds.width, ds.height) / max_px)
        h, w = max(1, round(ds.height / scale)), max(1, round(ds.width / scale))
        valid = (ds.read(1, out_shape=(h, w)) != MaskWriter.NODATA).astype(np.uint8)
        transform = ds.transform @ Affine.scale(ds.width / w, ds.height / h)
        crs = ds.crs
    polys = [shape(g) for g, v in rasterio.features.shapes(valid, valid.astype(bool),
                                                           transform=transform) if v]
    if not polys:
        return None
    pixel = abs(transform.a)
    outline = unary_union(polys).simplify(pixel, preserve_topology=True)
    return _counter_clockwise(shape(transform_geom(crs, "EPSG:4326", mapping(outline),
                                                   precision=7)))


def _counter_clockwise(geom):
    """Exterior rings counter-clockwise, holes clockwise (RFC 7946)."""
    from shapely.geometry import MultiPolygon
    from shapely.geometry.polygon import orient

    if geom.geom_type == "MultiPolygon":
        return MultiPolygon([orient(p, sign=1.0) for p in geom.geoms])
    return orient(geom, sign=1.0) if geom.geom_type == "Polygon" else geom


def pair_item(pair_dir: str | Path, name: str, *, before: dict, after: dict,
              catalog: bool = False, coming: tuple[str, ...] = ()):
    """The STAC item describing one pair's result, from the files in ``pair_dir``.

    Parameters
    ----------
    pair_dir : path
        The pair's output folder (report.json, change_mask.tif... in it).
    name : str
        The item's id (the pair's name).
    before, after : dict
        What is known of each acquisition: ``datetime`` (ISO; None when unknown) and, from STAC
        input, the item's id, href and view angles (:meth:`pipeline.batch.stac.Acquisition.as_dict`),
        else the raster's ``path``.
    catalog : bool
        The item sits in a batch whose ``catalog.json`` is the parent folder's: link it as
        root and parent.
    coming : tuple of str
        Files not yet in ``pair_dir`` that will be published with the item (its assets too).

    Returns
    -------
    pystac.Item
        ``datetime`` AFTER's (the state it describes), ``start_datetime`` / ``end_datetime``
        BEFORE's and AFTER's; without dates, ``datetime`` is the time it was made and
        ``detect_changes:dates_known`` false. Geometry: the overlap's footprint. Properties
        ``detect_changes:*``: detections, counts, shift, quality, overlap, both acquisitions.
        Assets: the pair's files that exist, hrefs relative to the item.
    """
    import pystac
    from shapely.geometry import mapping

    pair_dir = Path(pair_dir)
    report = json.loads((pair_dir / "report.json").read_text(encoding="utf-8"))
    pixel_frame = report.get("grid", {}).get("frame") == "pixel"
    # plain images (--gsd) lie on a nominal grid, nowhere on the Earth: no footprint, and
    # their detections are in pixel coordinates only
    footprint = None if pixel_frame else overlap_footprint(pair_dir / "change_mask.tif")
    skip = {"detections", "detections_gpkg"} if pixel_frame else {"detections_px"}
    start, end = utc_datetime(before.get("datetime")), utc_datetime(after.get("datetime"))
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    co = report.get("coregistration", {})
    props = {"created": pystac.utils.datetime_to_str(now),
             "processing:software": {"detect-changes": report.get("version", __version__)},
             "detect_changes:detections": report.get("detections"),
             "detect_changes:counts": report.get("counts"),
             "detect_changes:shift_px": [co.get("shift_x_px"), co.get("shift_y_px")],
             "detect_changes:coregistration_quality": co.get("quality"),
             "detect_changes:overlap": report.get("overlap"),
             "detect_changes:before": before, "detect_changes:after": after,
             "detect_changes:dates_known": bool(start and end)}
    if start and end:
        props.update(start_datetime=pystac.utils.datetime_to_str(start),
                     end_datetime=pystac.utils.datetime_to_str(end))
    item = pystac.Item(id=name, geometry=mapping(footprint) if footprint is not None else None,
                       bbox=list(footprint.bounds) if footprint is not None else None,
                       datetime=end or now, properties=props,
                       stac_extensions=[PROCESSING_EXTENSION])
    for key, file, media, roles, title in PAIR_ASSETS:
        if key not in skip and ((pair_dir / file).is_file() or file in coming):
            item.add_asset(key, pystac.Asset(f"./{file}", title=title, media_type=media,
                                             roles=roles))
    for acq in (before, after):  # the source items, where they have a location of their own
        if acq.get("href"):
            item.add_link(pystac.Link("derived_from", acq["href"],
                                      media_type=pystac.MediaType.GEOJSON,
                                      title=f"STAC item {acq.get('item')}"))
    if catalog:
        for rel in ("root", "parent"):
            item.add_link(pystac.Link(rel, f"../{CATALOG_FILE}", media_type=pystac.MediaType.JSON))
    return item


def write_pair_item(pair_dir: str | Path, name: str, *, before: dict, after: dict,
                    catalog: bool = False, coming: tuple[str, ...] = (),
                    path: str | Path | None = None) -> Path:
    """Write :func:`pair_item` to ``path`` (default ``pair_dir/item.json``), atomically."""
    item = pair_item(pair_dir, name, before=before, after=after, catalog=catalog, coming=coming)
    path = Path(pair_dir) / ITEM_FILE if path is None else Path(path)
    write_text_atomic(path, json.dumps(item.to_dict(include_self_link=False,
                                                    transform_hrefs=False), indent=1))
    return path


def write_catalog(out_dir: str | Path, names: list[str], *, title: str,
                  description: str) -> Path:
    """Write ``out_dir/catalog.json``: a STAC catalog linking ``out_dir/<name>/item.json``.

    Only pairs whose item exists are linked (failed pairs have none).
    """
    import pystac

    out_dir = Path(out_dir)
    cat = pystac.Catalog(id=out_dir.name or "detect-changes", title=title,
                         description=description)
    cat.add_link(pystac.Link("root", f"./{CATALOG_FILE}", media_type=pystac.MediaType.JSON))
    for name in names:
        if (out_dir / name / ITEM_FILE).is_file():
            cat.add_link(pystac.Link("item", f"./{name}/{ITEM_FILE}",
                                     media_type=pystac.MediaType.GEOJSON, title=name))
    path = out_dir / CATALOG_FILE
    write_text_atomic(path, json.dumps(cat.to_dict(include_self_link=False,
                                                   transform_hrefs=False), indent=1))
    return path
