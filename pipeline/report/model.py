"""report.json's schema: one typed model, :class:`ReportModel`, that the pipeline writes and that
report.html, the review tools and the batch summaries read.

Every part a reader uses is a typed field; parts that are free-form (the effective configuration
beyond what the report stage reads, the local shift field's extras) are kept as written
(``extra="allow"``). Fields added by later versions are optional, so that a report.json written
by an earlier version still loads. A field left unset is left out when the model is written:
report.json holds the keys it was given, no more.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .. import __version__
from .. import io as rio
from ..config import Config
from ..coreg.shift import Shift
from ..detect.classify import Detection
from ..errors import InputError

CHANGES = ("appeared", "disappeared")


class _Part(BaseModel):
    """A part of report.json: frozen, and keeping any key it does not name."""

    model_config = ConfigDict(frozen=True, extra="allow")


class InputInfo(_Part):
    """One input raster as :func:`pipeline.io.raster.describe` records it."""

    role: str | None = None
    path: str | None = None
    crs: str | None = None
    pixel_size: list[float] | None = None
    pixel_size_m: list[float] | None = None
    width: int | None = None
    height: int | None = None
    bands: int | None = None
    dtype: str | None = None
    nodata: float | None = None


class Inputs(_Part):
    """``inputs``: BEFORE and AFTER."""

    before: InputInfo
    after: InputInfo

    def items(self) -> list[tuple[str, InputInfo]]:
        """``[("before", ...), ("after", ...)]``, in that order."""
        return [("before", self.before), ("after", self.after)]


class GridInfo(_Part):
    """``grid``: the BEFORE grid, the frame of every output."""

    crs: str | None = None
    width: int
    height: int
    pixel_size_m: list[float]
    frame: str = "map"   # "pixel": plain images placed on a nominal grid (--gsd)


class ShiftWindow(_Part):
    """The shift measured in one matching window: centre and shift in BEFORE pixels."""

    col_px: float
    row_px: float
    dx_px: float
    dy_px: float
    peak: float | None = None
    inlier: bool = True


class FieldStats(_Part):
    min: float
    max: float
    mean: float | None = None
    std: float | None = None


class LocalField(_Part):
    """``coregistration.local``: the local shift field (:meth:`ShiftField.summary`)."""

    nodes: int | None = None
    measured: int | None = None
    grid_cols_px: list[float]
    grid_rows_px: list[float]
    dx_px: FieldStats | None = None
    dy_px: FieldStats | None = None
    field_dx_px: list[list[float]]
    field_dy_px: list[list[float]]
    measured_mask: list[list[int]] | None = None


class GroundPlane(_Part):
    """``coregistration.ground``: the ground-plane measurement in small windows, made when the
    windows' consensus was weak or split (:meth:`pipeline.coreg.ground.GroundFit.summary`)."""

    windows: int
    measured: int
    used: int
    rejected: int
    shift_x_px: float
    shift_y_px: float
    quality: float
    holds: bool
    why: str | None = None
    trend_px: float | None = None


class Coregistration(_Part):
    """``coregistration``: AFTER's content relative to BEFORE, as measured before its removal.

    Shifts are in BEFORE pixels (x right, y down) and metres (x east, y north); ``quality`` 0 to
    1. ``applied`` is False when the run went on unregistered (reprojection alone). ``method``
    says how the shift was measured: the windows' consensus, or the ground plane in small
    windows (``ground``) when the windows disagreed; ``reason`` says why, when the consensus
    was not used as it is (or why the pair could not be registered).
    """

    shift_x_px: float
    shift_y_px: float
    shift_x_m: float | None = None
    shift_y_m: float | None = None
    quality: float
    method: str = ""
    applied: bool = True
    spread_px: float | None = None
    n_windows: int | None = None
    n_inliers: int | None = None
    windows: list[ShiftWindow] = []
    mode: str | None = None
    local: LocalField | None = None
    reason: str | None = None
    ground: GroundPlane | None = None

    def window_count(self) -> int:
        """Windows measured (``n_windows``, else the windows listed)."""
        return self.n_windows if self.n_windows is not None else len(self.windows)

    def inlier_count(self) -> int:
        """Windows that agree with the consensus (``n_inliers``, else those listed as such)."""
        return self.n_inliers if self.n_inliers is not None else sum(w.inlier for w in self.windows)

    def shift_removed_px(self) -> tuple[float, float]:
        """The one shift the run removed from AFTER: (0, 0) when it was not applied."""
        return (self.shift_x_px, self.shift_y_px) if self.applied else (0.0, 0.0)


class LevelInfo(_Part):
    """``radiometry.level``: the local level field subtracted after the linear map."""

    node_cols_px: list[float]
    node_rows_px: list[float]
    min: list[float]
    max: list[float]
    std: list[float]
    levels: list[list[list[float]]]

    def node_count(self) -> int:
        return len(self.node_cols_px) * len(self.node_rows_px)


class RadiometryInfo(_Part):
    """``radiometry``: the map applied to AFTER (``after * gain + offset``, per band, then the
    level field) and the noise units of the change score, in BEFORE's units."""

    method: str = ""
    mode: str = ""
    gains: list[float]
    offsets: list[float]
    level: LevelInfo | None = None
    score_unit: list[float] | None = None
    structure_unit: float | None = None


class ChangeCounts(_Part):
    appeared: int = 0
    disappeared: int = 0

    @property
    def total(self) -> int:
        return self.appeared + self.disappeared


class InputSettings(_Part):
    nodata: float | None = None


class DifferenceSettings(_Part):
    smoothing_px: float | None = None
    tolerance_px: int | None = None
    threshold_sigma: float = 5.0


class ProcessingSettings(_Part):
    block_px: int | None = None
    threads: int | None = None   # 0 or None: one per core


class OutputSettings(_Part):
    overlay_max_px: int | None = None
    chip_m: float | None = None


class RunSettings(_Part):
    """``config``: the effective configuration, as the run wrote it.

    The parts the report stage reads are typed; the others are kept as written (a report of an
    older version may hold keys that today's :class:`pipeline.config.Config` rejects; see
    :attr:`pipeline.report.review.Outputs.config` for the validated one). They are declared in
    the order of :class:`Config` so that report.json keeps its order.
    """

    input: InputSettings = InputSettings()
    coregistration: dict[str, Any] | None = None
    radiometry: dict[str, Any] | None = None
    difference: DifferenceSettings = DifferenceSettings()
    classes: list[dict[str, Any]] | None = None
    min_overlap: float | None = None
    moves: dict[str, Any] | None = None
    verifier: dict[str, Any] | None = None
    split: dict[str, Any] | None = None
    processing: ProcessingSettings = ProcessingSettings()
    output: OutputSettings = OutputSettings()
    zones: list[dict[str, Any]] | None = None


class ReportModel(_Part):
    """report.json of one pair (see the contract in the README).

    Build it with keyword arguments, or from a mapping with :func:`as_report`; read one with
    :func:`load_report`; write it with :func:`write_json`.
    """

    version: str | None = None
    inputs: Inputs
    grid: GridInfo | None = None
    overlap: float
    coregistration: Coregistration
    radiometry: RadiometryInfo | None = None
    counts: dict[str, ChangeCounts]
    counts_by_zone: dict[str, dict[str, ChangeCounts]] | None = None
    detections: int
    detector: dict[str, Any] | None = None
    screen: dict[str, Any] | None = None
    config: RunSettings = RunSettings()
    config_digest: str | None = None
    timings_s: dict[str, float] = {}

    def as_json_dict(self) -> dict:
        """The plain dict that report.json holds (the keys given, in the schema's order)."""
        return self.model_dump(exclude_unset=True)


def as_report(report: ReportModel | Mapping) -> ReportModel:
    """``report`` itself, or the mapping (report.json's content) validated into the model.

    Raises
    ------
    ValueError
        (pydantic's ValidationError) naming the fields that are missing or of the wrong type.
    """
    return report if isinstance(report, ReportModel) else ReportModel.model_validate(report)


def load_report(path: str | Path) -> ReportModel:
    """Read and validate a report.json.

    Raises
    ------
    InputError
        When the file is missing, is not JSON, or does not hold a report.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found", path=path) from None
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot be read ({err})", path=path) from None
    if not isinstance(doc, Mapping):
        raise InputError(f"{path}: not a report (a JSON object is expected)", path=path)
    try:
        return ReportModel.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{path}: not a report of detect-changes ({where}: {first['msg']}; "
                         f"{err.error_count()} problem(s))", path=path) from None


def write_json(path: str | Path, report: ReportModel | Mapping) -> Path:
    """Write report.json atomically; ``report`` is validated when it is a mapping."""
    doc = as_report(report).as_json_dict()
    rio.write_text_atomic(path, json.dumps(doc, indent=1, default=str))
    return Path(path)


# --- parts built from the run's values (plain dicts, merged by the pipeline) ----------------

def pair_report(scene, registration, noise, detections: list[Detection], config: Config) -> dict:
    """report.json's content of a run, less its timings, from the values its stages made.

    Parameters
    ----------
    scene : pipeline.io.scene.Scene
    registration : pipeline.coreg.register.Registration
    noise : pipeline.change.noise.NoiseModel
    detections : list of Detection
    config : Config
    """
    grid = scene.grid
    co = registration
    inputs = scene.inputs()
    before = inputs["before"]
    return {
        "version": __version__,
        "inputs": inputs,
        "grid": {"crs": grid.crs.to_string(), "width": before["width"],
                 "height": before["height"], "pixel_size_m": before["pixel_size_m"],
                 "frame": "pixel" if grid.pixel_frame else "map"},
        "analysis": {"pixel_size_m": [round(grid.res_m[0], 4), round(grid.res_m[1], 4)],
                     "factors": list(scene.factors), "width": grid.width,
                     "height": grid.height},
        "overlap": round(scene.validity.overlap, 4),
        "coregistration": {**coregistration_section(co.shift, grid, co.allow_unregistered,
                                                    reason=co.reason, ground=co.ground),
                           "mode": co.mode,
                           **({"local": co.field.summary(grid.factor)}
                              if co.field is not None else {})},
        "radiometry": noise.report(),
        "counts": counts(detections, config),
        "detections": len(detections),
        "config": config.model_dump(mode="json"),
        "config_digest": config.digest(),
    }


def counts(detections: list[Detection], config: Config) -> dict:
    """Counts by category and change: ``{category: {appeared: n, disappeared: n}}``; every
    category of the config is listed, detected or not."""
    cats = config.categories
    out = {c: dict.fromkeys(CHANGES, 0) for c in cats}
    for d in detections:
        out.setdefault(d.category, dict.fromkeys(CHANGES, 0))[d.change] += 1
    return out


def coregistration_section(shift: Shift | None, grid: rio.Grid, allow_unregistered: bool, *,
                           reason: str = "", ground=None) -> dict:
    """The ``coregistration`` member of report.json (see :class:`Coregistration`).

    ``reason`` and ``ground`` (a :class:`~pipeline.coreg.ground.GroundFit`) come from the
    :class:`~pipeline.coreg.register.Registration`: why the windows' consensus was not used as
    it is, and the ground-plane measurement when one was made.
    """
    extra = {**({"reason": reason} if reason else {}),
             **({"ground": ground.summary()} if ground is not None else {})}
    if shift is None:
        return {"shift_x_px": 0.0, "shift_y_px": 0.0, "shift_x_m": 0.0, "shift_y_m": 0.0,
                "quality": 0.0, "method": "none (unregistered)" if allow_unregistered else "disabled",
                "applied": False, "windows": [], **extra}
    t = grid.transform
    # map displacement of a content moving by (dx, dy) pixels: east, north
    dx_map, dy_map = t.a * shift.dx_px + t.b * shift.dy_px, t.d * shift.dx_px + t.e * shift.dy_px
    unit = grid.res_m[0] / max(abs(t.a), 1e-12)
    shift = shift.scaled(grid.factor)  # in BEFORE's own pixels when they were read averaged
    return {
        "shift_x_px": round(shift.dx_px, 4), "shift_y_px": round(shift.dy_px, 4),
        "shift_x_m": round(dx_map * unit, 3), "shift_y_m": round(dy_map * unit, 3),
        "quality": shift.quality, "method": shift.method, "applied": shift.method != "none (unregistered)",
        "spread_px": shift.spread_px, "n_windows": len(shift.windows), "n_inliers": shift.n_inliers,
        "windows": [{"col_px": w.col_px, "row_px": w.row_px, "dx_px": round(w.dx_px, 4),
                     "dy_px": round(w.dy_px, 4), "peak": round(w.peak, 4), "inlier": w.inlier}
                    for w in shift.windows],
        **extra,
    }


def zone_counts(report: ReportModel, detections: list[Detection]
                ) -> dict[str, dict[str, ChangeCounts]] | None:
    """Counts by zone, category and change, or None when the run has no zones.

    Taken from the report's ``counts_by_zone`` when the pipeline wrote it, else from a ``zone``
    attribute of the detections.
    """
    if report.counts_by_zone:
        return report.counts_by_zone
    out: dict[str, dict[str, dict[str, int]]] = {}
    for d in detections:
        zone = getattr(d, "zone", None)
        if zone:
            cat = out.setdefault(zone, {}).setdefault(d.category, dict.fromkeys(CHANGES, 0))
            cat[d.change] = cat.get(d.change, 0) + 1
    if not out:
        return None
    return {z: {c: ChangeCounts(**n) for c, n in cats.items()} for z, cats in out.items()}
