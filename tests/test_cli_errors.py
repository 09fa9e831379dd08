"""Bad inputs: exit 2 and one line on stderr naming the file and the reason, no traceback."""
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from conftest import write_tif
from rasterio.transform import from_origin

from pipeline.cli import main

ORIGIN = (314000.0, 3920000.0)


def _scene(seed=0, size=256):
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 20, (3, size, size))
    return np.clip(img, 0, 255).astype("uint8")


@pytest.fixture()
def good(tmp_path):
    t = from_origin(*ORIGIN, 0.5, 0.5)
    return (write_tif(tmp_path / "before.tif", _scene(0), transform=t),
            write_tif(tmp_path / "after.tif", _scene(0), transform=t))


def _run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip()


def _assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in err, (n, err)


def test_missing_file(good, tmp_path):
    before, _ = good
    missing = tmp_path / "nope.tif"
    code, err = _run([before, missing, "--out", tmp_path / "o"])
    _assert_one_line_error(code, err, missing, "not found")


def test_not_a_raster(good, tmp_path):
    before, _ = good
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image\n")
    code, err = _run([before, bad, "--out", tmp_path / "o"])
    _assert_one_line_error(code, err, bad, "cannot be opened")


def test_empty_file(good, tmp_path):
    before, _ = good
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    code, err = _run([before, empty, "--out", tmp_path / "o"])
    _assert_one_line_error(code, err, empty, "empty")


def test_no_crs(good, tmp_path):
    _, after = good
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=256, height=256, count=3,
                       dtype="uint8") as ds:
        ds.write(_scene(1))
    code, err = _run([plain, after, "--out", tmp_path / "o"])
    _assert_one_line_error(code, err, plain, "no CRS")


def test_no_overlap(good, tmp_path):
    before, _ = good
    far = write_tif(tmp_path / "far.tif", _scene(2),
                    transform=from_origin(ORIGIN[0] + 5000, ORIGIN[1], 0.5, 0.5))
    code, err = _run([before, far, "--out", tmp_path / "o"])
    _assert_one_line_error(code, err, far, "overlap")


def test_unknown_config_key(good, tmp_path):
    before, after = good
    cfg = tmp_path / "c.yaml"
    cfg.write_text("coregistration:\n  windows: 3\n")
    code, err = _run([before, after, "--out", tmp_path / "o", "--config", cfg])
    _assert_one_line_error(code, err, cfg, "coregistration.windows", "unknown key")


def _stop_before_work(monkeypatch, error):
    """Make the pair's run record the configuration it is given and raise ``error``."""
    import pipeline.run

    seen = {}

    def run_pair(before, after, out_dir, config, **kwargs):
        seen["config"] = config
        raise error

    monkeypatch.setattr(pipeline.run, "run_pair", run_pair)
    return seen


def test_options_override_the_config_file_and_errors_name_their_file(good, tmp_path,
                                                                     monkeypatch):
    from pipeline.errors import InputError

    before, after = good
    seen = _stop_before_work(monkeypatch, InputError("no valid pixels overlap", path=after))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input: {band: 2}\nprocessing: {threads: 3, block_px: 512}\n")
    code, err = _run([before, after, "--out", tmp_path / "o", "-c", cfg, "--nodata", "0",
                      "--threads", "1"])
    _assert_one_line_error(code, err, f"{after}: no valid pixels overlap")
    config = seen["config"]
    assert (config.input.nodata, config.input.band, config.input.gsd_m) == (0.0, 2, None)
    assert (config.processing.threads, config.processing.block_px) == (1, 512)


def test_help_runs_as_installed_command():
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "BEFORE" in out and "--out" in out and "--config" in out
