"""The README's table of bad inputs, case by case: what each gets (exit code, one line naming the
file and the reason, no traceback) and that no output is left half-written.

Every case id below has a row in README.md's "Bad input" table (checked by the last test), so the
table and the tests cannot drift apart.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import test_stac  # its bad STAC cases have rows in the README too
from click.testing import CliRunner
from conftest import REPO, write_tif
from rasterio.transform import from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform

from pipeline.cli import main
from pipeline.testing import synth

SIZE = 384


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small synthetic pair with changes (uint8 RGB, EPSG:32636, 0.5 m) and its parts."""
    folder = tmp_path_factory.mktemp("base")
    # seed 13 (none of the verifier's training scenes, seeds 4-11): three aircraft and a
    # launcher change; the shipped verifier finds three of them (one disappeared aircraft
    # scores just under its threshold)
    pair = synth.make_pair(seed=13, size_px=SIZE, scenario="random", difficulty="easy")
    synth.write_pair(pair, folder)
    return pair, folder / "before.tif", folder / "after.tif"


def _profile(path):
    with rasterio.open(path) as ds:
        return ds.profile, ds.read()


def _derive(src, dst, *, data=None, **changes):
    """Write ``dst`` like ``src`` with some profile items (and optionally the pixels) changed."""
    profile, pixels = _profile(src)
    profile.update(changes)
    data = pixels if data is None else data
    profile.update(count=data.shape[0], dtype=data.dtype.name)
    if data.dtype != np.uint8 or data.shape[0] != 3:
        profile.pop("photometric", None)
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(data)
    return dst


# Each builder gets (base, tmp) and returns the command line arguments; some also return what
# else to check. Expected: (exit code, substrings of the one error line).

def _missing_file(base, tmp):
    return [base[1], tmp / "nope.tif"], tmp / "nope.tif"


def _empty_file(base, tmp):
    (tmp / "empty.tif").write_bytes(b"")
    return [base[1], tmp / "empty.tif"], tmp / "empty.tif"


def _not_a_raster(base, tmp):
    (tmp / "notes.tif").write_text("not an image\n")
    return [base[1], tmp / "notes.tif"], tmp / "notes.tif"


def _truncated_tiff(base, tmp):
    data = base[2].read_bytes()
    (tmp / "cut.tif").write_bytes(data[: len(data) // 2])
    return [base[1], tmp / "cut.tif"], tmp / "cut.tif"


def _truncated_cog(base, tmp):
    # a cloud-optimised layout keeps its header at the start: it opens, and only the pixel
    # blocks past the cut are missing
    rasterio.shutil.copy(base[2], tmp / "full.tif", driver="COG")
    data = (tmp / "full.tif").read_bytes()
    (tmp / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    return [base[1], tmp / "cut.tif"], tmp / "cut.tif"


def _vrt_missing_source(base, tmp):
    # GDAL opens a VRT from its XML alone: a source moved away shows only at the first read
    shutil.copy(base[2], tmp / "src.tif")
    rasterio.shutil.copy(tmp / "src.tif", tmp / "after.vrt", driver="VRT")
    (tmp / "src.tif").unlink()
    return [base[1], tmp / "after.vrt"], tmp / "after.vrt"


def _plain_jpeg(src, dst):
    _, pixels = _profile(src)
    with rasterio.open(dst, "w", driver="JPEG", width=pixels.shape[2], height=pixels.shape[1],
                       count=3, dtype="uint8", quality=95) as ds:
        ds.write(pixels)
    return dst


def _jpeg_without_georeference(base, tmp):
    after = _plain_jpeg(base[2], tmp / "after.jpg")
    return [base[1], after], after


def _no_crs(base, tmp):
    _derive(base[2], tmp / "nocrs.tif", crs=None)
    return [base[1], tmp / "nocrs.tif"], tmp / "nocrs.tif"


def _rotated_geotransform(base, tmp):
    t = _profile(base[2])[0]["transform"]
    rotated = t @ rasterio.Affine.rotation(10)
    _derive(base[2], tmp / "rot.tif", transform=rotated)
    return [base[1], tmp / "rot.tif"], tmp / "rot.tif"


def _no_overlap(base, tmp):
    t = _profile(base[2])[0]["transform"]
    _derive(base[2], tmp / "far.tif", transform=from_origin(t.c + 10_000, t.f, 0.5, 0.5))
    return [base[1], tmp / "far.tif"], tmp / "far.tif"


def _overlap_below_minimum(base, tmp):
    t = _profile(base[2])[0]["transform"]
    # 10 px of 384 overlap in x: 3 % of BEFORE, below the default min_overlap of 5 %
    _derive(base[2], tmp / "edge.tif", transform=from_origin(t.c + (SIZE - 10) * 0.5, t.f, 0.5, 0.5))
    return [base[1], tmp / "edge.tif"], tmp / "edge.tif"


def _all_nodata(base, tmp):
    _derive(base[2], tmp / "zeros.tif", data=np.zeros((3, SIZE, SIZE), "uint8"), nodata=0)
    return [base[1], tmp / "zeros.tif"], tmp / "zeros.tif"


def _all_nan_float(base, tmp):
    _derive(base[2], tmp / "nan.tif", data=np.full((3, SIZE, SIZE), np.nan, "float32"),
            predictor=1)
    return [base[1], tmp / "nan.tif"], tmp / "nan.tif"


def _tiny_raster(base, tmp):
    t = _profile(base[2])[0]["transform"]
    write_tif(tmp / "one.tif", np.ones((3, 1, 1), "uint8"), transform=t)
    return [base[1], tmp / "one.tif"], tmp / "one.tif"


def _pixel_sizes_10x_apart(base, tmp):
    t = _profile(base[2])[0]["transform"]
    _, px = _profile(base[2])
    coarse = px[:, ::10, ::10]
    write_tif(tmp / "coarse.tif", coarse, transform=from_origin(t.c, t.f, 5.0, 5.0))
    return [base[1], tmp / "coarse.tif"], tmp / "coarse.tif"


def _unsupported_dtype(base, tmp):
    _, px = _profile(base[2])
    _derive(base[2], tmp / "complex.tif", data=px.astype("complex64"), predictor=1)
    return [base[1], tmp / "complex.tif"], tmp / "complex.tif"


def _output_parent_is_a_file(base, tmp):
    (tmp / "afile").write_text("x")
    return [base[1], base[2], "--out", tmp / "afile" / "out"], tmp / "afile" / "out"


def _output_is_a_file(base, tmp):
    (tmp / "taken").write_text("x")
    return [base[1], base[2], "--out", tmp / "taken"], tmp / "taken"


def _output_folder_exists(base, tmp):
    (tmp / "out").mkdir()
    (tmp / "out" / "detections.geojson").write_text("{}")
    return [base[1], base[2], "--out", tmp / "out"], tmp / "out"


def _config(text):
    def build(base, tmp):
        (tmp / "c.yaml").write_text(text)
        return [base[1], base[2], "--config", tmp / "c.yaml"], tmp / "c.yaml"
    return build


def _config_missing(base, tmp):
    return [base[1], base[2], "--config", tmp / "none.yaml"], tmp / "none.yaml"


def _verifier_model(text):
    """A configuration naming ``text`` as the verifier's model file (the culprit)."""
    def build(base, tmp):
        (tmp / "model.json").write_text(text)
        (tmp / "c.yaml").write_text(f"verifier:\n  model: {tmp / 'model.json'}\n")
        return [base[1], base[2], "--config", tmp / "c.yaml"], tmp / "model.json"
    return build


def _detector_model(make):
    """A configuration naming a detector model file that ``make(path)`` writes (or not)."""
    def build(base, tmp):
        make(tmp / "model.onnx")
        (tmp / "c.yaml").write_text(f"detector:\n  model: {tmp / 'model.onnx'}\n")
        return [base[1], base[2], "--config", tmp / "c.yaml"], tmp / "model.onnx"
    return build


def _foreign_onnx(path):
    """The shipped model with another kind in its metadata (same length)."""
    from pipeline.detect.aircraft import MODEL_PATH
    path.write_bytes(MODEL_PATH.read_bytes().replace(b"centernet-aircraft", b"centernet-aircrafX"))


def _verifier_model_in_a_batch(base, tmp):
    args, culprit = _verifier_model("not json\n")(base, tmp)
    (tmp / "pairs.csv").write_text(f"before,after\n{base[1]},{base[2]}\n")
    return ["--manifest", tmp / "pairs.csv", *args[2:]], culprit


def _manifest(text):
    def build(base, tmp):
        (tmp / "data").mkdir()
        (tmp / "data" / "pairs.csv").write_text(text.format(before=base[1], after=base[2]))
        return ["--manifest", tmp / "data" / "pairs.csv"], tmp / "data" / "pairs.csv"
    return build


CASES = {
    # id: (builder, exit code, substrings of the error line besides the file's path)
    "missing-file": (_missing_file, 2, ["not found"]),
    "empty-file": (_empty_file, 2, ["empty"]),
    "not-a-raster": (_not_a_raster, 2, ["cannot be opened"]),
    "truncated-tiff": (_truncated_tiff, 2, ["truncated"]),
    "truncated-cog": (_truncated_cog, 2, ["truncated", "block"]),
    "vrt-missing-source": (_vrt_missing_source, 2, ["AFTER's source file", "src.tif",
                                                    "is missing"]),
    "jpeg-without-georeference": (_jpeg_without_georeference, 2, ["no georeference", "--gsd"]),
    "no-crs": (_no_crs, 2, ["no CRS"]),
    "rotated-geotransform": (_rotated_geotransform, 2, ["rotated"]),
    "no-overlap": (_no_overlap, 2, ["overlap"]),
    "overlap-below-minimum": (_overlap_below_minimum, 2, ["min_overlap"]),
    "all-nodata": (_all_nodata, 2, ["no valid pixels"]),
    "all-nan-float": (_all_nan_float, 2, ["no valid pixels"]),
    "one-pixel-raster": (_tiny_raster, 2, ["1 x 1"]),
    "pixel-sizes-10x-apart": (_pixel_sizes_10x_apart, 2, ["pixel size", "10.0"]),
    "unsupported-dtype": (_unsupported_dtype, 2, ["complex64"]),
    "output-parent-is-a-file": (_output_parent_is_a_file, 2, ["cannot create"]),
    "output-is-a-file": (_output_is_a_file, 2, ["not a folder"]),
    "output-folder-exists": (_output_folder_exists, 2, ["--overwrite"]),
    "config-unknown-key": (_config("difference:\n  thresold_sigma: 4\n"), 2,
                           ["difference.thresold_sigma", "unknown key"]),
    "config-negative-size": (_config("classes:\n  - {name: x, category: aircraft, "
                                     "length_m: [-5, 10], width_m: [2, 4]}\n"), 2,
                             ["classes.0", "length_m", "0 < min < max"]),
    "config-not-yaml": (_config("difference: [unclosed\n"), 2, ["not valid YAML"]),
    "config-missing": (_config_missing, 2, ["not found"]),
    # a model trained before the features changed (here: other features), or no JSON at all
    "verifier-model-of-another-version": (
        _verifier_model('{"kind": "trees", "features": ["log_blob_length"], "baseline": 0, '
                        '"threshold": 0.5, "trees": []}'), 2, ["features", "retrain"]),
    "verifier-model-not-json": (_verifier_model("not json\n"), 2, ["not valid JSON"]),
    "verifier-model-in-a-batch": (_verifier_model_in_a_batch, 2, ["not valid JSON"]),
    "detector-model-missing": (_detector_model(lambda p: None), 2, ["not found"]),
    "detector-model-corrupt": (_detector_model(lambda p: p.write_bytes(b"\x08\x07garbage")), 2,
                               ["not an ONNX model"]),
    "detector-model-of-another-kind": (_detector_model(_foreign_onnx), 2,
                                       ["not an aircraft detector"]),
    "manifest-missing-column": (_manifest("before,name\n{before},a\n"), 2,
                                ["lacks the column", "after"]),
    "manifest-path-escapes-its-folder": (_manifest("before,after\n../../x/before.tif,{after}\n"),
                                         2, ["line 2", "outside the manifest's folder"]),
}


def _invoke(args, tmp):
    if "--out" not in [str(a) for a in args]:
        args = [*args, "--out", tmp / "out"]
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip()


def _final_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_line_naming_the_file(case, base, tmp_path):
    build, code, needles = CASES[case]
    args, culprit = build(base, tmp_path)
    before_run = {p: p.read_bytes() for p in _final_files(tmp_path / "out")}
    got, err = _invoke(args, tmp_path)
    assert got == code, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert str(culprit) in err, err
    for n in needles:
        assert n in err, (n, err)
    # nothing was written or changed in the output folder
    assert {p: p.read_bytes() for p in _final_files(tmp_path / "out")} == before_run


def test_debug_shows_the_traceback(base, tmp_path):
    args, _ = _truncated_tiff(base, tmp_path)
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--out", str(tmp_path / "o"),
                                                                 "--debug"])
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


# Inputs that look odd but are fine: they run (exit 0) and give valid outputs.

def _outputs_valid(out: Path, *, pixel_frame=False) -> dict:
    report = json.loads((out / "report.json").read_text())
    name = "detections_px.geojson" if pixel_frame else "detections.geojson"
    fc = json.loads((out / name).read_text())
    assert fc["type"] == "FeatureCollection"
    assert len(fc["features"]) == report["detections"]
    with rasterio.open(out / "change_mask.tif") as ds:
        assert ds.read(1).shape == (report["grid"]["height"], report["grid"]["width"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
    return report


def _run_ok(args, tmp):
    code, err = _invoke(args, tmp)
    assert code == 0, err
    return tmp / "out"


def test_jpeg_pair_with_gsd_runs_in_pixel_coordinates(base, tmp_path):
    before = _plain_jpeg(base[1], tmp_path / "before.jpg")
    after = _plain_jpeg(base[2], tmp_path / "after.jpg")
    out = _run_ok([before, after, "--gsd", "0.5"], tmp_path)
    report = _outputs_valid(out, pixel_frame=True)
    assert not (out / "detections.geojson").exists()
    assert report["grid"]["frame"] == "pixel"
    assert report["inputs"]["before"]["path"] == str(before)  # the file, not GDAL's vrt:// URL
    assert "pixel coordinates" in (out / "report.html").read_text()
    co = report["coregistration"]
    assert abs(co["shift_x_px"] - base[0].shift_px[0]) < 0.3, co
    assert abs(co["shift_y_px"] - base[0].shift_px[1]) < 0.3, co
    feats = json.loads((out / "detections_px.geojson").read_text())["features"]
    assert len(feats) >= 3
    for f in feats:
        xs, ys = zip(*f["geometry"]["coordinates"][0])
        assert 0 <= min(xs) and max(xs) <= SIZE and 0 <= min(ys) and max(ys) <= SIZE


def test_geographic_crs_after_is_reprojected(base, tmp_path):
    profile, px = _profile(base[2])
    t, w, h = calculate_default_transform(profile["crs"], "EPSG:4326", SIZE, SIZE,
                                          *rasterio.transform.array_bounds(SIZE, SIZE, profile["transform"]))
    geo = np.zeros((3, h, w), "uint8")
    reproject(px, geo, src_transform=profile["transform"], src_crs=profile["crs"], dst_transform=t,
              dst_crs="EPSG:4326", resampling=Resampling.cubic)
    write_tif(tmp_path / "geo.tif", geo, transform=t, crs="EPSG:4326", nodata=0)
    out = _run_ok([base[1], tmp_path / "geo.tif"], tmp_path)
    assert _outputs_valid(out)["detections"] >= 3


def test_uint16_rgb_nir_against_uint8_rgb_compares_the_colours_both_have(base, tmp_path):
    _, a = _profile(base[2])
    four = np.concatenate([a, a[:1]]).astype("uint16") * 16  # 12-bit product with a NIR band
    _derive(base[2], tmp_path / "four.tif", data=four)
    with rasterio.open(tmp_path / "four.tif", "r+") as ds:
        ds.descriptions = ("Red", "Green", "Blue", "NIR")
    out = _run_ok([base[1], tmp_path / "four.tif"], tmp_path / "four")
    rgb = _run_ok([base[1], base[2]], tmp_path / "rgb")
    # the same changes as the RGB pair itself (not merely as many), each within 2 m of its own
    mine, theirs = _changes(out), _changes(rgb)
    assert [m[:2] for m in mine] == [t[:2] for t in theirs]
    assert all(np.hypot(*(np.subtract(m[2], t[2]))) < 2 for m, t in zip(mine, theirs))
    assert len(mine) >= 3


def _changes(out: Path) -> list[tuple]:
    """(category, change, centre in BEFORE pixels) of each detection of ``out``, sorted."""
    report = json.loads((out / "report.json").read_text())
    features = json.loads((out / "detections.geojson").read_text())["features"]
    with rasterio.open(report["inputs"]["before"]["path"]) as ds:
        to_px = ~ds.transform
        crs = ds.crs
    found = []
    for f in features:
        lon, lat = np.mean(f["geometry"]["coordinates"][0][:-1], axis=0)
        x, y = transform("EPSG:4326", crs, [lon], [lat])
        found.append((f["properties"]["category"], f["properties"]["change"],
                      to_px @ (x[0], y[0])))
    return sorted(found, key=lambda f: (f[0], f[1], f[2][0]))


def test_single_band_against_rgb_compares_luminance(base, tmp_path):
    _, b = _profile(base[1])
    _derive(base[1], tmp_path / "pan.tif", data=b.mean(axis=0, keepdims=True).astype("uint8"))
    out = _run_ok([tmp_path / "pan.tif", base[2]], tmp_path)
    # the aircraft; an olive launcher differs from the ground in colour more than in
    # brightness and may be lost in luminance (README, "Bad input")
    assert _outputs_valid(out)["detections"] >= 2


def test_paths_with_spaces_and_non_ascii_letters(base, tmp_path):
    folder = tmp_path / "Hmeimim før und nach"
    folder.mkdir()
    b, a = shutil.copy(base[1], folder / "vor dem.tif"), shutil.copy(base[2], folder / "après.tif")
    code, err = _invoke([b, a, "--out", folder / "résultats 1"], tmp_path)
    assert code == 0, err
    _outputs_valid(folder / "résultats 1")


def test_existing_output_folder_is_replaced_with_overwrite(base, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.geojson").write_text("{}")
    (out / "notes.txt").write_text("mine")
    code, err = _invoke([base[1], base[2], "--out", out, "--overwrite"], tmp_path)
    assert code == 0, err
    _outputs_valid(out)
    assert (out / "notes.txt").read_text() == "mine"  # files that are not ours are left alone


def test_an_empty_existing_output_folder_is_used(base, tmp_path):
    (tmp_path / "out").mkdir()
    _outputs_valid(_run_ok([base[1], base[2]], tmp_path))


def test_same_file_twice_gives_no_detections(base, tmp_path):
    out = _run_ok([base[1], base[1]], tmp_path)
    assert _outputs_valid(out)["detections"] == 0


def test_every_case_has_a_row_in_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Bad input", 1)[1].split("\n## ", 1)[0]
    ids = set(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
    tested = set(CASES) | {n.replace("test_", "").replace("_", "-") for n in globals()
                           if n.startswith("test_")}
    assert set(CASES) <= ids, sorted(set(CASES) - ids)
    assert ids <= tested | ROWS_TESTED_ELSEWHERE, sorted(ids - tested - ROWS_TESTED_ELSEWHERE)
    assert len(ids) >= 20


# README rows whose test lives in another module (named in the row)
ROWS_TESTED_ELSEWHERE = {"corrupt-pair-in-a-batch", "cloud-covered-overlap", "larger-than-memory",
                         "killed-run", "random-small-rasters",
                         "a-path-gdal-cannot-wrap-is-refused-naming-the-file",
                         *(f"stac-{case}" for case in test_stac.BAD_CASES)}
