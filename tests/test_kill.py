"""SIGKILL at random moments: every file under its final name is complete and valid, and a
rerun finishes the job (README, "Bad input": killed-run)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from pipeline.testing import synth

KILLS = 20
OUTPUTS = ("detections.geojson", "report.json", "report.html", "change_mask.tif", "overlay.png")


def _command(before, after, out):
    exe = Path(sys.executable).parent / "detect-changes"
    return [str(exe) if exe.exists() else shutil.which("detect-changes"), str(before), str(after),
            "--out", str(out), "--overwrite", "-q"]


def _check_complete(out: Path) -> list[str]:
    """Validate every output present under its final name; return their names."""
    present = [n for n in OUTPUTS if (out / n).exists()]
    for name in present:
        path = out / name
        if name.endswith(".geojson"):
            fc = json.loads(path.read_text())
            assert fc["type"] == "FeatureCollection", name
        elif name == "report.json":
            assert "detections" in json.loads(path.read_text())
        elif name == "report.html":
            assert path.read_text().rstrip().endswith("</html>")
        elif name.endswith(".tif"):
            with rasterio.open(path) as ds:
                ds.read(1)
        else:
            with Image.open(path) as im:
                im.load()
    # all-or-earlier: a report.json means the run that wrote it published everything first
    if "report.json" in present:
        assert set(present) == set(OUTPUTS), present
    return present


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    synth.write_pair(synth.make_pair(seed=5, size_px=384, scenario="random", difficulty="easy"),
                     folder)
    return folder / "before.tif", folder / "after.tif"


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_half_written_output(pair, tmp_path):
    before, after = pair
    out = tmp_path / "out"
    t = time.perf_counter()
    subprocess.run(_command(before, after, tmp_path / "timing"), check=True)
    full = time.perf_counter() - t
    rng = np.random.default_rng(7)
    killed_with_outputs = 0
    for i in range(KILLS):
        if i == KILLS // 2:  # the second half kills reruns over a finished run's outputs
            subprocess.run(_command(before, after, out), check=True)
        proc = subprocess.Popen(_command(before, after, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.05, 1.05) * full)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        present = _check_complete(out)
        killed_with_outputs += bool(present)
        if i >= KILLS // 2:
            assert len(present) == len(OUTPUTS)  # the earlier outputs stay whole
    assert killed_with_outputs >= KILLS // 2
    subprocess.run(_command(before, after, out), check=True)  # the rerun finishes the job
    assert _check_complete(out) == list(OUTPUTS)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "leftovers not cleaned"
