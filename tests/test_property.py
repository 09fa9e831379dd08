"""Property: whatever small rasters arrive (sizes, dtypes, bands, nodata layouts, shifts, pixel
sizes, configs), ``detect-changes`` ends with exit 0 and valid outputs, or exit 2 and one line
naming a file, never an uncaught exception (README, "Bad input": random-small-rasters)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin
from scipy import ndimage

from pipeline.cli import main

pytestmark = pytest.mark.slow  # a hundred small pipeline runs

ORIGIN = (767565.0, 3921765.0)  # Hmeimim, EPSG:32636
DTYPES = ("uint8", "uint16", "int16", "float32")


def _texture(rng, shape, bands):
    base = ndimage.gaussian_filter(rng.normal(size=shape), 2.0) * 6 + rng.normal(0, 0.2, shape)
    return np.stack([base * (1 + 0.1 * b) for b in range(bands)])


def _as(dtype, img):
    lo, hi = (0, 250) if dtype == "uint8" else (0, 4000) if dtype != "float32" else (0, 1)
    img = (img - img.min()) / (np.ptp(img) or 1)
    return (lo + img * (hi - lo)).astype(dtype)


@st.composite
def rasters(draw):
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    h, w = draw(st.integers(8, 200)), draw(st.integers(8, 200))
    scene = rng.normal(size=(h + 48, w + 48))
    spec = {}
    for role in ("before", "after"):
        spec[role] = dict(
            dtype=draw(st.sampled_from(DTYPES)),
            bands=draw(st.sampled_from((1, 3, 4))),
            nodata=draw(st.sampled_from(("none", "declared-corner", "nan-block", "all"))),
        )
    spec["shift"] = (draw(st.floats(-20, 20)), draw(st.floats(-20, 20)))
    spec["res_after"] = draw(st.sampled_from((0.5, 0.5, 0.6, 0.35, 1.2, 2.5)))
    spec["crs_after"] = draw(st.sampled_from(("EPSG:32636", "EPSG:32636", "EPSG:3857")))
    spec["object"] = draw(st.booleans())
    spec["config"] = dict(
        threshold_sigma=draw(st.floats(3.0, 9.0)),
        block_px=draw(st.sampled_from((128, 256, 1024))),
        mode=draw(st.sampled_from(("global", "local"))),
    )
    spec["allow_unregistered"] = draw(st.booleans())
    return seed, (h, w), scene, spec


def _write(path, img, spec, transform, crs):
    dtype = spec["dtype"]
    data = _as(dtype, img)
    nodata = None
    h, w = data.shape[1:]
    if spec["nodata"] == "declared-corner":
        nodata = 0
        data[:, : h // 3, : w // 3] = 0
    elif spec["nodata"] == "nan-block":
        if dtype == "float32":
            data[:, h // 2:, :] = np.nan
        else:
            nodata = 0
            data[:, h // 2:, :] = 0
    elif spec["nodata"] == "all":
        nodata = 0
        data[:] = 0
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=data.shape[0],
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rasters())
def test_random_small_rasters_never_crash(case):
    seed, (h, w), scene, spec = case
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        b_img = np.stack([scene[24:24 + h, 24:24 + w]] * spec["before"]["bands"])
        b_img = _texture(rng, (h, w), spec["before"]["bands"]) + b_img
        _write(tmp / "before.tif", b_img, spec["before"], from_origin(*ORIGIN, 0.5, 0.5),
               "EPSG:32636")
        a_img = b_img[:1].repeat(spec["after"]["bands"], axis=0)
        if spec["object"]:
            a_img[:, h // 4: h // 4 + 12, w // 4: w // 4 + 30] += 40
        dx, dy = spec["shift"]
        res = spec["res_after"]
        a_t = from_origin(ORIGIN[0] + dx * 0.5, ORIGIN[1] - dy * 0.5, res, res)
        crs = spec["crs_after"]
        if crs == "EPSG:3857":  # the same place in web mercator (a rough but valid placement)
            from pyproj import Transformer
            x, y = Transformer.from_crs("EPSG:32636", crs, always_xy=True).transform(*a_t @ (0, 0))
            a_t = from_origin(x, y, res * 1.22, res * 1.22)
        _write(tmp / "after.tif", a_img, spec["after"], a_t, crs)
        cfg = spec["config"]
        (tmp / "c.yaml").write_text(
            f"difference: {{threshold_sigma: {cfg['threshold_sigma']:.3f}}}\n"
            f"processing: {{block_px: {cfg['block_px']}}}\n"
            f"coregistration: {{mode: {cfg['mode']}}}\n")
        args = [str(tmp / "before.tif"), str(tmp / "after.tif"), "--out", str(tmp / "out"),
                "--config", str(tmp / "c.yaml"), "-q"]
        if spec["allow_unregistered"]:
            args.append("--allow-unregistered")
        result = CliRunner().invoke(main, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # an uncaught exception: the property fails with its traceback
        err = result.stderr.strip()
        # hypothesis statistics (pytest --hypothesis-show-statistics): which outcomes were tried
        event(f"exit {result.exit_code}" + (f": {re.sub(r'.*?tif: ', '', err)[:45]}" if err else ""))
        assert result.exit_code in (0, 2), err
        out = tmp / "out"
        finals = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
        if result.exit_code == 2:
            assert len(err.splitlines()) == 1 and "Traceback" not in err, err
            assert str(tmp) in err, err  # names a file
            assert finals == [], finals
            return
        report = json.loads((out / "report.json").read_text())
        fc = json.loads((out / "detections.geojson").read_text())
        assert len(fc["features"]) == report["detections"]
        with rasterio.open(out / "change_mask.tif") as ds:
            assert ds.shape == (h, w)
            assert set(np.unique(ds.read(1))) <= {0, 1, 255}
