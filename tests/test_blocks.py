"""Windowed processing gives the same detections as whole-array processing."""
import pytest

from pipeline.config import Config
from pipeline.run import run_pair
from pipeline.testing import synth


def _with_block(block_px):
    return Config().with_overrides({"processing": {"block_px": block_px}})


def _signature(result):
    # Scores are compared to 2 decimals: OpenCV's cubic warp rounds a pixel's value differently
    # (1e-4 DN) depending on where the pixel falls in its window's row, which can move a pixel
    # of the ring around a blob across a threshold and its score in the 4th decimal.
    return [(d.category, d.klass, d.change, d.blob.bbox_px, round(d.blob.length_m, 2),
             round(d.blob.width_m, 2), round(d.score, 2)) for d in result.detections]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 5])
def test_small_blocks_give_the_same_detections_as_one_block(tmp_path, seed):
    pair = synth.make_pair(seed=seed, size_px=1024, scenario="random")
    synth.write_pair(pair, tmp_path)
    # the difference alone (the classical path): the aircraft detector sees each block through
    # its own window, resampled from its own origin, so its scores differ by block size
    off = {"detector": {"enabled": False}}
    whole = run_pair(tmp_path / "before.tif", tmp_path / "after.tif", tmp_path / "whole",
                     _with_block(1024).with_overrides(off))
    blocks = run_pair(tmp_path / "before.tif", tmp_path / "after.tif", tmp_path / "blocks",
                      _with_block(160).with_overrides(off))
    assert len(whole.detections) >= 4
    # with 160 px blocks most objects straddle a block edge
    straddling = [d for d in whole.detections
                  if d.blob.bbox_px[0] // 160 != (d.blob.bbox_px[2] - 1) // 160
                  or d.blob.bbox_px[1] // 160 != (d.blob.bbox_px[3] - 1) // 160]
    assert len(straddling) >= 2
    assert _signature(blocks) == _signature(whole)
