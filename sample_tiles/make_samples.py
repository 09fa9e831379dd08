"""Regenerate the committed sample pair ``sample_tiles/hmeimim/`` from :mod:`pipeline.testing.synth`.

Run from anywhere: ``python sample_tiles/make_samples.py``. Writes before.tif, after.tif,
truth.geojson and preview.png (BEFORE | AFTER, half resolution).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # use this checkout's package even when it is not installed

from pipeline.testing import synth  # noqa: E402

SEED = 0
SIZE_PX = 1024
SHIFT_PX = (2.6, -1.4)
DIFFICULTY = "easy"  # 1 DN noise keeps the two GeoTIFFs under 3 MB together
PREVIEW_SIDE_PX = 320


def preview(pair: synth.ScenePair, side_px: int = PREVIEW_SIDE_PX) -> np.ndarray:
    """BEFORE | AFTER side by side, RGB uint8, each downscaled to ``side_px`` and labelled."""
    panels = []
    for label, image in (("BEFORE", pair.before), ("AFTER", pair.after)):
        rgb = np.ascontiguousarray(np.moveaxis(image[:3], 0, -1))
        small = cv2.resize(rgb, (side_px, side_px), interpolation=cv2.INTER_AREA)
        for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 2)):  # outlined text
            cv2.putText(small, label, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, colour, thickness,
                        cv2.LINE_AA)
        panels.append(small)
    gap = np.full((side_px, 8, 3), 255, np.uint8)
    return np.hstack([panels[0], gap, panels[1]])


def main() -> None:
    pair = synth.make_pair(seed=SEED, size_px=SIZE_PX, shift_px=SHIFT_PX, scenario="hmeimim",
                           difficulty=DIFFICULTY)
    out = HERE / "hmeimim"
    paths = synth.write_pair(pair, out)
    cv2.imwrite(str(out / "preview.png"), cv2.cvtColor(preview(pair), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    for path in sorted(out.iterdir()):
        print(f"{path.relative_to(HERE.parent)}  {path.stat().st_size / 1e6:.2f} MB")
    changes = synth.truth_changes(pair)
    print(f"{len(changes)} truth changes: "
          + ", ".join(f"{o.kind} {o.change}" for o in changes))


if __name__ == "__main__":
    main()
