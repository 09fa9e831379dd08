"""Batch runs: manifest, failure isolation, resume, summaries, GeoPackage, dask clusters, series."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.warp import transform_bounds

from pipeline.batch.runner import (
    PAIR_OUTPUTS,
    STATE_FILE,
    PairJob,
    dask_client,
    failure_record,
    plan_batch,
    read_manifest,
    read_state,
    redo_reason,
    run_batch,
    series_jobs,
)
from pipeline.cli import main
from pipeline.config import Config, config_from_mapping, load_config
from pipeline.errors import (
    ConfigError,
    InputError,
    OutputError,
    PipelineError,
    UnreadableInputError,
)
from pipeline.testing import synth

REPO = Path(__file__).resolve().parents[1]
# Fewer, smaller matching windows: a 512 px pair then runs in about 2 s.
FAST_CONFIG = "coregistration: {grid: 2, window_px: 256}\noutput: {overlay_max_px: 512}\n"
GOOD = [("", 0, "random"), ("east-apron", 1, "random"), ("", 2, "no-change"),
        ("north", 3, "random"), ("south", 4, "random")]
SHIFT_PX = (2.3, -1.6)  # make_pair's default


def _cli(*args, timeout=240) -> subprocess.CompletedProcess:
    """The command line as cron runs it: a separate process, no terminal."""
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Six pairs (one with a truncated AFTER) in a manifest with relative paths, run once."""
    root = tmp_path_factory.mktemp("batch")
    lines = ["name,before,after,before_date,after_date,site"]
    for k, (name, seed, scenario) in enumerate(GOOD):
        synth.write_pair(synth.make_pair(seed=seed, size_px=512, scenario=scenario),
                         root / "pairs" / f"p{k}")
        lines.append(f"{name},pairs/p{k}/before.tif,pairs/p{k}/after.tif,2024-0{k + 1}-01,"
                     f"2024-0{k + 2}-01,site{k}")
    corrupt = root / "pairs" / "bad"
    corrupt.mkdir()
    shutil.copy(root / "pairs" / "p0" / "before.tif", corrupt / "before.tif")
    data = (root / "pairs" / "p1" / "after.tif").read_bytes()
    (corrupt / "after.tif").write_bytes(data[:len(data) // 3])  # an interrupted download
    lines.append("corrupt,pairs/bad/before.tif,pairs/bad/after.tif,2024-07-01,2024-08-01,site9")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    (root / "fast.yaml").write_text(FAST_CONFIG)
    out = root / "out"
    done = _cli("--manifest", root / "pairs.csv", "--out", out, "--workers", "2",
                "-c", root / "fast.yaml")
    return {"root": root, "out": out, "done": done, "manifest": root / "pairs.csv",
            "config": root / "fast.yaml"}


@pytest.mark.slow
def test_failed_pair_is_recorded_and_the_others_complete_with_exit_1(batch):
    done, out = batch["done"], batch["out"]
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "pair corrupt failed:" in done.stderr and "bad/after.tif" in done.stderr
    rows = _rows(out / "summary.csv")
    assert [r["status"] for r in rows] == ["ok"] * 5 + ["failed"]
    assert "bad/after.tif" in rows[-1]["error"] and "cannot be opened" in rows[-1]["error"]
    assert rows[-1]["error_type"] == "UnreadableInputError"
    assert rows[-1]["error_path"] == rows[-1]["after"] and rows[-1]["error_key"] == ""
    for r in rows[:5]:
        for name in PAIR_OUTPUTS:
            assert (out / r["name"] / name).is_file(), (r["name"], name)
    assert not any((out / "corrupt" / name).exists() for name in PAIR_OUTPUTS)


@pytest.mark.slow
def test_summary_csv_and_json_hold_one_row_per_pair(batch):
    out = batch["out"]
    rows = _rows(out / "summary.csv")
    doc = json.loads((out / "summary.json").read_text())
    # names from the manifest, or made of the file stems (the same in every folder: made unique)
    assert [r["name"] for r in rows] == ["p0_before_after", "east-apron", "p2_before_after",
                                         "north", "south", "corrupt"]
    assert doc["totals"] == {"pairs": 6, "ok": 5, "skipped": 0, "failed": 1,
                             "detections": sum(int(r["detections"] or 0) for r in rows)}
    assert [p["name"] for p in doc["pairs"]] == [r["name"] for r in rows]
    for r, p in zip(rows, doc["pairs"]):
        assert set(p) == set(r)
        assert r["site"] == p["site"] and r["after_date"] == p["after_date"]  # extras carried
        assert Path(r["before"]).is_absolute() and Path(r["before"]).is_file()
        if r["status"] != "ok":
            assert p["detections"] is None and p["shift_x_px"] is None and r["quality"] == ""
            continue
        report = json.loads((out / r["name"] / "report.json").read_text())
        features = json.loads((out / r["name"] / "detections.geojson").read_text())["features"]
        assert p["detections"] == int(r["detections"]) == len(features)
        for cat, changes in report["counts"].items():
            for change, n in changes.items():
                assert p[f"{cat}_{change}"] == int(r[f"{cat}_{change}"]) == n
        assert p["shift_x_px"] == pytest.approx(SHIFT_PX[0], abs=0.25)
        assert p["shift_y_px"] == pytest.approx(SHIFT_PX[1], abs=0.25)
        assert float(r["quality"]) == p["quality"] == report["coregistration"]["quality"] > 0.2
        assert p["runtime_s"] > 0 and p["error"] is None and p["error_type"] is None
    no_change = doc["pairs"][2]
    assert no_change["detections"] <= 1
    assert doc["pairs"][0]["detections"] >= 3


@pytest.mark.slow
def test_detections_gpkg_reads_back_with_every_detection_in_lonlat(batch):
    out = batch["out"]
    gpkg = out / "detections.gpkg"
    info = pyogrio.read_info(gpkg, layer="detections")
    rows = json.loads((out / "summary.json").read_text())["pairs"]
    assert info["crs"] == "EPSG:4326" and info["geometry_type"] == "Polygon"
    assert info["features"] == sum(r["detections"] or 0 for r in rows) > 0
    assert {"pair", "before_date", "after_date", "id", "category", "class", "change",
            "length_m", "score"} <= set(info["fields"])
    frame = pyogrio.read_dataframe(gpkg, layer="detections")
    per_pair = frame.groupby("pair").size().to_dict()
    assert per_pair == {r["name"]: r["detections"] for r in rows if r["detections"]}
    first = rows[0]
    fc = json.loads((out / first["name"] / "detections.geojson").read_text())
    mine = frame[frame["pair"] == first["name"]].sort_values("id")
    assert list(mine["id"]) == [f["id"] for f in fc["features"]]
    assert str(mine["after_date"].iloc[0].date()) == first["after_date"]
    lon, lat = mine.geometry.iloc[0].exterior.coords[0]
    assert [lon, lat] == pytest.approx(fc["features"][0]["geometry"]["coordinates"][0][0])
    assert 35.9 < lon < 36.0 and 35.3 < lat < 35.5  # the synthetic tiles sit at Hmeimim


@pytest.mark.slow
def test_plan_redoes_a_pair_only_when_an_input_the_config_or_an_output_changed(batch, tmp_path):
    jobs, out = read_manifest(batch["manifest"]), batch["out"]
    config = load_config(batch["config"])
    assert set(plan_batch(jobs, out, config).values()) == {None}  # the failure is remembered too
    other = config.with_overrides({"min_overlap": 0.06})
    assert set(plan_batch(jobs, out, other).values()) == {"config changed"}
    assert set(plan_batch(jobs, out, config, force=True).values()) == {"forced"}
    assert set(plan_batch(jobs, out, config, allow_unregistered=True).values()) == {
        "--allow-unregistered changed"}
    copy = tmp_path / jobs[1].name
    shutil.copytree(out / jobs[1].name, copy)
    (copy / "overlay.png").unlink()
    assert redo_reason(jobs[1], read_state(copy), copy, config.digest()) == "overlay.png missing"
    (copy / STATE_FILE).write_text("{half a fi")  # a run killed while writing it (not atomic)
    assert redo_reason(jobs[1], read_state(copy), copy, config.digest()) == "new"


@pytest.mark.slow
def test_rerun_processes_nothing_and_touching_one_input_redoes_exactly_that_pair(batch):
    out, args = batch["out"], ("--manifest", batch["manifest"], "--out", batch["out"],
                               "--workers", "2", "-c", batch["config"])
    before = _mtimes(out)
    again = _cli(*args)
    assert again.returncode == 1, again.stderr
    assert "0 to run" in again.stderr and "6 up to date" in again.stderr
    after = _mtimes(out)
    assert {k: v for k, v in after.items() if "/" in k} == {k: v for k, v in before.items() if "/" in k}
    assert [r["status"] for r in _rows(out / "summary.csv")] == ["skipped"] * 5 + ["failed"]

    touched = batch["root"] / "pairs" / "p3" / "after.tif"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = _cli(*args)
    assert third.returncode == 1, third.stderr
    assert "north: queued (AFTER changed)" in third.stderr
    rows = _rows(out / "summary.csv")
    assert [r["status"] for r in rows] == ["skipped", "skipped", "skipped", "ok", "skipped", "failed"]
    now = _mtimes(out)
    changed = {k.split("/")[0] for k in now if "/" in k and now[k] != after.get(k)}
    assert changed == {"north"}
    assert json.loads((out / "north" / STATE_FILE).read_text())["inputs"]["after"]["mtime_ns"] \
        == touched.stat().st_mtime_ns


def _free_scheduler(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    """A `dask scheduler` on 127.0.0.1 at a port the system picks; its address once it is up."""
    info = tmp_path / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "scheduler.log", "w"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return proc, json.loads(info.read_text())["address"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"dask scheduler did not start: {(tmp_path / 'scheduler.log').read_text()}")


@pytest.mark.slow
def test_batch_runs_on_an_existing_cluster_through_scheduler(batch, tmp_path):
    root = batch["root"]
    manifest = tmp_path / "two.csv"
    manifest.write_text("before,after\n" + "".join(
        f"{root}/pairs/p{k}/before.tif,{root}/pairs/p{k}/after.tif\n" for k in (1, 3)))
    procs = []
    try:
        scheduler, address = _free_scheduler(tmp_path)
        procs.append(scheduler)
        assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard", "--memory-limit", "2GB", "--local-directory", str(tmp_path)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "worker.log", "w")))
        done = _cli("--manifest", manifest, "--out", tmp_path / "out", "--scheduler", address,
                    "-c", batch["config"])
        assert done.returncode == 0, done.stderr
        rows = _rows(tmp_path / "out" / "summary.csv")
        assert [r["status"] for r in rows] == ["ok", "ok"]
        assert (tmp_path / "out" / rows[1]["name"] / "report.html").is_file()
        log = (tmp_path / "scheduler.log").read_text()
        assert "Register worker" in log and "Receive client connection" in log
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_crash_in_a_task_is_recorded_and_retried_on_the_next_run(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    import pipeline.run

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline.run, "run_pair", crash)  # seen by the in-process worker
    job = PairJob("p", tmp_path / "b.tif", tmp_path / "a.tif")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        result = run_batch([job], tmp_path / "out", client=client)
    assert [(r["status"], r["error"], r["error_type"]) for r in result.rows] == [
        ("failed", "RuntimeError: boom", "RuntimeError")]
    assert plan_batch([job], tmp_path / "out", Config()) == {"p": "new"}
    assert pyogrio.read_info(tmp_path / "out" / "detections.gpkg", layer="detections")["features"] == 0


def test_failure_record_reads_the_errors_fields_not_its_message(tmp_path):
    tif = tmp_path / "a.tif"
    record = failure_record(UnreadableInputError(f"{tif}: AFTER file is empty", path=tif))
    assert record == {"status": "failed", "error": f"{tif}: AFTER file is empty",
                      "error_type": "UnreadableInputError", "error_path": str(tif),
                      "error_key": None}
    # a message that does not name its file gets it, so the summary's line still does
    assert failure_record(OutputError("disk full", path=tmp_path))["error"] == f"{tmp_path}: disk full"
    bad = ConfigError("c.yaml: difference.grow_m: Input should be a valid number",
                      path="c.yaml", key="difference.grow_m")
    assert (failure_record(bad)["error_key"], failure_record(bad)["error"]) == (
        "difference.grow_m", str(bad))
    crash = failure_record(KeyError("x"))
    assert (crash["error"], crash["error_type"], crash["error_path"]) == ("KeyError: 'x'",
                                                                          "KeyError", None)


def test_unreachable_scheduler_is_a_pipeline_error_naming_it():
    with pytest.raises(PipelineError, match="tcp://127.0.0.1:9: cannot reach the dask scheduler"):
        with dask_client(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1):
            pass


@pytest.mark.slow
def test_series_pairs_each_image_with_the_previous_one_and_counts_per_zone(tmp_path):
    pair = synth.make_pair(seed=11, size_px=512)
    folder = tmp_path / "hmeimim"
    paths = synth.write_pair(pair, folder, before_name="site_20240301.tif",
                             after_name="site_2024-04-01.tif")
    shutil.copy(paths["before"], folder / "site_2024-05-01.tif")  # the objects come back
    with rasterio.open(paths["before"]) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    config = tmp_path / "zones.yaml"
    config.write_text(FAST_CONFIG + f"zones:\n"
                      f"  - {{name: base, polygon_lonlat: [[{w - 1e-3}, {s - 1e-3}], [{e + 1e-3}, "
                      f"{s - 1e-3}], [{e + 1e-3}, {n + 1e-3}], [{w - 1e-3}, {n + 1e-3}]]}}\n"
                      f"  - {{name: elsewhere, polygon_lonlat: [[10, 10], [10.01, 10], [10, 10.01]]}}\n")
    done = _cli("--series", folder, "--out", tmp_path / "out", "--workers", "2", "-c", config)
    assert done.returncode == 0, done.stderr
    timeline = _rows(tmp_path / "out" / "timeline.csv")
    assert [(r["date"], r["before_date"], r["zone"]) for r in timeline] == [
        ("2024-04-01", "2024-03-01", "all"), ("2024-04-01", "2024-03-01", "base"),
        ("2024-04-01", "2024-03-01", "elsewhere"), ("2024-05-01", "2024-04-01", "all"),
        ("2024-05-01", "2024-04-01", "base"), ("2024-05-01", "2024-04-01", "elsewhere")]
    counts = [k for k in timeline[0] if k.endswith(("_appeared", "_disappeared"))]
    for everything, base, elsewhere in (timeline[:3], timeline[3:]):
        assert [base[k] for k in counts] == [everything[k] for k in counts]
        assert [elsewhere[k] for k in counts] == ["0"] * len(counts)
    first, second = timeline[0], timeline[3]
    assert int(first["aircraft_appeared"]) + int(first["launcher_appeared"]) > 0
    assert first["pair"] == "site_20240301_site_2024-04-01"
    assert int(second["detections"]) > 0  # what appeared in April is gone in May


def test_read_manifest_resolves_names_paths_dates_and_extras(tmp_path):
    m = tmp_path / "lists" / "pairs.csv"
    m.parent.mkdir()
    m.write_text("\ufeffBefore,AFTER,name,after_date,analyst\n"
                 "a/before.tif,a/after.tif,,2024-05-17,kim\n"
                 "b/before.tif,./b/after.tif,,,lee\n"
                 "/data/x/2024-01-01.tif,/data/x/2024-02-01.tif,apron,2024-02-01,kim\n"
                 ",,,,\n")
    jobs = read_manifest(m)
    assert [j.name for j in jobs] == ["a_before_after", "b_before_after", "apron"]
    assert jobs[0].before == tmp_path / "lists" / "a" / "before.tif"
    assert jobs[1].after == tmp_path / "lists" / "b" / "after.tif"
    assert jobs[2].after == Path("/data/x/2024-02-01.tif")
    assert [j.after_date for j in jobs] == ["2024-05-17", None, "2024-02-01"]
    assert [j.extra for j in jobs] == [{"analyst": "kim"}, {"analyst": "lee"}, {"analyst": "kim"}]

    for text, needle in [("before,name\nx.tif,a\n", "lacks the column(s) after"),
                         ("before,after,name\na.tif,b.tif,p\nc.tif,d.tif,p\n", "'p' is used twice"),
                         ("before,after,name\na.tif,b.tif,../up\n", "cannot be a folder name"),
                         ("before,after\na.tif,x/../../b.tif\n", "line 2: after path"),
                         ("before,after,after_date\na.tif,b.tif,17/05/2024\n", "line 2: after_date"),
                         ("before,after,status\na.tif,b.tif,x\n", "clash with summary columns"),
                         ("before,after\n", "lists no pairs")]:
        m.write_text(text)
        with pytest.raises(InputError, match=re.escape(needle)):
            read_manifest(m)


def test_series_sorts_by_the_date_in_the_file_name_else_by_name(tmp_path):
    for name in ("b_2024-01-02.tif", "a_2024-03-01.tif", "c_20240201.TIF", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    jobs = series_jobs(tmp_path)
    assert [(j.before.name, j.after.name) for j in jobs] == [
        ("b_2024-01-02.tif", "c_20240201.TIF"), ("c_20240201.TIF", "a_2024-03-01.tif")]
    assert [(j.before_date, j.after_date) for j in jobs] == [
        ("2024-01-02", "2024-02-01"), ("2024-02-01", "2024-03-01")]
    (tmp_path / "undated.tif").write_bytes(b"")
    assert [j.before.name for j in series_jobs(tmp_path)][:2] == ["a_2024-03-01.tif",
                                                                 "b_2024-01-02.tif"]
    one = tmp_path / "one"
    one.mkdir()
    (one / "2024-01-01.tif").write_bytes(b"")
    with pytest.raises(InputError, match="at least two images"):
        series_jobs(one)


def test_zones_are_optional_and_checked_naming_the_key():
    assert Config().zones == []
    square = [[35.94, 35.40], [35.95, 35.40], [35.95, 35.39], [35.94, 35.39]]
    config = config_from_mapping({"zones": [{"name": "apron", "polygon_lonlat": square}]})
    assert config.zones[0].name == "apron" and config.digest() != Config().digest()
    bowtie = [[35.94, 35.40], [35.95, 35.39], [35.95, 35.40], [35.94, 35.39]]
    for zones, needle in [([{"name": "x", "polygon_lonlat": bowtie}], "zones.0"),
                          ([{"name": "x", "polygon_lonlat": [[200, 35], [201, 35], [201, 36]]}],
                           "zones.0"),
                          ([{"name": "x", "polygon_lonlat": square}] * 2, "zone names must be unique")]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            config_from_mapping({"zones": zones})


@pytest.mark.parametrize("args, needle", [
    ([], "give BEFORE and AFTER"),
    (["a.tif", "b.tif", "--manifest", "m.csv"], "not both"),
    (["a.tif"], "give BEFORE and AFTER"),
    (["--manifest", "m.csv", "--series", "dir"], "--manifest or --series"),
    (["a.tif", "b.tif", "--workers", "2"], "apply to a batch"),
    (["--manifest", "m.csv", "--workers", "2", "--scheduler", "tcp://h:8786"], "--scheduler"),
])
def test_usage_errors_are_exit_2_with_one_line(args, needle, tmp_path):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr


def test_manifest_errors_carry_the_file(tmp_path):
    with pytest.raises(UnreadableInputError, match="manifest not found") as caught:
        read_manifest(tmp_path / "nope.csv")
    assert caught.value.path == str(tmp_path / "nope.csv")
    with pytest.raises(UnreadableInputError, match="is a folder"):
        read_manifest(tmp_path)
    (tmp_path / "m.csv").write_text("before,after,after_date\na.tif,b.tif,May\n")
    with pytest.raises(InputError, match="line 2: after_date") as caught:
        read_manifest(tmp_path / "m.csv")
    assert caught.value.path == str(tmp_path / "m.csv")
    with pytest.raises(UnreadableInputError, match="series folder not found") as caught:
        series_jobs(tmp_path / "absent")
    assert caught.value.path == str(tmp_path / "absent")


def test_unusable_manifest_is_exit_2_naming_the_file(tmp_path):
    missing = tmp_path / "nope.csv"
    result = CliRunner().invoke(main, ["--manifest", str(missing), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and str(missing) in result.stderr and "not found" in result.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("left,right\na.tif,b.tif\n")
    result = CliRunner().invoke(main, ["--manifest", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(bad) in result.stderr and "before, after" in result.stderr
