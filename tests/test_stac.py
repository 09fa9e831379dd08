"""STAC in and out: a dated series of one site read from STAC items, its timeline, the result's
STAC items and catalog read back with pystac, the styled layers; bad items refused in one line."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyogrio
import pystac
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from pipeline.batch.stac import stac_jobs
from pipeline.cli import main
from pipeline.errors import InputError
from pipeline.testing import synth

REPO = Path(__file__).resolve().parents[1]
# small scenes and few matching windows: a 384 px pair runs in about a second
FAST_CONFIG = "coregistration: {grid: 2, window_px: 192}\noutput: {overlay_max_px: 512}\n"
DATES = ["2024-03-01T08:31:00Z", "2024-04-01T08:29:30Z", "2024-05-01T08:30:10Z",
         "2024-06-01T08:30:40Z"]
SUN = [(141.0, 52.5, 4.1), (146.5, 60.2, 11.8), (150.1, 66.0, 7.3), (152.0, 68.4, 2.2)]


def _item(item_id: str, image: str, when: str | None, bounds, *, site="hmeimim", angles=None,
          assets=None) -> dict:
    w, s, e, n = bounds
    props = {"datetime": when, "platform": "synthetic"}  # (no datetime: None)
    if site is not None:
        props["site"] = site
    if angles:
        props.update(zip(("view:sun_azimuth", "view:sun_elevation", "view:off_nadir"), angles))
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id,
            "stac_extensions": ["https://stac-extensions.github.io/view/v1.0.0/schema.json"],
            "geometry": {"type": "Polygon",
                         "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "bbox": [w, s, e, n], "properties": props,
            "links": [{"rel": "self", "href": f"https://stac.example/items/{item_id}"}],
            "assets": assets or {"image": {"href": image, "type": "image/tiff; application=geotiff",
                                           "roles": ["data"]}}}


def _bounds(path: Path):
    with rasterio.open(path) as ds:
        return transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)


def write_series(root: Path, *, seed: int = 21, size_px: int = 384) -> Path:
    """Four dated images of one site as an ItemCollection: the objects of BEFORE leave (April),
    nothing changes (May), they come back (June)."""
    pair = synth.make_pair(seed=seed, size_px=size_px)
    paths = synth.write_pair(pair, root / "images", before_name="d1.tif", after_name="d2.tif")
    shutil.copy(paths["after"], root / "images" / "d3.tif")
    shutil.copy(paths["before"], root / "images" / "d4.tif")
    bounds = _bounds(paths["before"])
    items = [_item(f"hmeimim-{k + 1}", f"images/d{k + 1}.tif" if k % 2 else
                   (root / "images" / f"d{k + 1}.tif").as_uri(), DATES[k], bounds, angles=SUN[k])
             for k in range(4)]
    path = root / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def _cli(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_stac_series_writes_timeline_catalog_items_and_styled_layers(tmp_path):
    items = write_series(tmp_path / "in")
    config = tmp_path / "fast.yaml"
    config.write_text(FAST_CONFIG)
    out = tmp_path / "out"
    done = _cli("--stac", items, "--out", out, "--workers", "2", "-c", config)
    assert done.returncode == 0, done.stderr

    # the series: each acquisition against the previous one, dated by the items
    with open(out / "timeline.csv", newline="") as fh:
        timeline = list(csv.DictReader(fh))
    names = ["hmeimim-1_hmeimim-2", "hmeimim-2_hmeimim-3", "hmeimim-3_hmeimim-4"]
    assert [(r["pair"], r["date"], r["before_date"]) for r in timeline] == [
        (names[0], "2024-04-01T08:29:30+00:00", "2024-03-01T08:31:00+00:00"),
        (names[1], "2024-05-01T08:30:10+00:00", "2024-04-01T08:29:30+00:00"),
        (names[2], "2024-06-01T08:30:40+00:00", "2024-05-01T08:30:10+00:00")]
    april, may, june = timeline
    assert int(april["detections"]) > 0 and int(may["detections"]) == 0
    for cat in ("aircraft", "launcher"):  # what left in April comes back in June
        assert june[f"{cat}_appeared"] == april[f"{cat}_disappeared"]
    png = out / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (out / "index.html").read_text()
    assert 'src="timeline.png"' in index and f'href="{names[0]}/report.html"' in index

    # the view angles reach the report
    report = json.loads((out / names[0] / "report.json").read_text())
    assert report["acquisition"]["before"]["view:sun_elevation"] == SUN[0][1]
    assert report["acquisition"]["after"]["view:off_nadir"] == SUN[1][2]
    assert report["acquisition"]["after"]["item"] == "hmeimim-2"

    # STAC out, read back with pystac
    cat = pystac.Catalog.from_file(str(out / "catalog.json"))
    got = sorted(cat.get_items(), key=lambda i: i.id)
    assert [i.id for i in got] == names
    first = got[0]
    assert first.properties["start_datetime"] == "2024-03-01T08:31:00Z"
    assert first.properties["end_datetime"] == "2024-04-01T08:29:30Z"
    assert pystac.utils.datetime_to_str(first.datetime) == "2024-04-01T08:29:30Z"
    assert first.properties["detect_changes:detections"] == int(april["detections"])
    assert first.properties["detect_changes:before"]["view:sun_azimuth"] == SUN[0][0]
    assert {"detections", "detections_gpkg", "change_mask", "overlay", "report",
            "report_json"} <= set(first.assets)
    for asset in first.assets.values():
        assert Path(asset.get_absolute_href()).is_file()
    assert "cloud-optimized" in first.assets["change_mask"].media_type
    w, s, e, n = _bounds(tmp_path / "in" / "images" / "d1.tif")
    fw, fs, fe, fn = first.bbox  # the overlap: inside the scene, most of it
    assert w - 1e-6 <= fw < fe <= e + 1e-6 and s - 1e-6 <= fs < fn <= n + 1e-6
    assert (fe - fw) * (fn - fs) > 0.9 * (e - w) * (n - s)
    assert {link.rel for link in first.links} >= {"root", "parent"}
    assert [link.href for link in first.links if link.rel == "derived_from"] == [
        "https://stac.example/items/hmeimim-1", "https://stac.example/items/hmeimim-2"]

    # the styled GeoPackages (batch and pair) and the change mask's colour table
    for gpkg in (out / "detections.gpkg", out / names[0] / "detections.gpkg"):
        frame = pyogrio.read_dataframe(gpkg, layer="detections")
        assert len(frame) > 0 and set(frame["change"]) <= {"appeared", "disappeared"}
        styles = pyogrio.read_dataframe(gpkg, layer="layer_styles", read_geometry=False)
        row = styles.iloc[0]
        assert row["f_table_name"] == "detections" and bool(row["useAsDefault"])
        assert 'attr="change"' in row["styleQML"] and '"class" || \' \' || "id"' in \
            row["styleQML"].replace("&quot;", '"').replace("&apos;", "'")
    with rasterio.open(out / names[0] / "change_mask.tif") as ds:
        colours = ds.colormap(1)
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert colours[1][:3] != colours[0][:3] != colours[255][:3]

    # a rerun skips the finished pairs and adds what an earlier version did not write
    (out / names[1] / "item.json").unlink()
    (out / names[1] / "detections.gpkg").unlink()
    report_mtime = (out / names[1] / "report.json").stat().st_mtime_ns
    again = _cli("--stac", items, "--out", out, "-c", config)
    assert again.returncode == 0 and "3 already complete" in again.stdout, again.stderr
    assert pystac.Item.from_file(str(out / names[1] / "item.json")).id == names[1]
    assert pyogrio.read_info(out / names[1] / "detections.gpkg", layer="detections")["features"] == 0
    assert (out / names[1] / "report.json").stat().st_mtime_ns == report_mtime


# --------------------------------------------------------------------------------------------------
# Reading items: folders, grouping, asset rule; bad items refused in one line


def _tiny(path: Path, origin=(767565.0, 3921765.0)) -> Path:
    """A small georeferenced raster (its pixels do not matter: these items fail or are only
    grouped, never run)."""
    import numpy as np
    from conftest import write_tif
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_tif(path, np.full((1, 64, 64), 100, "uint8"), transform=from_origin(*origin, 0.5, 0.5))


def _collection(root: Path, items: list[dict]) -> Path:
    path = root / "items.json"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
    return path


def _dated(root: Path, n: int, *, site="hmeimim", origin=(767565.0, 3921765.0), prefix="a"):
    items = []
    for k in range(n):
        image = _tiny(root / f"{prefix}{k}.tif", origin)
        items.append(_item(f"{prefix}{k}", image.name, DATES[k], _bounds(image), site=site,
                           angles=SUN[k]))
    return items


def test_a_folder_of_item_files_reads_as_the_collection_does(tmp_path):
    items = _dated(tmp_path, 3)
    for it in items:
        it["links"] = []
        (tmp_path / f"{it['id']}.json").write_text(json.dumps(it))
    (tmp_path / "catalog.json").write_text(json.dumps({"type": "Catalog", "id": "c",
                                                       "links": []}))
    jobs = stac_jobs(tmp_path)
    assert [(j.before.name, j.after.name) for j in jobs] == [("a0.tif", "a1.tif"),
                                                             ("a1.tif", "a2.tif")]
    assert jobs[0].before_acquisition.item_href == str(tmp_path / "a0.json")
    assert jobs[0].after_date == "2024-04-01T08:29:30+00:00"
    assert jobs[1].before_acquisition.sun_elevation == SUN[1][1]


def test_items_are_grouped_into_sites_by_a_property_or_by_footprint(tmp_path):
    far = (800000.0, 3950000.0)
    items = _dated(tmp_path, 3, site="hmeimim") + _dated(tmp_path, 2, site="saki", origin=far,
                                                         prefix="b")
    source = _collection(tmp_path, items[::-1])  # order in the file does not matter
    by_site = stac_jobs(source, group_by="site")
    assert [(j.name, j.extra["site"]) for j in by_site] == [
        ("hmeimim_a0_a1", "hmeimim"), ("hmeimim_a1_a2", "hmeimim"), ("saki_b0_b1", "saki")]
    by_place = stac_jobs(source, group_by="footprint")
    assert [(j.name, j.extra["site"]) for j in by_place] == [
        ("area1_a0_a1", "area1"), ("area1_a1_a2", "area1"), ("area2_b0_b1", "area2")]


def test_the_image_asset_is_the_one_named_else_the_data_role_else_visual(tmp_path):
    items = _dated(tmp_path, 2)
    for it in items:
        image = it["assets"].pop("image")
        it["assets"] = {"thumbnail": {"href": "t.png", "type": "image/png",
                                      "roles": ["thumbnail"]},
                        "rgb": {**image, "roles": ["visual"]}}
    source = _collection(tmp_path, items)
    assert [j.before_acquisition.asset for j in stac_jobs(source)] == ["rgb"]
    assert [j.before_acquisition.asset for j in stac_jobs(source, asset="rgb")] == ["rgb"]
    with pytest.raises(InputError, match="has no asset 'pan'"):
        stac_jobs(source, asset="pan")


def _bad(root: Path, case: str) -> tuple[Path, list[str], list[str]]:
    """A STAC source with one fault, extra options, and what the error line must say."""
    items = _dated(root, 3)
    opts: list[str] = []
    if case == "missing-asset":
        items[1]["assets"] = {"thumbnail": {"href": "a1.tif", "roles": ["thumbnail"]}}
        needles = ["item 'a1'", "has no image asset"]
    elif case == "asset-file-missing":
        items[2]["assets"]["image"]["href"] = "gone.tif"
        needles = ["item 'a2'", "asset 'image' file", "gone.tif", "not found"]
    elif case == "no-datetime":
        items[0]["properties"]["datetime"] = None
        needles = ["item 'a0'", "has no datetime"]
    elif case == "asset-not-a-raster":
        (root / "notes.tif").write_text("not an image\n")
        items[1]["assets"]["image"]["href"] = "notes.tif"
        needles = ["item 'a1'", "notes.tif", "is not a raster GDAL can read"]
    elif case == "asset-of-another-type":
        items[1]["assets"]["image"]["type"] = "application/json"
        needles = ["item 'a1'", "asset 'image' is application/json, not a raster"]
    elif case == "remote-asset":
        items[1]["assets"]["image"]["href"] = "https://data.example/a1.tif"
        needles = ["item 'a1'", "is remote", "file:// URLs"]
    elif case == "mixed-sites-no-key":
        items += _dated(root, 2, site="saki", origin=(800000.0, 3950000.0), prefix="b")
        needles = ["are of 2 sites", "--group-by"]
    elif case == "grouping-property-missing":
        del items[2]["properties"]["site"]
        opts = ["--group-by", "site"]
        needles = ["item 'a2'", "has no property 'site'"]
    elif case == "same-datetime":
        items[2]["properties"]["datetime"] = items[1]["properties"]["datetime"]
        needles = ["'a1' and 'a2'", "same datetime"]
    elif case == "id-twice":
        items[2]["id"] = "a1"
        needles = ["item 'a1' is listed twice"]
    elif case == "not-json":
        (root / "items.json").write_text("{not json")
        return root / "items.json", opts, ["items.json", "not valid JSON"]
    else:
        raise ValueError(case)
    return _collection(root, items), opts, needles


BAD_CASES = ["missing-asset", "asset-file-missing", "no-datetime", "asset-not-a-raster",
             "asset-of-another-type", "remote-asset", "mixed-sites-no-key",
             "grouping-property-missing", "same-datetime", "id-twice", "not-json"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_stac_exits_2_with_one_line_naming_the_item_and_writes_nothing(tmp_path, case):
    source, opts, needles = _bad(tmp_path / "in", case)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["--stac", str(source), "--out", str(out), *opts])
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, err, result.output)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(source) in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


@pytest.mark.parametrize("args, needle", [
    (["--stac", "i.json", "--series", "dir"], "--series or --stac, not both"),
    (["a.tif", "b.tif", "--group-by", "site"], "apply to --stac"),
    (["--manifest", "m.csv", "--asset", "image"], "apply to --stac"),
])
def test_stac_options_misused_are_refused(tmp_path, args, needle):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and needle in result.stderr, result.stderr


def test_a_single_pair_writes_a_styled_gpkg_and_a_stac_item_of_its_result(tmp_path):
    paths = synth.write_pair(synth.make_pair(seed=4, size_px=256), tmp_path / "in")
    config = tmp_path / "fast.yaml"
    config.write_text("coregistration: {grid: 2, window_px: 128}\noutput: {overlay_max_px: 256}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(paths["before"]), str(paths["after"]), "--out",
                                       str(out), "-c", str(config), "-q"])
    assert result.exit_code == 0, result.output
    fc = json.loads((out / "detections.geojson").read_text())
    frame = pyogrio.read_dataframe(out / "detections.gpkg", layer="detections")
    assert sorted(frame["id"]) == sorted(f["id"] for f in fc["features"])
    assert pyogrio.read_info(out / "detections.gpkg", layer="detections")["crs"] == "EPSG:4326"
    item = pystac.Item.from_file(str(out / "item.json"))
    assert item.id == "out" and item.properties["detect_changes:dates_known"] is False
    assert item.properties["detect_changes:before"]["path"] == str(paths["before"])
    assert item.properties["detect_changes:detections"] == len(fc["features"])
    assert Path(item.assets["detections_gpkg"].get_absolute_href()) == out / "detections.gpkg"
    assert not [link for link in item.links if link.rel in ("root", "parent")]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_the_layer_and_the_item_are_published_with_the_run_or_nothing_is(tmp_path, monkeypatch):
    """The GeoPackage and item.json are made in the run's staging folder: a run that fails
    while making them (here the GeoPackage writer) leaves the folder as it was, not a
    complete-looking report.json without them."""
    from pipeline.batch import runner
    from pipeline.batch.runner import PairJob, run_job
    from pipeline.config import config_from_mapping

    paths = synth.write_pair(synth.make_pair(seed=4, size_px=256), tmp_path / "in")
    config = config_from_mapping({"coregistration": {"grid": 2, "window_px": 128},
                                  "output": {"overlay_max_px": 256}})
    job = PairJob("out", paths["before"], paths["after"])

    def broken(path, features, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(runner.export, "write_detections_gpkg", broken)
    with pytest.raises(OSError):
        run_job(job, tmp_path / "out", config, in_batch=False)
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.undo()
    run_job(job, tmp_path / "out", config, in_batch=False)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.json", "detections.gpkg", "item.json", "change_mask.tif"} <= names
    item = pystac.Item.from_file(str(tmp_path / "out" / "item.json"))
    assert {"detections_gpkg", "report_json", "change_mask"} <= set(item.assets)


def test_timeline_picture_has_a_row_per_site_and_zone_and_marks_a_failed_pair(tmp_path):
    from pipeline.report.timeline import timeline_figure, write_timeline_png

    def rec(site, zone, date, before, status="ok", up=0, down=0):
        counts = {"aircraft_appeared": up, "aircraft_disappeared": down,
                  "launcher_appeared": 0, "launcher_disappeared": 0}
        if status == "failed":
            counts = dict.fromkeys(counts)
        return {"date": date, "before_date": before, "pair": f"{site}-{date}", "status": status,
                "site": site, "zone": zone, **counts}

    records = [rec("hmeimim", "all", "2024-04-01", "2024-03-01", down=3),
               rec("hmeimim", "apron", "2024-04-01", "2024-03-01", down=2),
               rec("hmeimim", "all", "2024-05-01", "2024-04-01", status="failed"),
               rec("hmeimim", "apron", "2024-05-01", "2024-04-01", status="failed"),
               rec("saki", "all", "2024-04-02T10:00:00+00:00", "2024-03-02T10:00:00+00:00", up=1)]
    fig = timeline_figure(records, ["aircraft", "launcher"])
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == [f"{cat} \u2014 {where}" for where in (
        "hmeimim \u00b7 whole scene", "hmeimim \u00b7 apron", "saki \u00b7 whole scene")
        for cat in ("aircraft", "launcher")]
    net = fig.axes[0].lines[-1].get_ydata()  # the failed pair adds nothing
    assert list(net) == [0, -3, -3]
    assert "pair failed (not counted)" in [t.get_text() for t in fig.legends[0].get_texts()]
    png = write_timeline_png(tmp_path / "timeline.png", records, ["aircraft", "launcher"])
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_plain_images_get_an_item_without_footprint_and_no_geopackage(tmp_path):
    import numpy as np
    from PIL import Image

    pair = synth.make_pair(seed=4, size_px=256)
    for name, image in (("before.png", pair.before), ("after.png", pair.after)):
        Image.fromarray(np.moveaxis(image, 0, -1)).save(tmp_path / name)
    config = tmp_path / "fast.yaml"
    config.write_text("coregistration: {grid: 2, window_px: 128}\noutput: {overlay_max_px: 256}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(tmp_path / "before.png"), str(tmp_path / "after.png"),
                                       "--gsd", "0.5", "--out", str(out), "-c", str(config), "-q"])
    assert result.exit_code == 0, result.output
    item = pystac.Item.from_file(str(out / "item.json"))
    assert item.geometry is None and item.bbox is None
    assert set(item.assets) == {"detections_px", "change_mask", "overlay", "report", "report_json"}
    assert not (out / "detections.gpkg").exists()
