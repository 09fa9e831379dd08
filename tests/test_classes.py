"""Classes that agree with the config's own table, the confusion table of classes, and the
``vehicle`` category of launcher-sized detections outside the launcher zones."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from shapely.geometry import Point, mapping, shape

from pipeline.cli import eval_main, main
from pipeline.config import Config, config_from_mapping, load_config
from pipeline.detect.blobs import Blob
from pipeline.detect.classify import (Detection, footprint_class, launcher_zone_categories,
                                      length_fit, refines)
from pipeline.errors import ConfigError, PipelineWarning
from pipeline.evaluate import class_confusion, format_confusion
from pipeline.io.raster import Grid
from pipeline.testing import synth

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_tiles" / "hmeimim"


def _class(length_m: float, width_m: float) -> str | None:
    cls, _ = footprint_class(length_m, width_m, Config().classes)
    return cls and cls.name


# ---------------------------------------------------------------------------------------------
# classes


def test_an_il76_is_a_medium_transport_though_large_transport_also_holds_it():
    # 50.5 x 46.6 m lies in both ranges: mid-way in medium-transport, at large-transport's corner
    assert _class(50.5, 46.6) == "medium-transport"
    assert _class(73.3, 69.1) == "large-transport"  # An-124
    assert _class(58.0, 50.0) == "large-transport"  # nearer large-transport's centre
    assert _class(40.0, 39.0) == "medium-transport"


# the footprints (length, width) the synthetic truth gives each kind (pipeline/testing/synth.py)
SYNTHETIC_SIZES = {"An-124": (73.3, 69.1), "Il-76": (50.5, 48.02), "An-26": (29.2, 23.8),
                   "Su-24": (22.53, 17.64), "Su-34": (23.34, 14.7), "Su-35": (21.9, 15.3),
                   "Ka-52": (13.5, 7.3), "S-400 TEL": (20.5, 3.2), "radar": (12.3, 3.1)}


@pytest.mark.parametrize("kind", sorted(SYNTHETIC_SIZES))
def test_each_synthetic_kind_at_its_own_size_gets_the_class_of_its_truth(kind):
    # (a Mi-8 without tanks, 18 x 4.5 m, is launcher-sized: the limit of size alone, README)
    assert _class(*SYNTHETIC_SIZES[kind]) == synth.kind_class(kind)


def test_a_class_mostly_within_a_broader_one_wins_over_it():
    classes = {c.name: c for c in Config().classes}
    assert refines(classes["combat-jet"], classes["light-aircraft"])
    assert refines(classes["combat-jet"], classes["helicopter"])
    assert not refines(classes["large-transport"], classes["medium-transport"])
    assert not refines(classes["medium-transport"], classes["large-transport"])
    assert _class(21.9, 15.3) == "combat-jet"  # Su-35: also a helicopter's and a light aircraft's
    assert _class(25.0, 21.3) == "helicopter"  # Mi-8 rotor disc: also a light aircraft's


def test_length_fit_is_one_at_the_centre_of_the_lengths_and_zero_outside():
    large = next(c for c in Config().classes if c.name == "large-transport")
    assert length_fit((50.0 * 85.0) ** 0.5, large) == pytest.approx(1.0)
    assert length_fit(50.0, large) == pytest.approx(0.5)
    assert length_fit(49.0, large) == 0.0


# ---------------------------------------------------------------------------------------------
# the confusion table

ORIGIN_LONLAT = (35.9480, 35.4000)


def _feature(klass: str, change: str, east_m: float, *, category: str = "aircraft") -> dict:
    """A 10 m square feature ``east_m`` east of a fixed point."""
    lon0, lat0 = ORIGIN_LONLAT
    deg = 1 / 111_320.0 / 0.8148  # a metre east at 35.4 deg north, roughly
    square = Point(lon0 + east_m * deg, lat0).buffer(5 * deg, cap_style="square")
    return {"type": "Feature", "geometry": mapping(square),
            "properties": {"category": category, "class": klass, "change": change}}


def _made_up():
    truth = [_feature("combat-jet", "appeared", 0), _feature("helicopter", "appeared", 100),
             _feature("sam-launcher", "disappeared", 200, category="launcher"),
             _feature("medium-transport", "appeared", 300)]
    found = [_feature("helicopter", "appeared", 2),       # a jet taken for a helicopter
             _feature("helicopter", "appeared", 101),     # right
             _feature("helicopter", "disappeared", 199),  # a launcher taken for a helicopter
             _feature("light-aircraft", "appeared", 900)]  # nothing there
    return truth, found


def test_confusion_counts_matched_pairs_by_truth_and_detected_class():
    truth, found = _made_up()
    table = class_confusion(truth, found)
    assert table.pairs == {("combat-jet", "helicopter"): 1, ("helicopter", "helicopter"): 1,
                           ("sam-launcher", "helicopter"): 1}
    assert table.missed == {"medium-transport": 1}
    assert table.unmatched == {"light-aircraft": 1}
    assert table.precision("helicopter") == pytest.approx(1 / 3)
    assert table.recall("helicopter") == 1.0
    assert table.recall("combat-jet") == 0.0 and table.precision("combat-jet") is None
    assert table.recall("medium-transport") is None  # never matched
    summed = table + table
    assert summed.count("combat-jet", "helicopter") == 2 and summed.missed == {"medium-transport": 2}
    assert summed.precision("helicopter") == pytest.approx(1 / 3)


def test_confusion_matches_within_a_change_only():
    truth = [_feature("helicopter", "appeared", 0)]
    table = class_confusion(truth, [_feature("helicopter", "disappeared", 0)])
    assert table.pairs == {} and table.missed == {"helicopter": 1}
    assert table.unmatched == {"helicopter": 1}


def test_eval_command_prints_the_confusion_table_and_writes_it_as_json(tmp_path):
    truth, found = _made_up()
    paths = []
    for name, features in (("truth", truth), ("detections", found)):
        paths.append(tmp_path / f"{name}.geojson")
        paths[-1].write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = CliRunner().invoke(eval_main, [*map(str, paths), "--json", str(tmp_path / "e.json")])
    assert result.exit_code == 0, result.output
    assert format_confusion(class_confusion(truth, found)) in result.output
    assert result.output.strip().splitlines()[-1].split()[:2] == ["all", "all"]
    written = json.loads((tmp_path / "e.json").read_text())
    assert {"truth": "combat-jet", "detected": "helicopter", "count": 1} in \
        written["classes"]["pairs"]
    assert written["classes"]["classes"]["helicopter"]["precision"] == pytest.approx(0.3333)
    assert written["scores"][-1]["category"] == "all"


# ---------------------------------------------------------------------------------------------
# launcher zones

# a UTM 36N grid at Hmeimim, 0.5 m pixels
GRID = Grid(rasterio.crs.CRS.from_epsg(32636), from_origin(767565.0, 3921765.0, 0.5, 0.5),
            1024, 1024, (0.5, 0.5))


def _lonlat(col: float, row: float) -> tuple[float, float]:
    x, y = GRID.transform @ (col + 0.5, row + 0.5)
    lon, lat = warp_transform(GRID.crs, "EPSG:4326", [x], [y])
    return lon[0], lat[0]


def _square_lonlat(col: float, row: float, half_px: float) -> list[list[float]]:
    return [list(_lonlat(col + dx, row + dy)) for dx, dy in
            ((-half_px, -half_px), (half_px, -half_px), (half_px, half_px), (-half_px, half_px))]


def _det(id_: str, col: float, row: float, *, klass: str = "sam-launcher",
         category: str = "launcher") -> Detection:
    blob = Blob((0, 0, 1, 1), 100, (col, row), ((col, row),) * 4, 14.0, 3.5, 40.0, 0.0, 8.0, 12.0)
    return Detection(blob, klass, category, "disappeared", 0.8, 0.7, 2.0, 0.5, id_)


def _zones(**zones) -> Config:
    return config_from_mapping({"launcher_zones": zones})


def test_launcher_inside_a_zone_stays_a_launcher_and_outside_becomes_a_vehicle():
    config = _zones(enabled=True, polygons_lonlat=[_square_lonlat(200, 300, 40)])
    dets = [_det("d001", 205, 310), _det("d002", 700, 650),
            _det("d003", 700, 650, klass="helicopter", category="aircraft")]
    out = launcher_zone_categories(dets, GRID, config.launcher_zones)
    assert [(d.id, d.category, d.klass) for d in out] == [
        ("d001", "launcher", "sam-launcher"), ("d002", "vehicle", "sam-launcher"),
        ("d003", "aircraft", "helicopter")]
    assert config.categories == ["aircraft", "launcher", "vehicle"]


def test_without_launcher_zones_launchers_stay_launchers_and_with_no_zone_none_do():
    dets = [_det("d001", 205, 310)]
    assert launcher_zone_categories(dets, GRID, Config().launcher_zones) == dets
    assert Config().categories == ["aircraft", "launcher"]
    nowhere = _zones(enabled=True).launcher_zones
    assert [d.category for d in launcher_zone_categories(dets, GRID, nowhere)] == ["vehicle"]


def test_launcher_zones_on_a_pixel_grid_leave_launchers_with_a_warning():
    config = _zones(enabled=True, polygons_lonlat=[_square_lonlat(200, 300, 40)])
    pixel_grid = Grid(GRID.crs, GRID.transform, 1024, 1024, (0.5, 0.5), pixel_frame=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = launcher_zone_categories([_det("d001", 700, 650)], pixel_grid,
                                       config.launcher_zones)
    assert [d.category for d in out] == ["launcher"]
    assert any(issubclass(w.category, PipelineWarning) for w in caught)


def test_the_sample_launcher_site_holds_the_sample_launchers():
    config = _zones(enabled=True, file=str(SAMPLE / "launcher_zones.geojson"))
    with rasterio.open(SAMPLE / "before.tif") as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height, (0.5, 0.5))
        truth = json.loads((SAMPLE / "truth.geojson").read_text())["features"]
        dets = []
        for f in truth:
            lon, lat = shape(f["geometry"]).centroid.coords[0]
            xs, ys = warp_transform("EPSG:4326", ds.crs, [lon], [lat])
            col, row = ~ds.transform @ (xs[0], ys[0])
            p = f["properties"]
            dets.append(_det(p["id"], col - 0.5, row - 0.5, klass=p["class"],
                             category=p["category"]))
    dets.append(_det("bus", 100, 900))  # on the apron, far from the site
    out = launcher_zone_categories(dets, grid, config.launcher_zones)
    assert [d.category for d in out] == [f["properties"]["category"] for f in truth] + ["vehicle"]


def test_a_bad_launcher_zones_file_is_one_config_error_naming_the_key_and_the_file(tmp_path):
    zones = tmp_path / "zones.geojson"
    zones.write_text('{"type": "FeatureCollection", "features": [')
    config = tmp_path / "c.yaml"
    config.write_text(f"launcher_zones:\n  enabled: true\n  file: {zones}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    line = caught.value.line()
    assert caught.value.key == "launcher_zones.file" and "\n" not in str(caught.value)
    assert line.startswith(f"{config}: launcher_zones.file: {zones}: not valid GeoJSON (")
    result = CliRunner().invoke(main, ["a.tif", "b.tif", "--out", str(tmp_path / "out"),
                                       "--config", str(config)])
    assert result.exit_code == 2 and result.stderr.strip() == f"detect-changes: error: {line}"


@pytest.mark.parametrize("content, needle", [
    (None, "file not found"),
    ({"type": "Point", "coordinates": [35.9, 35.4]}, "a Point, not a Polygon or MultiPolygon"),
    ({"type": "FeatureCollection", "features": []}, "holds no polygon"),
    ({"type": "Polygon", "coordinates": [[[767565, 3921765], [767600, 3921765],
                                          [767600, 3921700], [767565, 3921765]]]},
     "is not a lon/lat position in degrees"),
])
def test_each_kind_of_bad_zones_file_is_named(tmp_path, content, needle):
    zones = tmp_path / "zones.geojson"
    if content is not None:
        zones.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=needle) as caught:
        _zones(enabled=True, file=str(zones))
    assert caught.value.key == "launcher_zones.file" and str(zones) in str(caught.value)


def test_zones_given_while_off_are_refused():
    with pytest.raises(ConfigError, match="enabled is false") as caught:
        _zones(polygons_lonlat=[_square_lonlat(200, 300, 40)])
    assert caught.value.key == "launcher_zones"


def test_a_zones_file_survives_overrides_and_is_written_back_as_its_path():
    path = str(SAMPLE / "launcher_zones.geojson")
    config = _zones(enabled=True, file=path)
    assert config.model_dump(mode="json")["launcher_zones"]["file"] == path
    again = config.with_overrides({"processing": {"threads": 1}})
    assert again.launcher_zones == config.launcher_zones and len(again.launcher_zones.polygons()) == 1
