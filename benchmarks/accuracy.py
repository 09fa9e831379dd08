"""Aircraft change accuracy on real imagery (the Airbus Pléiades sample) and on synthetic pairs.

    python benchmarks/accuracy.py                       # every real pair + 4 seeds of synthetics
    python benchmarks/accuracy.py --groups G1,G3 --limit 4 --keep --synthetic-seeds 0
    python benchmarks/accuracy.py --allow-unregistered  # also score pairs whose shift is refused

Real pairs: every overlapping pair of two annotated images of one of the 11 airports
(``airport_pairs.csv``: 104 rows, 100 with both images annotated), wrapped as GeoTIFFs with AFTER
placed by the pair's homography translation (the georeference a provider would give) and cached
under ``benchmarks/.cache/accuracy/<group>_<before>_<after>``. The truth comes from the per-date
aircraft boxes (:mod:`pipeline.testing.cases`): the frame offset is the homography's translation
refined by the aircraft boxed on both dates (:func:`~pipeline.testing.cases.refine_offset`,
never the pipeline's own co-registration); matched boxes are unchanged, the rest appeared or
disappeared; truncated boxes and boxes at an edge of the common overlap or on fill are ignore
regions. The 17 same-acquisition pairs (two crops of one scene) are no-change controls: they are
not scored, their aircraft detections are counted (goal: none).

Columns: ``shift``: the residual shift the pipeline measured on top of the placement; ``truth``:
the one the aircraft imply (homography to truth offset) and ``n``, the aircraft behind it;
``resid``: shift less truth. Scores count aircraft only, the change must agree;
launcher-sized detections (``lnch``) are counted apart. ``wdir``: false positives on a missed
truth aircraft of the other change; ``fp@ac``: false positives on an unchanged annotated
aircraft; ``exc``: detections left out because they lie on an ignore region.
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
from pipeline.coreg.register import UNREGISTERED
from pipeline.errors import PipelineError, RegistrationError
from pipeline.evaluate import (
    ClassConfusion,
    Score,
    class_confusion,
    format_confusion,
    load_features,
)
from pipeline.run import coregister_pair, run_pair
from pipeline.testing import synth
from pipeline.testing.cases import (
    Case,
    CaseScore,
    OffsetFit,
    Truth,
    airport_pair_cases,
    build_truth,
    control_truth,
    fill_mask,
    image_shape,
    load_annotations,
    refine_offset,
    score_case,
    wrap_case,
    write_truth,
)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "data" / "airbus-aircraft-sample"
WORK = Path(__file__).resolve().parent / ".cache" / "accuracy"
#: Where the pipeline's shift and the truth's may differ: hand-drawn boxes scatter by a few px.
RESID_WARN_PX = 2.0

HEADER = (f"{'group':<9} {'before':<8} {'after':<8} {'ctl':>3} {'app':>3} {'dis':>3} {'ign':>3} "
          f"{'found':>5} {'tp':>3} {'fp':>3} {'fn':>3} {'P':>5} {'R':>5} {'F1':>5} {'wdir':>4} "
          f"{'fp@ac':>5} {'exc':>3} {'lnch':>4} {'shift dx,dy':>13} {'q':>4} "
          f"{'truth dx,dy':>13} {'n':>2} {'resid':>11} {'time s':>6}")


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
    fit: OffsetFit | None = None
    refused: bool = False
    classes: ClassConfusion | None = None

    @property
    def name(self) -> str:
        return f"{self.group}_{self.before[:8]}_{self.after[:8]}"

    @property
    def resid(self) -> tuple[float, float] | None:
        """The pipeline's residual shift less the truth's (homography to truth offset), px."""
        if self.shift is None or self.fit is None:
            return None
        cx, cy = self.fit.correction_px
        return self.shift[0] - cx, self.shift[1] - cy

    def line(self) -> str:
        head = (f"{self.group:<9} {self.before[:8]:<8} {self.after[:8]:<8} "
                f"{'yes' if self.control else '':>3} {self.n_app:>3} {self.n_dis:>3} "
                f"{self.n_ignore:>3}")
        q = f"{self.quality:>4.2f}" if self.quality is not None else f"{'':>4}"
        shift = f"{self.shift[0]:+.2f},{self.shift[1]:+.2f}" if self.shift else "-"
        truth = (f"{self.fit.correction_px[0]:+.1f},{self.fit.correction_px[1]:+.1f}"
                 if self.fit is not None else "-")
        n = self.fit.n_pairs if self.fit is not None else ""
        resid = self.resid
        resid_s = f"{resid[0]:+.1f},{resid[1]:+.1f}" if resid is not None else "-"
        tail = f"{shift:>13} {q} {truth:>13} {n:>2} {resid_s:>11} {self.seconds:>6.1f}"
        if self.scored is None:
            return f"{head} {'failed: ' + self.error:<55} {tail}"
        s = self.scored.score
        fpac = "-" if self.fp_on_aircraft is None else str(self.fp_on_aircraft)
        return (f"{head} {s.tp + s.fp:>5} {s.tp:>3} {s.fp:>3} {s.fn:>3} {s.precision:>5.2f} "
                f"{s.recall:>5.2f} {s.f1:>5.2f} {self.scored.wrong_change:>4} {fpac:>5} "
                f"{self.scored.excused:>3} {self.scored.launchers:>4} {tail}")


def real_config(config: Config) -> Config:
    """The JPEGs declare no nodata; their black fill is 0 (as in tests/test_realdata.py)."""
    return config.with_overrides({"input": {"nodata": 0}})


def prepare(case: Case, folder: Path) -> tuple[Path, Path]:
    """A case's wrapped GeoTIFFs, made once and cached in ``folder`` (made again when the
    cached ones place AFTER elsewhere, as an earlier revision of this benchmark did)."""
    before, after, meta_path = folder / "before.tif", folder / "after.tif", folder / "case.json"
    meta = {"before": case.before.name, "after": case.after.name,
            "after_offset_px": list(case.after_offset_px)}
    if (before.exists() and after.exists() and meta_path.exists()
            and json.loads(meta_path.read_text()) == meta):
        return before, after
    before, after = wrap_case(case, folder)
    meta_path.write_text(json.dumps(meta))
    return before, after


def case_truth(case: Case, annotations: dict) -> tuple[Truth, OffsetFit]:
    """The truth of a case and the frame offset behind it: the placement's (the homography's
    translation) refined by the aircraft boxed on both dates; a control's has no change."""
    before_boxes, after_boxes = annotations[case.before_id], annotations[case.after_id]
    fit = refine_offset(before_boxes, after_boxes, case.nominal_offset_px)
    truth = build_truth(before_boxes, after_boxes, fit.offset_px, image_shape(case.before),
                        image_shape(case.after),
                        fill=(fill_mask(case.before), fill_mask(case.after)))
    return (control_truth(truth) if case.control else truth), fit


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
        before, after = prepare(case, folder)
        truth, fit = case_truth(case, annotations)
        write_truth(folder / "truth.geojson", truth, before)
        row = Row(case.group, case.before.stem, case.after.stem, case.control, truth,
                  len(truth.appeared), len(truth.disappeared), len(truth.ignore), fit=fit)
        _run_and_score(row, before, after, folder / "out", config, keep=keep,
                       allow_unregistered=allow_unregistered,
                       truth_features=load_features(folder / "truth.geojson"))
        if row.scored is not None:
            row.fp_on_aircraft = fp_on_aircraft(row.scored.false_positives, truth)
        row.seconds = time.perf_counter() - t0
        print(row.line(), flush=True)
        rows.append(row)
    return rows


def _refused(row: Row, before: Path, after: Path, config: Config) -> None:
    """Mark ``row`` refused by the co-registration gate, with the shift and quality the gate
    saw (measured again: neither the error nor an unregistered run carries them)."""
    row.refused = True
    shift, _ = coregister_pair(before, after, config)
    if shift is not None:
        row.shift, row.quality = (shift.dx_px, shift.dy_px), shift.quality


def _run_and_score(row: Row, before: Path, after: Path, out: Path, config: Config, *,
                   keep: bool, truth_features: list[dict], allow_unregistered: bool = False
                   ) -> None:
    """Run one pair into ``out`` and fill ``row`` with its shift and scores (or its error).

    A pair the co-registration gate refuses is marked ``refused`` (:func:`_refused`)."""
    try:
        result = run_pair(before, after, out, config, allow_unregistered=allow_unregistered)
    except RegistrationError:
        _refused(row, before, after, config)
        row.error = ("co-registration refused (no window could be measured)" if row.quality is None
                     else "co-registration refused (quality below min_quality)")
    except PipelineError as err:
        row.error = err.reason[:47]
    else:
        if config.coregistration.enabled and (result.shift is None
                                              or result.shift.method == UNREGISTERED):
            _refused(row, before, after, config)  # run unregistered (--allow-unregistered)
        elif result.shift is not None:
            row.shift, row.quality = (result.shift.dx_px, result.shift.dy_px), result.shift.quality
        found = load_features(out / "detections.geojson")
        row.scored = score_case(truth_features, found)
        row.classes = class_confusion(truth_features, found)
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


def _group_order(group: str) -> tuple:
    """G2 before G10."""
    return (len(group), group)


def _score_of(rows: list[Row]) -> Score:
    tp = sum(r.scored.score.tp for r in rows if r.scored is not None)
    fp = sum(r.scored.score.fp for r in rows if r.scored is not None)
    fn = sum(r.scored.score.fn for r in rows if r.scored is not None)
    return Score(tp, fp, fn)


def airport_table(rows: list[Row]) -> str:
    """Per airport, then over all, micro-averaged: the real (non-control) pairs' scores,
    launcher-sized detections and the pairs the co-registration gate refused."""
    header = (f"{'airport':<7} {'pairs':>5} {'scored':>6} {'truth':>5} {'tp':>4} {'fp':>5} "
              f"{'fn':>4} {'P':>5} {'R':>5} {'F1':>5} {'lnch':>4} {'lnch/pair':>9} "
              f"{'refused':>7} {'controls':>8}")
    lines = [header]
    groups = sorted({r.group for r in rows}, key=_group_order)
    for group, sel in [(g, [r for r in rows if r.group == g]) for g in groups] + [("all", rows)]:
        real = [r for r in sel if not r.control]
        scored = [r for r in real if r.scored is not None]
        s = _score_of(scored)
        lnch = sum(r.scored.launchers for r in scored)
        per = f"{lnch / len(scored):.2f}" if scored else "-"
        lines.append(f"{group:<7} {len(real):>5} {len(scored):>6} {s.tp + s.fn:>5} {s.tp:>4} "
                     f"{s.fp:>5} {s.fn:>4} {s.precision:>5.3f} {s.recall:>5.3f} {s.f1:>5.3f} "
                     f"{lnch:>4} {per:>9} {sum(r.refused for r in real):>7} "
                     f"{sum(r.control for r in sel):>8}")
    return "\n".join(lines)


def controls_report(rows: list[Row]) -> str:
    """Each same-acquisition control with its aircraft and launcher-sized detections."""
    controls = [r for r in rows if r.control]
    lines = [f"same-acquisition controls (no change; goal: no aircraft detected): {len(controls)}"]
    total = 0
    for r in controls:
        if r.scored is None:
            lines.append(f"  {r.name:<24} failed: {r.error}")
            continue
        s = r.scored
        aircraft = s.score.tp + s.score.fp + s.excused
        total += aircraft
        lines.append(f"  {r.name:<24} aircraft {aircraft:>3} ({s.excused} on ignore regions)  "
                     f"launcher-sized {s.launchers:>2}"
                     + ("  refused by the gate, run unregistered" if r.refused else ""))
    lines.append(f"  total aircraft detected on the controls: {total}")
    return "\n".join(lines)


def refused_report(rows: list[Row]) -> str:
    """The pairs the co-registration gate refused, with the quality it saw and how far the
    placement (the homography) lay from the truth's offset."""
    refused = [r for r in rows if r.refused]
    lines = [f"pairs refused by the co-registration gate: {len(refused)}"]
    for r in refused:
        q = f"{r.quality:.2f}" if r.quality is not None else "-  (no window)"
        cx, cy = r.fit.correction_px if r.fit is not None else (float("nan"),) * 2
        shift = f"{r.shift[0]:+.1f},{r.shift[1]:+.1f}" if r.shift else "-"
        lines.append(f"  {r.name:<24} {'control' if r.control else 'real':<7} quality {q:<5} "
                     f"measured {shift:>13}  truth {cx:+.1f},{cy:+.1f} "
                     f"({r.fit.n_pairs if r.fit else 0} aircraft)")
    return "\n".join(lines)


def resid_report(rows: list[Row], limit_px: float = RESID_WARN_PX) -> str:
    """Pairs whose pipeline shift and truth offset differ by more than ``limit_px``."""
    far = [r for r in rows if r.resid is not None and max(map(abs, r.resid)) > limit_px]
    lines = [(f"pairs whose pipeline shift differs from the truth's offset by more than "
              f"{limit_px:g} px: {len(far)} of {sum(r.resid is not None for r in rows)}")]
    for r in far:
        lines.append(f"  {r.name:<24} shift {r.shift[0]:+.1f},{r.shift[1]:+.1f} "
                     f"truth {r.fit.correction_px[0]:+.1f},{r.fit.correction_px[1]:+.1f} "
                     f"({r.fit.n_pairs} aircraft) resid {r.resid[0]:+.1f},{r.resid[1]:+.1f}"
                     + ("  (refused)" if r.refused else ""))
    return "\n".join(lines)


def select_cases(cases: list[Case], groups: str, limit: int) -> list[Case]:
    """The cases of the comma-separated ``groups`` (all when empty), at most ``limit`` (0: all)."""
    if groups:
        wanted = {g.strip() for g in groups.split(",") if g.strip()}
        cases = [c for c in cases if c.group in wanted]
    return cases[:limit] if limit else cases


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
    t0 = time.perf_counter()
    if args.dataset.is_dir():
        try:
            cases = select_cases(airport_pair_cases(args.dataset), args.groups, args.limit)
        except PipelineError as err:
            sys.exit(f"accuracy: {err}")
        rows = run_real(args.dataset, cases, args.work, config, keep=args.keep,
                        allow_unregistered=args.allow_unregistered)
        real = [r for r in rows if not r.control]
        print(f"\nper airport (real pairs; controls apart), micro-averaged:\n"
              f"{airport_table(rows)}", flush=True)
        print(summary(rows, "real"), flush=True)
        scored = [r for r in real if r.scored is not None]
        if scored:
            lnch = sum(r.scored.launchers for r in scored)
            print(f"launcher-sized detections on real pairs: {lnch} on {len(scored)} pairs, "
                  f"{lnch / len(scored):.2f} per pair", flush=True)
        print(controls_report(rows), flush=True)
        print(refused_report(rows), flush=True)
        print(resid_report(rows), flush=True)
        print(f"real pairs took {time.perf_counter() - t0:.0f} s", flush=True)
    else:
        print(f"real imagery {args.dataset} is absent: real pairs skipped", flush=True)
    if args.synthetic_seeds > 0:
        srows = run_synthetic(args.synthetic_seeds, args.synthetic_size, args.work, config,
                              keep=args.keep)
        for difficulty in ("easy", "medium", "hard"):
            print(summary([r for r in srows if r.group == difficulty], f"synthetic {difficulty}")
                  .splitlines()[0], flush=True)
        print(summary(srows, "synthetic"), flush=True)
        # the synthetic truth names each aircraft's class (the real truth does not)
        tables = [r.classes for r in srows if r.classes is not None]
        if tables:
            print("\nsynthetic pairs, " + format_confusion(sum(tables[1:], tables[0])),
                  flush=True)


if __name__ == "__main__":
    main()
