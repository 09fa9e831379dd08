"""Shared fixtures: paths to the real imagery, synthetic pairs written as GeoTIFFs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "sample_tiles" / "hmeimim"


def shared_dataset(name: str) -> Path:
    """The folder of a real dataset in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real imagery {path} is absent (it lives in the team's shared/ folder)")
    return path


def write_tif(path: Path, data: np.ndarray, *, transform: Affine, crs: str = "EPSG:32636",
              nodata=None, **extra) -> Path:
    """Write a (B, M, N) array as a tiled GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", **extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="session")
def sample_pair() -> tuple[Path, Path, Path]:
    before, after, truth = SAMPLE / "before.tif", SAMPLE / "after.tif", SAMPLE / "truth.geojson"
    assert before.exists() and after.exists() and truth.exists(), "sample_tiles/hmeimim is missing"
    return before, after, truth
