"""Aircraft change accuracy on real imagery (the Airbus Pléiades sample) and on synthetic pairs.

    python benchmarks/accuracy.py                       # every real pair + 4 seeds of synthetics
    python benchmarks/accuracy.py --groups G1,G3 --limit 4 --keep --synthetic-seeds 0
    python benchmarks/accuracy.py --allow-unregistered  # also score pairs whose shift is refused

Real pairs: every two annotated images of one airport (``derived_groups.csv``), wrapped as
GeoTIFFs and cached under ``benchmarks/.cache/accuracy/``. The truth comes from the per-date
aircraft boxes (:mod:`pipeline.testing.cases`): matched boxes are unchanged, the rest appeared or
disappeared; truncated and edge boxes are ignore regions. The frame offset behind the truth is
the pipeline's own co-registration, accepted at any quality (the boxes are 60-190 px, so a pixel
or two does not matter) and checked against the boxes (``resid``). G5 b3c7c22d/fc8f9dc5 and G8 are
no-change controls. Scores count aircraft only, the change must agree; launcher-sized detections
are counted apart. ``wdir``: false positives on a missed truth aircraft of the other change;
``fp@ac``: false positives on an unchanged annotated aircraft; ``exc``: detections left out
because they lie on an ignore region.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config, load_config
from pipeline.errors import PipelineError, RegistrationError
from pipeline.evaluate import Score, load_features
from pipeline.run import coregister_pair, run_pair
from pipeline.testing import synth
from pipeline.testing.cases import (
    Case,
    CaseScore,
    Truth,
    airbus_cases,
    build_truth,
    fill_mask,
    image_shape,
    load_annotations,
    placement_px,
    score_case,
    wrap_case,
    write_truth,
)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "data" / "airbus-aircraft-sample"
WORK = Path(__file__).resolve().parent / ".cache" / "accuracy"

HEADER = (f"{'group':<9} {'before':<8} {'after':<8} {'ctl':>3} {'app':>3} {'dis':>3} {'ign':>3} "
          f"{'found':>5} {'tp':>3} {'fp':>3} {'fn':>3} {'P':>5} {'R':>5} {'F1':>5} {'wdir':>4} "
          f"{'fp@ac':>5} {'exc':>3} {'lnch':>4} {'shift dx,dy':>13} {'q':>4} {'resid':>9} "
          f"{'time s':>6}")


@dataclass
class Row:
    """One scored pair, as printed."""

    group: str
    before: str
    after: str
    control: bool
    truth: Truth | None
    n_app: int
    n_dis: int
    n_ignore: int
    scored: CaseScore | None = None
    fp_on_aircraft: int | None = None
    shift: tuple[float, float] | None = None
    quality: float | None = None
    seconds: float = 0.0
    error: str = ""

    def line(self) -> str:
        head = (f"{self.group:<9} {self.before[:8]:<8} {self.after[:8]:<8} "
                f"{'yes' if self.control else '':>3} {self.n_app:>3} {self.n_dis:>3} "
                f"{self.n_ignore:>3}")
        q = f"{self.quality:>4.2f}" if self.quality is not None else f"{'':>4}"
        resid = self.truth.residual_px if self.truth is not None else None
        resid_s = f"{resid[0]:+.1f},{resid[1]:+.1f}" if resid is not None else "-"
        if self.scored is None:
            return f"{head} {'failed: ' + self.error:<74} {q} {resid_s:>9} {self.seconds:>6.1f}"
        s = self.scored.score
        shift = f"{self.shift[0]:+.2f},{self.shift[1]:+.2f}" if self.shift else "-"
        fpac = "-" if self.fp_on_aircraft is None else str(self.fp_on_aircraft)
        return (f"{head} {s.tp + s.fp:>5} {s.tp:>3} {s.fp:>3} {s.fn:>3} {s.precision:>5.2f} "
                f"{s.recall:>5.2f} {s.f1:>5.2f} {self.scored.wrong_change:>4} {fpac:>5} "
                f"{self.scored.excused:>3} {self.scored.launchers:>4} {shift:>13} {q} "
                f"{resid_s:>9} {self.seconds:>6.1f}")


def real_config(config: Config) -> Config:
    """The JPEGs declare no nodata; their black fill is 0 (as in tests/test_realdata.py)."""
    return config.with_overrides({"input": {"nodata": 0}})


def prepare(case: Case, folder: Path, config: Config) -> tuple[Path, Path, dict]:
    """Wrapped GeoTIFFs and the frame offset of a case, made once and cached in ``folder``."""
    before, after, meta_path = folder / "before.tif", folder / "after.tif", folder / "offset.json"
    if before.exists() and after.exists() and meta_path.exists():
        return before, after, json.loads(meta_path.read_text())
    before, after = wrap_case(case, folder)
    # the truth takes the measured offset at any quality: the annotations vet it (resid)
    shift, _ = coregister_pair(before, after, config)
    meta = {"offset_px": None, "quality": None}
    if shift is not None:
        col0, row0 = placement_px(before, after)
        meta = {"offset_px": [shift.dx_px - col0, shift.dy_px - row0], "quality": shift.quality}
    meta_path.write_text(json.dumps(meta))
    return before, after, meta


def fp_on_aircraft(fps: list[dict], truth: Truth, margin_px: float = 8.0) -> int:
    """False positives whose centroid lies in an unchanged aircraft's box (either date's)."""
    boxes = [b for pair in truth.unchanged for b in pair]
    n = 0
    for f in fps:
        c = (f.get("properties") or {}).get("centroid_px")
        if c is None:
            continue
        x, y = c[0] + 0.5, c[1] + 0.5  # pixel index -> image coordinates of its centre
        n += any(b.x0 - margin_px <= x <= b.x1 + margin_px and
                 b.y0 - margin_px <= y <= b.y1 + margin_px for b in boxes)
    return n


def run_real(dataset: Path, cases: list[Case], work: Path, config: Config, *, keep: bool,
             allow_unregistered: bool) -> list[Row]:
    annotations = load_annotations(dataset / "annotations.csv")
    config = real_config(config)
    rows = []
    print("real pairs (Airbus Pléiades sample, 0.5 m):")
    print(HEADER, flush=True)
    for case in cases:
        folder = work / case.name
        t0 = time.perf_counter()
        before, after, meta = prepare(case, folder, config)
        row = Row(case.group, case.before.stem, case.after.stem, case.control, None, 0, 0, 0,
                  quality=meta["quality"])
        if meta["offset_px"] is None:
            row.error = "no frame offset (no window could be measured)"
            row.seconds = time.perf_counter() - t0
            print(row.line(), flush=True)
            rows.append(row)
            continue
        truth = build_truth(annotations[case.before_id], annotations[case.after_id],
                            tuple(meta["offset_px"]), image_shape(case.before),
                            image_shape(case.after),
                            fill=(fill_mask(case.before), fill_mask(case.after)))
        write_truth(folder / "truth.geojson", truth, before)
        row.truth = truth
        row.n_app, row.n_dis, row.n_ignore = (len(truth.appeared), len(truth.disappeared),
                                              len(truth.ignore))
        _run_and_score(row, before, after, folder / "out", config, keep=keep,
                       allow_unregistered=allow_unregistered,
                       truth_features=load_features(folder / "truth.geojson"))
        if row.scored is not None:
            row.fp_on_aircraft = fp_on_aircraft(row.scored.false_positives, truth)
        row.seconds = time.perf_counter() - t0
        print(row.line(), flush=True)
        rows.append(row)
    return rows


def _run_and_score(row: Row, before: Path, after: Path, out: Path, config: Config, *,
                   keep: bool, truth_features: list[dict], allow_unregistered: bool = False
                   ) -> None:
    """Run one pair into ``out`` and fill ``row`` with its shift and scores (or its error)."""
    try:
        result = run_pair(before, after, out, config, allow_unregistered=allow_unregistered)
    except RegistrationError:
        row.error = "co-registration refused (quality below min_quality)"
    except PipelineError as err:
        row.error = err.reason[:66]
    else:
        if result.shift is not None:
            row.shift = (result.shift.dx_px, result.shift.dy_px)
            row.quality = result.shift.quality
        row.scored = score_case(truth_features, load_features(out / "detections.geojson"))
    finally:
        if not keep and out.exists():
            shutil.rmtree(out)


def run_synthetic(seeds: int, size_px: int, work: Path, config: Config, *, keep: bool
                  ) -> list[Row]:
    """The synthetic suite of benchmarks/synthetic.py, scored like the real pairs."""
    jobs = [(d, s, "random", d) for d in ("easy", "medium", "hard") for s in range(seeds)]
    jobs += [("no-change", s, "no-change", ("easy", "medium", "hard")[s % 3]) for s in range(seeds)]
    rows = []
    print(f"\nsynthetic pairs ({size_px} px, 0.5 m; truth: aircraft only):")
    print(HEADER, flush=True)
    for group, seed, scenario, difficulty in jobs:
        folder = work / "synthetic" / f"{group}_{seed}_{size_px}"
        t0 = time.perf_counter()
        if not (folder / "truth.geojson").exists():
            synth.write_pair(synth.make_pair(seed=seed, size_px=size_px, scenario=scenario,
                                             difficulty=difficulty), folder)
        truth = load_features(folder / "truth.geojson")
        n_app = sum(f["properties"]["category"] == "aircraft" and
                    f["properties"]["change"] == "appeared" for f in truth)
        n_dis = sum(f["properties"]["category"] == "aircraft" and
                    f["properties"]["change"] == "disappeared" for f in truth)
        row = Row(group, f"seed {seed}", difficulty if group == "no-change" else "",
                  group == "no-change", None, n_app, n_dis, 0)
        _run_and_score(row, folder / "before.tif", folder / "after.tif", folder / "out", config,
                       keep=keep, truth_features=truth)
        row.seconds = time.perf_counter() - t0
        print(row.line(), flush=True)
        rows.append(row)
    return rows


def summary(rows: list[Row], label: str) -> str:
    """Micro-averaged scores over the scored non-control rows; detections on the controls."""
    total = Score(0, 0, 0)
    launchers = 0
    for r in rows:
        if r.scored is not None and not r.control:
            s = r.scored.score
            total = Score(total.tp + s.tp, total.fp + s.fp, total.fn + s.fn)
            launchers += r.scored.launchers
    scored = sum(r.scored is not None and not r.control for r in rows)
    failed = [r for r in rows if r.scored is None and not r.control]
    unscored = sum(r.n_app + r.n_dis for r in failed)
    controls = [r for r in rows if r.control]
    on_controls = ", ".join(
        f"{r.before[:8]}/{r.after[:8] or '-'}: " + (
            f"{r.scored.score.tp + r.scored.score.fp} aircraft + {r.scored.launchers} launcher"
            if r.scored is not None else "failed") for r in controls)
    return (f"{label}: {scored} pairs scored: truth {total.tp + total.fn}, "
            f"found {total.tp + total.fp}, tp {total.tp}, fp {total.fp}, fn {total.fn}, "
            f"P {total.precision:.3f} "
            f"R {total.recall:.3f} F1 {total.f1:.3f}, launcher-sized {launchers}; "
            f"{len(failed)} pairs failed ({unscored} truth changes unscored)\n"
            f"{label} controls (no change): {on_controls or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, default=DATASET,
                    help="the airbus-aircraft-sample folder (default: ../shared/data/...)")
    ap.add_argument("--work", type=Path, default=WORK, help="cache and output folder")
    ap.add_argument("--groups", default="", help="comma-separated groups, e.g. G1,G3 (default all)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many real pairs")
    ap.add_argument("--keep", action="store_true",
                    help="keep each pair's outputs (overlay.png, report.html...) under --work")
    ap.add_argument("--synthetic-seeds", type=int, default=4,
                    help="seeds per synthetic difficulty, and no-change pairs (0: none)")
    ap.add_argument("--synthetic-size", type=int, default=1024, help="side of synthetic pairs, px")
    ap.add_argument("--config", type=Path, default=None, help="pipeline YAML (default: defaults)")
    ap.add_argument("--allow-unregistered", action="store_true",
                    help="score pairs whose shift is refused, with the reprojection alone")
    args = ap.parse_args()
    try:
        config = load_config(args.config)
    except PipelineError as err:
        sys.exit(f"accuracy: {err}")
    rows = []
    if args.dataset.is_dir():
        cases = airbus_cases(args.dataset)
        if args.groups:
            wanted = {g.strip() for g in args.groups.split(",") if g.strip()}
            cases = [c for c in cases if c.group in wanted]
        if args.limit:
            cases = cases[:args.limit]
        rows = run_real(args.dataset, cases, args.work, config, keep=args.keep,
                        allow_unregistered=args.allow_unregistered)
        print(summary(rows, "real"), flush=True)
    else:
        print(f"real imagery {args.dataset} is absent: real pairs skipped", flush=True)
    if args.synthetic_seeds > 0:
        srows = run_synthetic(args.synthetic_seeds, args.synthetic_size, args.work, config,
                              keep=args.keep)
        for difficulty in ("easy", "medium", "hard"):
            print(summary([r for r in srows if r.group == difficulty], f"synthetic {difficulty}")
                  .splitlines()[0], flush=True)
        print(summary(srows, "synthetic"), flush=True)


if __name__ == "__main__":
    main()
