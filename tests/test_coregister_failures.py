"""Honest failure of co-registration: exit 2 with the reason, or go on when allowed."""
import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from pipeline.cli import main
from pipeline.errors import RegistrationError
from pipeline.run import run_pair
from pipeline.testing import synth


@pytest.fixture()
def cloudy_pair(tmp_path):
    pair = synth.make_pair(seed=3, size_px=768, scenario="random")
    rng = np.random.default_rng(0)
    cloud = 235 + 12 * ndimage.gaussian_filter(rng.normal(size=(768, 768)), 25) \
        + rng.normal(0, 1.0, (768, 768))
    after = np.repeat(np.clip(cloud, 0, 255).astype("uint8")[None], 3, axis=0)
    pair = synth.ScenePair(pair.before, after, pair.transform, pair.crs, pair.shift_px, pair.objects)
    synth.write_pair(pair, tmp_path)
    return tmp_path / "before.tif", tmp_path / "after.tif"


def test_overlap_all_cloud_stops_with_exit_2_and_the_reason(cloudy_pair, tmp_path):
    before, after = cloudy_pair
    result = CliRunner().invoke(main, [str(before), str(after), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "co-registration failed" in err and str(after) in err
    assert "--allow-unregistered" in err


def test_allow_unregistered_goes_on_and_says_so(cloudy_pair, tmp_path):
    before, after = cloudy_pair
    with pytest.raises(RegistrationError):
        run_pair(before, after, tmp_path / "o1")
    result = run_pair(before, after, tmp_path / "o2", allow_unregistered=True)
    co = result.report["coregistration"]
    assert co["applied"] is False and "unregistered" in co["method"]
    assert co["shift_x_px"] == 0 and co["shift_y_px"] == 0


def test_command_line_says_it_goes_on_unregistered_in_one_log_line(cloudy_pair, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    before, after = cloudy_pair
    exe = Path(sys.executable).parent / "detect-changes"
    done = subprocess.run([exe, before, after, "--out", tmp_path / "o", "--allow-unregistered"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if "going on unregistered" in line]
    # the library's UnregisteredWarning, logged as a line like the others: no source path
    assert len(said) == 1 and "WARNING pipeline:" in said[0] and ".py:" not in said[0], said
