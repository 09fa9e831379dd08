"""Batch runs over many BEFORE/AFTER pairs on dask.distributed: the layer above ``run.py``.

Reads a manifest (or pairs the dated images of one site), decides from a small state file in each
pair's folder which pairs need work, runs those as dask tasks (one pair per task, failures
isolated), and gathers the per-pair results into ``summary.csv``, ``summary.json``,
``detections.gpkg`` and, for a dated series, ``timeline.csv``.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import rasterio.errors

from .. import __version__
from ..config import Config, Zone
from ..detect import verifier
from ..errors import InputError, OutputError, PipelineError, UnreadableInputError
from ..io import (
    catalog,
    ensure_output_dir,
    export,
    publish,
    staged_outputs,
    write_text_atomic,
)

if TYPE_CHECKING:
    from .stac import Acquisition

log = logging.getLogger(__name__)

STATE_FILE = ".detect-changes-state.json"
PAIR_OUTPUTS = ("detections.geojson", "report.json", "report.html", "change_mask.tif", "overlay.png")
PIXEL_DETECTIONS = "detections_px.geojson"  # instead of detections.geojson for plain images
#: written beside run_pair's outputs by :func:`finish_pair`
PAIR_EXTRAS = ("detections.gpkg", catalog.ITEM_FILE)
BATCH_OUTPUTS = ("summary.csv", "summary.json", "detections.gpkg", "timeline.csv", "timeline.png",
                 catalog.CATALOG_FILE, "index.html")
SERIES_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
CHANGES = ("appeared", "disappeared")
GPKG_LAYER = export.GPKG_LAYER
_STATE_VERSION = 1
_MANIFEST_COLUMNS = ("before", "after", "name", "before_date", "after_date")
_RESULT_COLUMNS = ("detections", "shift_x_px", "shift_y_px", "quality", "overlap", "runtime_s",
                   "error", "error_type", "error_path", "error_key")
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})[-_.]?(\d{2})[-_.]?(\d{2})(?!\d)")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PairJob:
    """One pair of a batch: its folder name under the batch's output folder, inputs and dates.

    ``before_date`` / ``after_date`` are ISO dates (``YYYY-MM-DD``) or datetimes, or None;
    ``extra`` holds the manifest's other columns, carried into the summary. Pairs read from
    STAC items carry the two items (``before_acquisition``, ``after_acquisition``) into
    report.json and the pair's STAC item.
    """

    name: str
    before: Path
    after: Path
    before_date: str | None = None
    after_date: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    before_acquisition: Acquisition | None = None
    after_acquisition: Acquisition | None = None


@dataclass
class BatchResult:
    """What a batch produced: one summary row per pair (manifest order) and the files written.

    ``processed`` names the pairs that ran in this call (the others were up to date).
    """

    out_dir: Path
    rows: list[dict]
    processed: list[str]
    files: dict[str, Path]

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]


# --------------------------------------------------------------------------------------------------
# What to run: manifests and dated series


def read_manifest(path: str | Path) -> list[PairJob]:
    """Read a CSV manifest of pairs.

    The header names ``before`` and ``after`` (any order, any case) and optionally ``name``,
    ``before_date``, ``after_date`` (ISO dates) and any other columns, which are carried into the
    summary. Relative paths are resolved against the manifest's folder. Pairs without a name get
    one made of the file stems, made unique.

    Raises
    ------
    UnreadableInputError
        The manifest is missing or unreadable.
    InputError
        It lacks a column or holds a bad row (the message names the file and the line; the
        error's ``path`` the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes a byte-order mark
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: manifest not found", path=path) from None
    except IsADirectoryError:
        raise UnreadableInputError(f"{path}: manifest is a folder, not a CSV file",
                                   path=path) from None
    except OSError as err:
        raise UnreadableInputError(f"{path}: cannot read the manifest ({err})", path=path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: cannot read the manifest ({err})", path=path) from None
    lines = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(lines, [])]
    keys = [h.lower() if h.lower() in _MANIFEST_COLUMNS else h for h in header]
    missing = [c for c in ("before", "after") if c not in keys]
    if missing:
        raise InputError(f"{path}: manifest header lacks the column(s) {', '.join(missing)} "
                         f"(expected before,after[,name,...]; found: {','.join(header) or 'nothing'})",
                         path=path)
    dupes = sorted(k for k, n in Counter(keys).items() if n > 1)
    reserved = sorted(set(keys) & (set(_RESULT_COLUMNS) | {"status"} | _count_like(keys)))
    if dupes or reserved or "" in keys:
        what = f"repeated column(s) {', '.join(dupes)}" if dupes else (
            f"column(s) {', '.join(reserved)} clash with summary columns" if reserved
            else "a column without a name")
        raise InputError(f"{path}: manifest header has {what}", path=path)
    base = path.parent.absolute()
    jobs, names = [], []
    for line_no, values in enumerate(lines, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(keys):
            raise InputError(f"{path}: line {line_no}: {len(values)} fields, the header has "
                             f"{len(keys)}", path=path)
        row = {k: v.strip() for k, v in zip(keys, values)}
        for col in ("before", "after"):
            if not row[col]:
                raise InputError(f"{path}: line {line_no}: empty '{col}'", path=path)
        dates = {col: _iso_date(row.get(col, ""), f"{path}: line {line_no}: {col}", path=path)
                 for col in ("before_date", "after_date")}
        for col in ("before", "after"):
            if _escapes(row[col], base):
                raise InputError(
                    f"{path}: line {line_no}: {col} path {row[col]!r} leads outside the "
                    "manifest's folder; relative paths are read from that folder (write an "
                    "absolute path if that file is meant)", path=path)
        jobs.append(PairJob(
            name="", before=_resolve(row["before"], base), after=_resolve(row["after"], base),
            **dates, extra={k: v for k, v in row.items() if k not in _MANIFEST_COLUMNS}))
        names.append(row.get("name", ""))
    if not jobs:
        raise InputError(f"{path}: manifest lists no pairs", path=path)
    return _named(jobs, names, path)


def series_jobs(source: str | Path) -> list[PairJob]:
    """Pair each image of one site with the previous one.

    ``source`` is a folder of rasters (``.tif``, ``.tiff``, ``.jp2``, ``.vrt``, ``.img``) or a CSV
    file with a column ``image`` and optionally ``date``. Dates come from the ``date`` column or
    from the file name (``2024-05-17``, ``20240517``, ``2024_05_17``); the images are sorted by
    date when every one has a date, else by name.

    Raises
    ------
    UnreadableInputError
        The folder or listing is missing or unreadable.
    InputError
        Fewer than two images, or a bad listing.
    """
    source = Path(source)
    if source.is_dir():
        images = [(p, None) for p in sorted(source.iterdir())
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in SERIES_SUFFIXES]
    elif source.is_file():
        images = _read_series_csv(source)
    else:
        raise UnreadableInputError(f"{source}: series folder not found", path=source)
    dated = [(p, d or _date_in_name(p.name)) for p, d in images]
    if all(d for _, d in dated):
        dated.sort(key=lambda item: (item[1], item[0].name))
    if len(dated) < 2:
        raise InputError(f"{source}: a series needs at least two images "
                         f"({', '.join(SERIES_SUFFIXES)}); found {len(dated)}", path=source)
    jobs = [PairJob("", b, a, before_date=db, after_date=da)
            for (b, db), (a, da) in zip(dated, dated[1:])]
    return _named(jobs, [""] * len(jobs), source)


def _read_series_csv(path: Path) -> list[tuple[Path, str | None]]:
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except OSError as err:
        raise UnreadableInputError(f"{path}: cannot read the series listing ({err})",
                                   path=path) from None
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{path}: cannot read the series listing ({err})", path=path) from None
    if not rows or "image" not in {k.strip().lower() for k in rows[0] if k}:
        raise InputError(f"{path}: a series listing needs a header with the column 'image'",
                         path=path)
    base = path.parent.absolute()
    out = []
    for line_no, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if row["image"]:
            out.append((_resolve(row["image"], base),
                        _iso_date(row.get("date", ""), f"{path}: line {line_no}: date",
                                  path=path)))
    return out


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _escapes(value: str, base: Path) -> bool:
    """A relative path that climbs out of ``base`` (``../``): refused, not followed silently."""
    p = Path(value).expanduser()
    return not p.is_absolute() and not _resolve(value, base).is_relative_to(base)


def _iso_date(value: str, where: str, *, path: Path) -> str | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).isoformat()
    except ValueError:
        raise InputError(f"{where}: '{value}' is not an ISO date (YYYY-MM-DD)",
                         path=path) from None


def _date_in_name(name: str) -> str | None:
    for m in _DATE_IN_NAME.finditer(name):
        try:
            return dt.date(*map(int, m.groups())).isoformat()
        except ValueError:
            continue
    return None


def _count_like(keys) -> set[str]:
    return {k for k in keys if k.endswith(tuple(f"_{c}" for c in CHANGES))}


def _named(jobs: list[PairJob], given: list[str], source: Path) -> list[PairJob]:
    """Give every job a folder name: the manifest's, or ``<before stem>_<after stem>`` made unique."""
    taken: set[str] = set()
    for name in filter(None, given):
        if name in taken:
            raise InputError(f"{source}: pair name '{name}' is used twice", path=source)
        if name in (".", "..") or name.startswith(".") or re.search(r"[/\\\0]", name) \
                or name in BATCH_OUTPUTS:
            raise InputError(f"{source}: pair name '{name}' cannot be a folder name",
                             path=source)
        taken.add(name)
    derived = [_safe(f"{j.before.stem}_{j.after.stem}") if not n else None
               for j, n in zip(jobs, given)]
    common = Counter(filter(None, derived))
    out = []
    for job, name, auto in zip(jobs, given, derived):
        if not name:
            if common[auto] > 1 and job.before.parent.name:  # before.tif/after.tif in site folders
                auto = _safe(f"{job.before.parent.name}_{auto}")
            name, k = auto, 2
            while name in taken:
                name, k = f"{auto}-{k}", k + 1
            taken.add(name)
        out.append(replace(job, name=name))
    return out


def _safe(name: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", name).strip("._") or "pair"


# --------------------------------------------------------------------------------------------------
# Resume: a state file per pair folder


def input_fingerprint(path: str | Path) -> dict | None:
    """Path, size and modification time (ns) of an input, or None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_state(pair_dir: Path) -> dict | None:
    """The state a pair's last finished run left, or None (never run, interrupted, unreadable)."""
    try:
        state = json.loads((pair_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    usable = (isinstance(state, dict) and state.get("version") == _STATE_VERSION
              and isinstance(state.get("inputs"), dict) and isinstance(state.get("result"), dict)
              and state["result"].get("status") in ("ok", "failed"))
    return state if usable else None


def redo_reason(job: PairJob, state: dict | None, pair_dir: Path, config_digest: str, *,
                allow_unregistered: bool = False) -> str | None:
    """Why the pair must run again, or None when its recorded result still holds.

    A result holds while both inputs keep their path, size and mtime, the configuration its
    digest, ``allow_unregistered`` its value, and (for a success) every output file exists. A
    failure on a bad input is recorded too: it is not retried until something changes.
    """
    if state is None:
        return "new"
    for role in ("before", "after"):
        if state["inputs"].get(role) != input_fingerprint(getattr(job, role)):
            return f"{role.upper()} changed"
    if state.get("config_digest") != config_digest:
        return "config changed"
    if state.get("allow_unregistered") != allow_unregistered:
        return "--allow-unregistered changed"
    if state["result"]["status"] == "ok":
        missing = [f for f in PAIR_OUTPUTS if not (pair_dir / f).is_file()
                   and not (f == "detections.geojson" and (pair_dir / PIXEL_DETECTIONS).is_file())]
        if missing:
            return f"{missing[0]} missing"
    return None


def plan_batch(jobs: list[PairJob], out_dir: str | Path, config: Config, *, force: bool = False,
               allow_unregistered: bool = False) -> dict[str, str | None]:
    """For each pair name, why it must run (``"new"``, ``"AFTER changed"``, ``"forced"``...) or None."""
    digest = config.digest()
    out_dir = Path(out_dir)
    return {job.name: "forced" if force else redo_reason(
        job, read_state(out_dir / job.name), out_dir / job.name, digest,
        allow_unregistered=allow_unregistered) for job in jobs}


# --------------------------------------------------------------------------------------------------
# One pair, as a dask task


def process_pair(job: PairJob, out_dir: str | Path, config: Config, *, config_digest: str,
                 allow_unregistered: bool = False,
                 threads_by_worker: dict[str, int] | None = None) -> dict:
    """Run one pair into ``out_dir/<name>/`` and record its state file; return its result record.

    Runs on a dask worker. A bad input (any :class:`PipelineError` or GDAL error) gives a record
    with ``status: "failed"`` and the reason (:func:`failure_record`) instead of an exception;
    the failure is remembered unless it may pass by itself (an :class:`OutputError`: disk full,
    permissions).
    """
    from ..report.model import as_report

    pair_dir = Path(out_dir) / job.name
    pair_dir.mkdir(parents=True, exist_ok=True)
    (pair_dir / STATE_FILE).unlink(missing_ok=True)  # no state until this run has finished
    inputs = {"before": input_fingerprint(job.before), "after": input_fingerprint(job.after)}
    t0 = time.perf_counter()
    try:
        result = run_job(job, pair_dir, _with_threads(config, threads_by_worker),
                         allow_unregistered=allow_unregistered)
    except (PipelineError, rasterio.errors.RasterioError) as err:
        record = {**failure_record(err), "runtime_s": round(time.perf_counter() - t0, 2)}
        for name in (*PAIR_OUTPUTS, PIXEL_DETECTIONS, *PAIR_EXTRAS):  # no stale results beside a failure
            (pair_dir / name).unlink(missing_ok=True)
        if isinstance(err, OutputError):
            return record
    else:
        rep = as_report(result.report)
        co = rep.coregistration
        record = {"status": "ok", "detections": rep.detections,
                  "counts": {cat: c.model_dump() for cat, c in rep.counts.items()},
                  "shift_x_px": co.shift_x_px, "shift_y_px": co.shift_y_px,
                  "quality": co.quality, "overlap": rep.overlap,
                  "runtime_s": round(time.perf_counter() - t0, 2), "error": None}
    state = {"version": _STATE_VERSION, "inputs": inputs, "config_digest": config_digest,
             "allow_unregistered": allow_unregistered, "pipeline_version": __version__,
             "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "result": record}
    write_text_atomic(pair_dir / STATE_FILE, json.dumps(state, indent=1))
    return record


def acquisitions(job: PairJob) -> dict[str, dict]:
    """What is known of the pair's two images: from STAC items their
    :meth:`~pipeline.batch.stac.Acquisition.as_dict`, else the raster's path and date."""
    out = {}
    for role in ("before", "after"):
        acq = getattr(job, f"{role}_acquisition")
        out[role] = acq.as_dict() if acq is not None else {
            "path": str(getattr(job, role)), "datetime": getattr(job, f"{role}_date")}
    return out


def pair_extras(folder: str | Path, job: PairJob, *, in_batch: bool = True,
                into: str | Path | None = None) -> list[Path]:
    """The files a pair gets beside :func:`pipeline.run.run_pair`'s, made from the run's files
    in ``folder`` and written into ``into`` (default: ``folder`` itself, e.g. the run's staging
    folder, as ``run_pair(..., finish=...)`` calls it); returns their paths.

    ``detections.gpkg`` (the detections with their QGIS style; not for plain images, which
    have no place on the map), ``item.json`` (the result as a STAC item,
    :func:`pipeline.io.catalog.pair_item`, linked to the batch's catalog when ``in_batch``)
    and, for a pair read from STAC items, report.json again with ``acquisition`` added (each
    item's id, datetime and view angles). Each file is written atomically.
    """
    folder = Path(folder)
    into = folder if into is None else Path(into)
    acqs = acquisitions(job)
    made = []
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    if report.get("grid", {}).get("frame", "map") == "map":
        features = json.loads((folder / "detections.geojson").read_text(encoding="utf-8")
                              )["features"]
        made.append(export.write_detections_gpkg(into / "detections.gpkg", features))
    from_stac = job.before_acquisition is not None or job.after_acquisition is not None
    if from_stac and report.get("acquisition") != acqs:
        report["acquisition"] = acqs
        write_text_atomic(into / "report.json", json.dumps(report, indent=1, default=str))
        made.append(into / "report.json")
    made.append(catalog.write_pair_item(folder, job.name, before=acqs["before"],
                                        after=acqs["after"], catalog=in_batch,
                                        coming=tuple(p.name for p in made),
                                        path=into / catalog.ITEM_FILE))
    return made


def run_job(job: PairJob, pair_dir: str | Path, config: Config, *, in_batch: bool = True,
            allow_unregistered: bool = False, progress=None):
    """:func:`pipeline.run.run_pair` on one job, its :func:`pair_extras` published with the
    run's files in one step (a run killed at any point leaves an earlier run's folder whole,
    or this run's whole)."""
    from ..run import run_pair

    pair_dir = Path(pair_dir)
    result = run_pair(job.before, job.after, pair_dir, config,
                      allow_unregistered=allow_unregistered, progress=progress,
                      finish=lambda stage: pair_extras(stage, job, in_batch=in_batch))
    if result.report.get("grid", {}).get("frame", "map") != "map":
        # plain images (--gsd): an earlier run's layer would not be this run's
        (pair_dir / "detections.gpkg").unlink(missing_ok=True)
    return result


def finish_pair(pair_dir: str | Path, job: PairJob, *, in_batch: bool = True) -> dict[str, Path]:
    """:func:`pair_extras` for a pair folder that an earlier version completed without them,
    made in a staging folder and moved in together (a killed run leaves no temporary file: the
    next run removes the folder)."""
    pair_dir = Path(pair_dir)
    with staged_outputs(pair_dir) as stage:
        made = pair_extras(pair_dir, job, in_batch=in_batch, into=stage)
        return publish(stage, pair_dir, made, last=catalog.ITEM_FILE)


def failure_record(err: BaseException) -> dict:
    """A failed pair's record: ``error``, the one line a person reads (naming the file), and
    ``error_type``, ``error_path``, ``error_key`` read from the error's class and fields.

    A :class:`PipelineError` keeps its message; a GDAL error reads ``reading failed: ...``; any
    other exception (a bug, a worker that died) is prefixed with its class name.
    """
    text = str(err).splitlines()[0] if str(err) else ""
    path, key = getattr(err, "path", None), getattr(err, "key", None)
    if isinstance(err, PipelineError):
        text = err.line()
    elif isinstance(err, rasterio.errors.RasterioError):
        text = f"reading failed: {text or type(err).__name__}"
    else:
        if type(err).__name__ == "KilledWorker":
            text = "the worker running it died (out of memory? see --memory-limit)"
        text = f"{type(err).__name__}: {text}"
    return {"status": "failed", "error": text, "error_type": type(err).__name__,
            "error_path": path if isinstance(path, str) else None,
            "error_key": key if isinstance(key, str) else None}


def _with_threads(config: Config, threads_by_worker: dict[str, int] | None) -> Config:
    """``config`` with this worker's share of the host's cores when it asks for all of them."""
    if config.processing.threads or not threads_by_worker:
        return config
    try:
        from distributed import get_worker
        threads = threads_by_worker.get(get_worker().address)
    except ValueError:  # not on a dask worker
        threads = None
    if not threads:
        return config
    return config.with_overrides({"processing": {"threads": threads}})


def _host_share(dask_worker) -> tuple[str, int, int]:
    from dask.system import CPU_COUNT
    return socket.gethostname(), CPU_COUNT, dask_worker.state.nthreads


def threads_by_worker(client) -> dict[str, int]:
    """GDAL/OpenCV threads for a pair on each worker: its host's cores over the host's task slots.

    Several worker processes on one host would otherwise each start a pool as large as the host.
    """
    shares = client.run(_host_share)
    slots = Counter()
    for host, _, nthreads in shares.values():
        slots[host] += nthreads
    return {addr: max(1, cpus // slots[host]) for addr, (host, cpus, _) in shares.items()}


# --------------------------------------------------------------------------------------------------
# The batch


@contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None,
                memory_limit: str | float = "auto", connect_timeout_s: float = 20.0,
                worker_timeout_s: float = 60.0) -> Iterator:
    """A dask ``Client``: on an existing cluster (``scheduler``) or a LocalCluster of its own.

    The LocalCluster has ``workers`` processes (default: one per core) of one thread each, each
    held to ``memory_limit`` (``"auto"``: the machine's memory shared out; or e.g. ``"4GB"``).

    Raises
    ------
    PipelineError
        The scheduler cannot be reached, or no worker joins it within ``worker_timeout_s``.
    """
    from dask.system import CPU_COUNT
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout_s)
        except (OSError, ValueError, TimeoutError) as err:
            raise PipelineError(f"{scheduler}: cannot reach the dask scheduler ({err})") from None
        try:
            client.wait_for_workers(1, timeout=worker_timeout_s)
        except TimeoutError:
            client.close()
            raise PipelineError(f"{scheduler}: no dask worker joined the scheduler within "
                                f"{worker_timeout_s:.0f} s") from None
        with client:
            yield client
        return
    n = workers or CPU_COUNT
    # the workers' own logs stay quiet: a pair's failure comes back as its record, and a worker
    # losing the scheduler while the cluster shuts down logs a traceback (heartbeat) that is
    # noise, not news, on the one-line-per-problem stderr of a scheduled job
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      memory_limit=memory_limit, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        yield client


def run_batch(jobs: list[PairJob], out_dir: str | Path, config: Config | None = None, *,
              workers: int | None = None, scheduler: str | None = None, client=None,
              memory_limit: str | float = "auto", force: bool = False,
              allow_unregistered: bool = False, timeline: bool | None = None,
              progress: Progress | None = None) -> BatchResult:
    """Run every pair that needs it on dask and write the batch's summaries.

    Parameters
    ----------
    jobs : list of PairJob
        From :func:`read_manifest` or :func:`series_jobs`; names must be unique.
    out_dir : path
        Each pair's outputs go to ``out_dir/<name>/``; the summaries to ``out_dir``. On a remote
        cluster it and the inputs must be at the same paths on the workers (a shared file system).
    config : Config, optional
        Defaults to ``Config()``.
    workers, memory_limit
        The LocalCluster started when neither ``scheduler`` nor ``client`` is given: worker
        processes (default one per core) and memory limit per worker.
    scheduler : str, optional
        Address of an existing dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
    client : distributed.Client, optional
        A client to use as it is (not closed here).
    force : bool
        Run every pair, even those whose recorded result still holds.
    allow_unregistered : bool
        As for :func:`pipeline.run.run_pair`.
    timeline : bool, optional
        Write ``timeline.csv``; default: when every pair has an AFTER date.
    progress : callable(done, total), optional
        Called as pairs finish (``total`` counts the pairs that run).

    Returns
    -------
    BatchResult
        No cluster is started when every pair is up to date.
    """
    config = config or Config()
    _check_memory_limit(memory_limit)
    if config.verifier.enabled:  # a bad model file: one error now, not one failure per pair
        verifier.load_verifier(config.verifier.model)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names) or not all(names):
        raise InputError("pair names must be unique and not empty")
    out = ensure_output_dir(out_dir).absolute()
    digest = config.digest()
    plan = plan_batch(jobs, out, config, force=force, allow_unregistered=allow_unregistered)
    records: dict[str, tuple[str, dict]] = {}
    for job in jobs:
        if plan[job.name] is None:
            record = read_state(out / job.name)["result"]
            status = "skipped" if record["status"] == "ok" else "failed"
            records[job.name] = (status, record)
            if status == "failed":
                log.warning("%s: failed before (%s); not retried while its inputs and config are "
                            "unchanged (--force retries)", job.name, record["error"])
    todo = [j for j in jobs if plan[j.name] is not None]
    log.info("%d pairs: %d to run, %d up to date", len(jobs), len(todo), len(jobs) - len(todo))
    if todo:
        scope = nullcontext(client) if client is not None else dask_client(
            workers=workers, scheduler=scheduler, memory_limit=memory_limit)
        task = _PairTask(out, config, digest, allow_unregistered)
        with scope as c:
            records.update(_run_on(c, todo, task, plan=plan, progress=progress))
    for job in jobs:  # complete before this version wrote them: add what is missing
        if records[job.name][0] == "skipped" and any(
                not (out / job.name / f).is_file() for f in PAIR_EXTRAS
                if f != "detections.gpkg" or (out / job.name / "detections.geojson").is_file()):
            finish_pair(out / job.name, job)
    rows = [_row(job, *records[job.name], config) for job in jobs]
    if timeline is None:
        timeline = all(j.after_date for j in jobs)
    files = write_batch_files(out, rows, jobs, config, timeline=timeline)
    return BatchResult(out, rows, [j.name for j in todo], files)


def write_batch_files(out: Path, rows: list[dict], jobs: list[PairJob], config: Config, *,
                      timeline: bool) -> dict[str, Path]:
    """The batch's own files, from its rows: summary.csv and .json, detections.gpkg,
    catalog.json, with ``timeline`` timeline.csv and timeline.png, and index.html."""
    files = write_summaries(rows, out, jobs, config)
    files["detections.gpkg"] = write_detections_gpkg(out / "detections.gpkg", rows, out)
    files[catalog.CATALOG_FILE] = catalog.write_catalog(
        out, [j.name for j in jobs], title=f"detect-changes: {out.name}",
        description=f"Changes found by detect-changes {__version__}: one item per pair of "
                    "images (its detections, change mask, overlay and report)")
    if timeline:
        from ..report.timeline import write_timeline_png

        lines = timeline_records(rows, out, config)
        files["timeline.csv"] = write_timeline(out / "timeline.csv", rows, out, config,
                                               records=lines)
        files["timeline.png"] = write_timeline_png(out / "timeline.png", lines,
                                                   _timeline_categories(lines, config))
    files["index.html"] = _write_index(out, rows, jobs, config, files)
    return files


def _timeline_categories(records: list[dict], config: Config) -> list[str]:
    """The categories the timeline shows: aircraft and launcher, and any other that counted."""
    return [c for c in _categories(config)
            if c in ("aircraft", "launcher") or any(r.get(f"{c}_{ch}") for r in records
                                                    for ch in CHANGES)]


def _write_index(out: Path, rows: list[dict], jobs: list[PairJob], config: Config,
                 files: dict[str, Path]) -> Path:
    from ..report.timeline import write_index

    by_name = {j.name: j for j in jobs}
    shown = [{**r, "acquisitions": acquisitions(by_name[r["name"]])
              if by_name[r["name"]].before_acquisition is not None else None} for r in rows]
    links = [f for f in ("summary.csv", "summary.json", "detections.gpkg", "timeline.csv",
                         catalog.CATALOG_FILE) if f in files]
    return write_index(out / "index.html", shown, title=out.name, categories=_categories(config),
                       files=links, timeline="timeline.png" if "timeline.png" in files else None)


def _check_memory_limit(limit: str | float) -> None:
    from dask.utils import parse_bytes

    try:
        if limit != "auto" and parse_bytes(limit) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise PipelineError(f"memory limit '{limit}' is not a size such as 4GB (or 'auto')") from None


@dataclass(frozen=True)
class _PairTask:
    """What every pair's task of one batch shares: where it writes and how it runs."""

    out_dir: Path
    config: Config
    config_digest: str
    allow_unregistered: bool


def _run_on(client, todo: list[PairJob], task: _PairTask, *, plan: dict[str, str | None],
            progress: Progress | None) -> dict[str, tuple[str, dict]]:
    """Run ``todo`` on ``client``; each pair's ``(status, record)`` by name, as they finish."""
    from distributed import as_completed

    shares = threads_by_worker(client) if not task.config.processing.threads else None
    futures, records = {}, {}
    if progress:
        progress(0, len(todo))
    for job in todo:
        log.log(logging.DEBUG if plan[job.name] == "new" else logging.INFO, "%s: queued (%s)",
                job.name, plan[job.name])
        fut = client.submit(process_pair, job, task.out_dir, task.config,
                            config_digest=task.config_digest,
                            allow_unregistered=task.allow_unregistered, threads_by_worker=shares,
                            key=f"detect-changes-{job.name}-{uuid.uuid4().hex[:8]}", pure=False)
        futures[fut] = job
    for done, fut in enumerate(as_completed(futures), start=1):
        job = futures.pop(fut)
        try:
            record = fut.result()
        except Exception as err:  # the worker died, or a bug: recorded, retried on the next run
            record = failure_record(err)
        records[job.name] = (record["status"], record)
        if record["status"] == "ok":
            log.info("[%d/%d] %s: ok, %d detections, %.1f s", done, len(todo), job.name,
                     record["detections"], record["runtime_s"])
        else:
            log.warning("[%d/%d] %s: failed: %s", done, len(todo), job.name, record["error"])
        if progress:
            progress(done, len(todo))
    return records


# --------------------------------------------------------------------------------------------------
# Summaries


def _categories(config: Config) -> list[str]:
    return config.categories


def _row(job: PairJob, status: str, record: dict, config: Config) -> dict:
    row = {"name": job.name, "status": status, "before": str(job.before), "after": str(job.after),
           "before_date": job.before_date, "after_date": job.after_date, **job.extra,
           "detections": record.get("detections")}
    counts = record.get("counts")
    for cat in _categories(config):
        for change in CHANGES:
            row[f"{cat}_{change}"] = counts.get(cat, {}).get(change, 0) if counts else None
    row.update({k: record.get(k) for k in _RESULT_COLUMNS if k != "detections"})
    return row


def summary_columns(jobs: list[PairJob], config: Config) -> list[str]:
    """Columns of summary.csv: identity, dates (when given), the manifest's extras, results."""
    cols = ["name", "status", "before", "after"]
    if any(j.before_date or j.after_date for j in jobs):
        cols += ["before_date", "after_date"]
    cols += list(dict.fromkeys(k for j in jobs for k in j.extra))
    cols += ["detections"] + [f"{c}_{ch}" for c in _categories(config) for ch in CHANGES]
    return cols + [c for c in _RESULT_COLUMNS if c != "detections"]


def write_summaries(rows: list[dict], out_dir: Path, jobs: list[PairJob],
                    config: Config) -> dict[str, Path]:
    """Write ``summary.csv`` (one row per pair) and ``summary.json`` (the same rows, typed).

    A failed pair's row says why in ``error`` (the line printed on stderr) and, read from the
    error itself (:func:`failure_record`), ``error_type`` (its class, e.g.
    ``UnreadableInputError``, ``RegistrationError``), ``error_path`` (the file it is about) and
    ``error_key`` (the configuration key it is about); these are empty for the others.
    """
    cols = summary_columns(jobs, config)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in cols} for r in rows)
    write_text_atomic(out_dir / "summary.csv", buf.getvalue())
    totals = {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "failed")}
    doc = {"version": __version__,
           "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "config_digest": config.digest(),
           "totals": {"pairs": len(rows), **totals,
                      "detections": sum(r["detections"] or 0 for r in rows)},
           "pairs": [{k: r.get(k) for k in cols} for r in rows]}
    write_text_atomic(out_dir / "summary.json", json.dumps(doc, indent=1))
    return {"summary.csv": out_dir / "summary.csv", "summary.json": out_dir / "summary.json"}


def _pair_features(out_dir: Path, name: str) -> list[dict]:
    path = out_dir / name / "detections.geojson"
    if not path.is_file():
        return []  # plain images (--gsd): pixel coordinates only, no place on the map
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)["features"]


def write_detections_gpkg(path: str | Path, rows: list[dict], out_dir: Path) -> Path:
    """Every detection of the batch's finished pairs in one GeoPackage layer (EPSG:4326).

    Fields: ``pair``, ``before_date`` and ``after_date`` (DateTime, when the pairs have dates),
    then the properties of ``detections.geojson``; written with pyogrio, atomically, with its
    QGIS style (:func:`pipeline.io.export.write_detections_gpkg`).
    """
    dated = any(r.get("before_date") or r.get("after_date") for r in rows)
    features, leading = [], {"pair": []}
    if dated:
        leading.update(before_date=[], after_date=[])
    for r in rows:
        if r["status"] not in ("ok", "skipped"):
            continue
        for feat in _pair_features(out_dir, r["name"]):
            features.append(feat)
            for key, values in leading.items():
                values.append(r["name"] if key == "pair" else r.get(key))
    return export.write_detections_gpkg(path, features, leading=leading,
                                        date_fields=("before_date", "after_date") if dated else ())


def zone_counts(features: list[dict], zones: list[Zone], categories: list[str]) -> dict:
    """Detections per zone, category and change: ``{zone: {category: {change: n}}}``.

    A detection belongs to every zone whose polygon covers the centre of its outline.
    """
    from shapely.geometry import Polygon, shape
    from shapely.prepared import prep

    polys = [(z.name, prep(Polygon(z.polygon_lonlat))) for z in zones]
    out = {z.name: {c: dict.fromkeys(CHANGES, 0) for c in categories} for z in zones}
    for feat in features:
        centre = shape(feat["geometry"]).centroid
        props = feat["properties"]
        for name, poly in polys:
            if poly.covers(centre):
                cat = out[name].setdefault(props["category"], dict.fromkeys(CHANGES, 0))
                cat[props["change"]] += 1
    return out


def timeline_records(rows: list[dict], out_dir: Path, config: Config) -> list[dict]:
    """The rows of timeline.csv: per pair (in date order) one for the whole scene (``zone`` =
    ``all``) and one per zone of the config; ``site`` too when the pairs have one (STAC input
    grouped by site). Failed pairs keep their rows, with counts None."""
    cats = _categories(config)
    count_cols = [f"{c}_{ch}" for c in cats for ch in CHANGES]
    ordered = sorted(rows, key=lambda r: r.get("after_date") or "") \
        if all(r.get("after_date") for r in rows) else rows
    out = []
    for r in ordered:
        base = {"date": r.get("after_date") or "", "before_date": r.get("before_date") or "",
                "pair": r["name"], "status": r["status"]}
        if r.get("site") is not None:
            base["site"] = r["site"]
        done = r["status"] in ("ok", "skipped")
        out.append({**base, "zone": "all", "detections": r["detections"] if done else None,
                    **{c: r[c] if done else None for c in count_cols}})
        if not config.zones:
            continue
        by_zone = zone_counts(_pair_features(out_dir, r["name"]), config.zones, cats) if done else {}
        for zone in config.zones:
            counts = by_zone.get(zone.name, {})
            values = {f"{c}_{ch}": counts[c][ch] if done else None for c in cats for ch in CHANGES}
            out.append({**base, "zone": zone.name, **values,
                        "detections": sum(values.values()) if done else None})
    return out


def write_timeline(path: str | Path, rows: list[dict], out_dir: Path, config: Config, *,
                   records: list[dict] | None = None) -> Path:
    """``timeline.csv``: counts per date (the AFTER date), in date order; per zone as well.

    One row per pair with ``zone`` = ``all`` (the whole scene), plus one per zone of the config
    (:func:`timeline_records`, or ``records`` when already made); a last column ``site`` when
    the pairs have sites (a manifest's ``site`` column, STAC items grouped by site). Failed
    pairs keep their row, with empty counts.
    """
    records = timeline_records(rows, out_dir, config) if records is None else records
    cats = _categories(config)
    count_cols = [f"{c}_{ch}" for c in cats for ch in CHANGES]
    sited = any("site" in r for r in records)
    # site last: the columns of earlier versions keep their places
    cols = ["date", "before_date", "pair", "status", "zone", "detections"] + count_cols + \
        (["site"] if sited else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if r.get(k) is None else r[k] for k in cols} for r in records)
    write_text_atomic(path, buf.getvalue())
    return Path(path)
