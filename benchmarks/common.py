"""Helpers shared by the benchmark scripts: large synthetic pairs (cached) and measurements."""
from __future__ import annotations

import dataclasses
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import rasterio
from affine import Affine

from pipeline.testing import synth

CACHE = Path(os.environ.get("DETECT_CHANGES_BENCH_CACHE", Path(__file__).parent / ".cache"))


SCENES = 4  # the synthetic scenes a large pair repeats, seeds 0..SCENES-1


def _tiles(size_px: int, tile_px: int):
    """(index, row, col, height, width) of the tiles of a large pair, row by row."""
    k = 0
    for row in range(0, size_px, tile_px):
        for col in range(0, size_px, tile_px):
            yield k, row, col, min(tile_px, size_px - row), min(tile_px, size_px - col)
            k += 1


def _scenes(tile_px: int, shift_px) -> list[synth.ScenePair]:
    return [synth.make_pair(seed=s, size_px=tile_px, shift_px=shift_px, scenario="random")
            for s in range(SCENES)]


def large_pair_truth(size_px: int, *, tile_px: int = 2048, shift_px=(2.3, -1.6),
                     margin_px: int = 40) -> list[dict]:
    """The truth changes of :func:`large_pair` (GeoJSON features, lon/lat): each tile's
    synthetic truth at the tile's place. An object within ``margin_px`` of a tile's cut edge,
    or whose footprint reaches over it (part of it shows), is an ignore region
    (``"ignore": true``); one wholly beyond it is left out."""
    scenes = _scenes(tile_px, shift_px)
    t0 = scenes[0].transform
    gsd_m = abs(t0.a)
    features = []
    for k, row, col, h, w in _tiles(size_px, tile_px):
        sc = scenes[k % SCENES]
        placed = dataclasses.replace(sc, transform=Affine(t0.a, 0, t0.c, 0, t0.e, t0.f)
                                     * Affine.translation(col, row))
        objects = {o.id: o for o in sc.objects}
        for f in synth.truth_feature_collection(placed)["features"]:
            o = objects[f["properties"]["id"]]
            cols, rows = synth.footprint_corners_px(o, gsd_m).T
            if cols.min() >= w or rows.min() >= h:
                continue  # wholly beyond the cut: nothing of it shows
            f["properties"]["id"] = f"tile{k}-{o.id}"
            if not (margin_px <= o.col_px < w - margin_px and margin_px <= o.row_px < h - margin_px
                    and cols.max() < w and rows.max() < h):
                f["properties"]["ignore"] = True
            features.append(f)
    return features


def large_pair(size_px: int, *, tile_px: int = 2048, shift_px=(2.3, -1.6)) -> tuple[Path, Path]:
    """A ``size_px`` square BEFORE/AFTER pair (RGB uint8, tiled deflate GeoTIFF), made once.

    Tiled from a few synthetic 2048 px scenes (different seeds) placed side by side on one
    grid at Hmeimim, so every part of it holds apron, objects and changes.
    """
    folder = CACHE / f"pair_{size_px}"
    before, after = folder / "before.tif", folder / "after.tif"
    if before.exists() and after.exists():
        return before, after
    folder.mkdir(parents=True, exist_ok=True)
    scenes = _scenes(tile_px, shift_px)
    t0 = scenes[0].transform
    transform = Affine(t0.a, 0, t0.c, 0, t0.e, t0.f)
    profile = dict(driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8",
                   crs=scenes[0].crs, transform=transform, tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", predictor=2, BIGTIFF="IF_SAFER")
    tmp_b, tmp_a = before.with_suffix(".part"), after.with_suffix(".part")
    with rasterio.open(tmp_b, "w", **profile) as db, rasterio.open(tmp_a, "w", **profile) as da:
        for k, row, col, h, w in _tiles(size_px, tile_px):
            sc = scenes[k % SCENES]
            win = rasterio.windows.Window(col, row, w, h)
            db.write(sc.before[:, :h, :w], window=win)
            da.write(sc.after[:, :h, :w], window=win)
    tmp_b.rename(before)
    tmp_a.rename(after)
    return before, after


def plain_read_s(*paths: Path, block_px: int = 1024) -> float:
    """Seconds to read every pixel of the files with rasterio, block by block (the baseline)."""
    t = time.perf_counter()
    for p in paths:
        with rasterio.open(p) as ds:
            for row in range(0, ds.height, block_px):
                for col in range(0, ds.width, block_px):
                    w = rasterio.windows.Window(col, row, min(block_px, ds.width - col),
                                                min(block_px, ds.height - row))
                    ds.read(window=w)
    return time.perf_counter() - t


def run_command(cmd: list[str]) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS of the child in MB)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"command failed: {' '.join(map(str, cmd))}\n{done.stderr}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, peak_kb / 1024
