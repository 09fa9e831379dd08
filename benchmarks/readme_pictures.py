"""Make the README's pictures and print the figures their captions quote.

    python benchmarks/readme_pictures.py [--out out/readme]

1. ``docs/airbus_overlay.jpg``: a real pair, Airbus Pléiades G1 20bfce20 -> 534ba32c of the
   Airbus Aircraft Detection sample (``../shared/data/airbus-aircraft-sample``, CC BY-NC-SA 4.0,
   Airbus DS Intelligence), wrapped as GeoTIFFs as ``benchmarks/accuracy.py`` does (AFTER placed
   by the pair's homography), run with the default config; its overlay.png scaled to 1000 px.
2. ``docs/airbus_layers.jpg``: what the styled layers show, drawn with matplotlib from the
   pair's own files (no QGIS here): AFTER, ``change_mask.tif`` in its colour table (no change
   left transparent, as the README suggests in QGIS), ``detections.gpkg`` outlined in the colours
   of the style stored in its ``layer_styles`` table and labelled "class id" as that style does.
3. ``docs/timeline.png``: a generated series of four dated STAC items of the synthetic sample
   (``sample_tiles/hmeimim``: March and April BEFORE, May and June AFTER: the withdrawal happens
   in May), run with ``--stac``, three zones in the config.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from PIL import Image

from pipeline.batch.runner import run_batch, run_job
from pipeline.batch.stac import stac_jobs
from pipeline.config import Config, config_from_mapping
from pipeline.testing.cases import airport_pair_cases, wrap_case

AIRBUS = REPO.parent / "shared" / "data" / "airbus-aircraft-sample"
PAIR = ("20bfce20", "534ba32c")
ZONES = [
    {"name": "north apron", "polygon_lonlat": [[35.9462, 35.4012], [35.9518, 35.4012],
                                               [35.9518, 35.4033], [35.9462, 35.4033]]},
    {"name": "sam site", "polygon_lonlat": [[35.9488, 35.4000], [35.9500, 35.4000],
                                            [35.9500, 35.4010], [35.9488, 35.4010]]},
    {"name": "south apron", "polygon_lonlat": [[35.9462, 35.3987], [35.9518, 35.3987],
                                               [35.9518, 35.4000], [35.9462, 35.4000]]},
]


def airbus_overlay(out: Path) -> None:
    case = next(c for c in airport_pair_cases(AIRBUS)
                if c.before.name.startswith(PAIR[0]) and c.after.name.startswith(PAIR[1]))
    before, after = wrap_case(case, out / "airbus-g1-input")
    result = run_job(_job(before, after), out / "airbus-g1", Config(), in_batch=False)
    co = result.report["coregistration"]
    print(f"airbus {case.name}: {len(result.detections)} detections, counts "
          f"{json.dumps(result.report['counts'])}, shift {co['shift_x_px']:+.2f}, "
          f"{co['shift_y_px']:+.2f} px, quality {co['quality']:.2f}")
    with Image.open(out / "airbus-g1" / "overlay.png") as im:
        small = im.convert("RGB").resize((1000, round(im.height * 1000 / im.width)),
                                         Image.LANCZOS)
    small.save(REPO / "docs" / "airbus_overlay.jpg", quality=80, optimize=True)
    print(f"docs/airbus_overlay.jpg: {(REPO / 'docs' / 'airbus_overlay.jpg').stat().st_size} bytes")


def styled_layers(out: Path, window_px=(980, 450, 1000, 1000)) -> None:
    """Draw a part of the real pair as the styled layers show it (colours read from the files)."""
    import re
    import sqlite3

    import matplotlib
    import numpy as np
    import pyogrio
    import rasterio
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from rasterio.windows import Window

    matplotlib.use("Agg")
    pair = out / "airbus-g1"
    with sqlite3.connect(pair / "detections.gpkg") as con:
        qml = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'detections' "
                          "AND useAsDefault").fetchone()[0]
    symbol = dict(re.findall(r'<category symbol="(\d+)" value="(\w+)"', qml))
    symbols = qml.split("<symbols>")[1].split("</symbols>")[0]  # not the source symbol
    outline = {symbol[k]: tuple(int(c) / 255 for c in rgba.split(",")[:3])
               for k, rgba in re.findall(r'<symbol type="fill" name="(\d+)".*?name="outline_color" '
                                         r'value="([\d,]+)"', symbols, flags=re.DOTALL)}
    col, row, w, h = window_px
    win = Window(col, row, w, h)
    with rasterio.open(out / "airbus-g1-input" / "after.tif") as ds:
        rgb = np.moveaxis(ds.read([1, 2, 3], window=win), 0, -1)
        bounds = rasterio.windows.bounds(win, ds.transform)
        crs = ds.crs
    with rasterio.open(pair / "change_mask.tif") as ds:
        mask = ds.read(1, window=win)
        table = ds.colormap(1)
    rgba = np.array([table.get(v, (0, 0, 0, 0)) for v in range(256)], dtype=float) / 255
    rgba[0, 3] = 0.0  # no change transparent over the imagery
    rgba[1, 3] = 0.55
    frame = pyogrio.read_dataframe(pair / "detections.gpkg", layer="detections").to_crs(crs)
    extent = (bounds[0], bounds[2], bounds[1], bounds[3])
    fig = Figure(figsize=(7, 7.4), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.imshow(rgb, extent=extent)
    ax.imshow(rgba[mask], extent=extent, interpolation="nearest")
    for _, det in frame.iterrows():
        x, y = det.geometry.exterior.xy
        if not (bounds[0] < np.mean(x) < bounds[2] and bounds[1] < np.mean(y) < bounds[3]):
            continue
        ax.plot(x, y, color=outline[det["change"]], lw=2)
        ax.annotate(f"{det['class']} {det['id']}", (np.mean(x), max(y)), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7.5,
                    fontweight="bold", bbox={"boxstyle": "round,pad=0.1", "fc": "white",
                                             "ec": "none", "alpha": 0.8})
    ax.set_xlim(extent[:2])
    ax.set_ylim(extent[2:])
    ax.set_axis_off()
    ax.legend(handles=[Patch(fill=False, ec=outline["appeared"], lw=2, label="appeared"),
                       Patch(fill=False, ec=outline["disappeared"], lw=2, label="disappeared"),
                       Patch(color=rgba[1], label="change mask: change")],
              loc="lower left", fontsize=8, framealpha=0.9)
    path = REPO / "docs" / "airbus_layers.jpg"
    buf = __import__("io").BytesIO()
    fig.savefig(buf, format="png")
    Image.open(buf).convert("RGB").save(path, quality=82, optimize=True)
    print(f"docs/airbus_layers.jpg: {path.stat().st_size} bytes, "
          f"{len(frame)} detections in the layer")


def _job(before: Path, after: Path):
    from pipeline.batch.runner import PairJob

    return PairJob("airbus-g1", before, after)


def synthetic_series(out: Path) -> None:
    import rasterio
    from rasterio.warp import transform_bounds

    folder = out / "series-input"
    folder.mkdir(parents=True, exist_ok=True)
    sample = REPO / "sample_tiles" / "hmeimim"
    dates = [("2024-03-01T08:31:00Z", "before", (141.0, 52.5, 4.1)),
             ("2024-04-01T08:29:30Z", "before", (146.5, 60.2, 11.8)),
             ("2024-05-01T08:30:10Z", "after", (150.1, 66.0, 7.3)),
             ("2024-06-01T08:30:40Z", "after", (152.0, 68.4, 2.2))]
    items = []
    for k, (when, which, sun) in enumerate(dates, start=1):
        image = folder / f"hmeimim_{when[:10]}.tif"
        shutil.copy(sample / f"{which}.tif", image)
        with rasterio.open(image) as ds:
            w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": f"hmeimim-{when[:10]}",
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n],
                                                             [w, s]]]},
            "bbox": [w, s, e, n], "links": [],
            "properties": {"datetime": when, "site": "hmeimim", "platform": "synthetic",
                           "view:sun_azimuth": sun[0], "view:sun_elevation": sun[1],
                           "view:off_nadir": sun[2]},
            "assets": {"image": {"href": image.name, "roles": ["data"],
                                 "type": "image/tiff; application=geotiff"}}})
    source = folder / "items.json"
    source.write_text(json.dumps({"type": "FeatureCollection", "features": items}, indent=1))
    config = config_from_mapping({"zones": ZONES})
    result = run_batch(stac_jobs(source), out / "series", config, workers=2, timeline=True)
    print(f"series: {[(r['name'], r['status'], r['detections']) for r in result.rows]}")
    shutil.copy(out / "series" / "timeline.png", REPO / "docs" / "timeline.png")
    print(f"docs/timeline.png: {(REPO / 'docs' / 'timeline.png').stat().st_size} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "readme")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    airbus_overlay(args.out)
    styled_layers(args.out)
    synthetic_series(args.out)


if __name__ == "__main__":
    main()
