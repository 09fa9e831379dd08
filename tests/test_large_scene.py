"""A scene larger than the memory a whole-array method would need runs windowed, in bounded
memory (README, "Bad input": larger-than-memory; figures in "Large scenes")."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from conftest import SAMPLE

pytestmark = pytest.mark.slow

TILES = 8  # 8 x 8 sample tiles: 8192 x 8192 px, 201 MB per input as uint8, 805 MB as float32

MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")


def _mosaic_vrt(src: Path, dst: Path, n: int) -> Path:
    """An n x n mosaic of ``src`` as a VRT (no pixels copied): a large scene made in a moment."""
    with rasterio.open(src) as ds:
        w, h, t, count = ds.width, ds.height, ds.transform, ds.count
    rows = [f'<VRTDataset rasterXSize="{w * n}" rasterYSize="{h * n}">',
            "<SRS>EPSG:32636</SRS>",
            f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"]
    for b in range(1, count + 1):
        rows.append(f'<VRTRasterBand dataType="Byte" band="{b}">')
        for i in range(n):
            for j in range(n):
                rows.append(f'<SimpleSource><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                            f"<SourceBand>{b}</SourceBand>"
                            f'<SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                            f'<DstRect xOff="{j * w}" yOff="{i * h}" xSize="{w}" ySize="{h}"/>'
                            "</SimpleSource>")
        rows.append("</VRTRasterBand>")
    rows.append("</VRTDataset>")
    dst.write_text("\n".join(rows))
    return dst


def test_scene_larger_than_whole_array_memory_runs_windowed(tmp_path):
    before = _mosaic_vrt(SAMPLE / "before.tif", tmp_path / "before.vrt", TILES)
    after = _mosaic_vrt(SAMPLE / "after.tif", tmp_path / "after.vrt", TILES)
    exe = Path(sys.executable).parent / "detect-changes"
    out = subprocess.run([sys.executable, "-c", MEASURE, str(exe), str(before), str(after),
                          "--out", str(tmp_path / "out"), "-q"], capture_output=True, text=True)
    peak_kb, rc = out.stdout.split()[-2:]
    assert rc == "0", out.stderr
    side = 1024 * TILES
    whole_pair_float32 = 2 * 3 * side * side * 4
    peak = int(peak_kb) * 1024
    # a whole-array method holds both inputs as float32 (1.6 GB) before any work; the windowed
    # path stays well under that (measured: see README, "Large scenes"). Half of it until the
    # aircraft detector came: onnxruntime, its session and each worker's activations add about
    # 75 to 90 MB (752 MB here, 840 MB in a CI run of 2026-12-06), so 0.6 of it
    assert peak < 0.6 * whole_pair_float32, (peak / 2**20, whole_pair_float32 / 2**20)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["grid"]["width"] == side
    # every tile holds the sample's six changes (the An-124, three Ka-52, two TELs)
    assert report["detections"] >= 6 * TILES * TILES * 0.9


def test_report_chips_are_read_with_a_small_block_cache(tmp_path, monkeypatch):
    # report.html reads a chip of both images per detection, scattered over the scene; under
    # GDAL's default block cache (5 % of RAM) the tiles they touched stayed: peak RSS at
    # 30000 px went from 1.2 to 2.2 GB with 1311 detections (docs/cascade.md)
    import rasterio.env

    from pipeline import run
    seen = []
    write_html = run.html.write_html

    def spy(*args, **kwargs):
        seen.append(rasterio.env.getenv().get("GDAL_CACHEMAX"))
        return write_html(*args, **kwargs)

    monkeypatch.setattr(run.html, "write_html", spy)
    result = run.run_pair(SAMPLE / "before.tif", SAMPLE / "after.tif", tmp_path / "out")
    assert result.detections
    assert seen == [run.CHIP_CACHE_BYTES]


@pytest.mark.parametrize("threads", [2, 3])
def test_the_mask_cog_is_the_same_file_whatever_threads_compress_it(tmp_path, threads):
    # the COG's tiles are compressed on the run's threads: the same bytes as on one
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window

    from pipeline.io.outputs import MaskWriter
    from pipeline.io.raster import Grid

    rng = np.random.default_rng(1)
    mask = (rng.random((1500, 1300)) < 0.02).astype(np.uint8)
    mask[:200, :300] = MaskWriter.NODATA
    grid = Grid(CRS.from_epsg(32636), Affine(0.5, 0, 767309.0, 0, -0.5, 3922021.0), 1300,
                1500, (0.5, 0.5))
    made = []
    for n, name in ((1, "one.tif"), (threads, "many.tif")):
        writer = MaskWriter(tmp_path / name, grid, threads=n)
        for r in range(0, 1500, 512):
            for c in range(0, 1300, 512):
                w = Window(c, r, min(512, 1300 - c), min(512, 1500 - r))
                writer.write(w, mask[r:r + w.height, c:c + w.width])
        writer.close()
        made.append((tmp_path / name).read_bytes())
        with rasterio.open(tmp_path / name) as ds:
            assert (ds.read(1) == mask).all() and ds.overviews(1)
    assert made[0] == made[1]
