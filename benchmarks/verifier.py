"""Train and evaluate the optional aircraft verifier (:mod:`pipeline.detect.verifier`).

    python benchmarks/verifier.py dump  --work /tmp/verifier   # candidates of every cached pair
    python benchmarks/verifier.py loao  --work /tmp/verifier   # leave-one-airport-out scores
    python benchmarks/verifier.py loao  --work /tmp/verifier --without-detector  # the difference alone
    python benchmarks/verifier.py train --work /tmp/verifier --out pipeline/detect/verifier_model.json
    python benchmarks/verifier.py compare --work /tmp/other --against /tmp/verifier  # within noise?
    python benchmarks/verifier.py compare --work /tmp/v --detector-only --against /tmp/v

``dump`` runs the pipeline over the real pairs cached by ``benchmarks/accuracy.py`` (under
``benchmarks/.cache/accuracy``; run accuracy.py once first): the overlapping pairs of the 11
airports (:func:`pipeline.testing.cases.airport_pair_cases`), its same-acquisition pairs the
no-change controls; and over synthetic pairs, keeping
every aircraft candidate whose mean change score reaches ``verifier.min_sigma`` with its features
and whether the classical path (``difference.blob_sigma``) keeps it, and writes one JSON file per
pair under ``--work/cases``. A candidate's label: it matches a truth aircraft of the same change
(as :func:`pipeline.testing.cases.score_case` matches, all candidates at once); unmatched candidates on
an ignore region, and those that one_per_object would merge with a matched one, are left out of
training. Every candidate is recorded (``split.max_overlap`` 1): the verifier judges them before
one_per_object, which ``loao`` applies to those it keeps, as pipeline.detect.judge.settle does. Synthetic seeds 4-11 and 20-27
(``pipeline.testing.synth``) train, so that synthetic aircraft are not rejected; seeds 0-3, the suite of
accuracy.py, are only scored.

``loao``: for each airport (G1..G11), a model trained on the other airports (and the synthetic
training pairs), its threshold chosen on those airports alone (inner leave-one-airport-out), is
applied to the held-out airport's pairs, which are scored exactly (score_case on the kept
detections). It also counts the truth changes that some candidate matches: the recall a perfect
verifier would reach, the ceiling that only more candidates can raise. ``train`` fits the
shipped model on all of them, its threshold chosen the same way.

``compare`` runs ``loao`` on two dumps of the same pairs (say, a configuration against the
defaults) and says whether their verifier F1 differ by more than the table's noise: each
airport's F1 in both, and a paired bootstrap of the difference (the same pairs drawn for both
dumps), once drawing pairs again within each airport and once drawing whole airports, with its
95 % interval and the share of draws below zero. ``--without-detector`` and
``--detector-only`` apply to the first dump only, so a dump can be compared with itself.

Training needs scikit-learn (``pip install -e .[train]``); the shipped model needs numpy only.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import shapely
import shapely.geometry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the accuracy benchmark beside this script
from accuracy import DATASET, real_config  # noqa: E402

from pipeline.config import Config, SplitConfig, load_config  # noqa: E402
from pipeline.detect import verifier  # noqa: E402
from pipeline.detect.classify import larger_of_overlapping, overlap_share  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.evaluate import is_ignore, load_features  # noqa: E402
from pipeline.io import input_px  # noqa: E402
from pipeline.run import run_pair  # noqa: E402
from pipeline.testing import synth
from pipeline.testing.cases import (  # noqa: E402
    airport_pair_cases,
    detection_labels,
    score_case,
)

CACHE = Path(__file__).resolve().parent / ".cache" / "accuracy"
# seeds 12 and 13 are left to the tests (scenes the verifier never saw)
SYN_TRAIN_SEEDS = (*range(4, 12), *range(20, 28))
SYN_EVAL_SEEDS = range(0, 4)
# the tree settings tried; each model's own is chosen with its threshold, on its training
# airports alone (choose_settings)
GBT_GRID = (
    {"max_depth": 3, "max_iter": 150, "learning_rate": 0.05, "min_samples_leaf": 20},
    {"max_depth": 3, "max_iter": 300, "learning_rate": 0.05, "min_samples_leaf": 20},
    {"max_depth": 4, "max_iter": 150, "learning_rate": 0.05, "min_samples_leaf": 20},
)
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.01), 2)


def dump_pair(name: str, kind: str, group: str, before: Path, after: Path, truth_path: Path,
              work: Path, config: Config) -> dict | None:
    out = work / "runs" / name
    records: list = []
    try:
        result = run_pair(before, after, out, config, allow_unregistered=True, recorder=records)
    except PipelineError as err:
        print(f"{name}: {err}", flush=True)
        return None
    # the records' positions are on the pixels analysed, detections.geojson's on BEFORE's own
    k = result.report["analysis"]["factors"][0]
    by_place = {(round(float(input_px(r["centroid_px"][0], k)), 2),
                 round(float(input_px(r["centroid_px"][1], k)), 2), r["change"]): r
                for r in records}
    dets = load_features(next(out.glob("detections*.geojson")))
    truth = load_features(truth_path)
    aircraft = [f for f in dets if f["properties"]["category"] == "aircraft"]
    others = [f for f in dets if f["properties"]["category"] != "aircraft"]
    labels = detection_labels(truth, aircraft)
    for f, lab in zip(aircraft, labels):
        p = f["properties"]
        r = by_place[(round(p["centroid_px"][0], 2), round(p["centroid_px"][1], 2), p["change"])]
        p["_features"], p["_classical"], p["_label"] = r["features"], r["classical"], lab
    shutil.rmtree(out)
    return {"name": name, "kind": kind, "group": group, "truth": truth,
            "aircraft": aircraft, "others": others}


def cmd_dump(args) -> None:
    config = load_config(args.config)
    # every candidate recorded and labelled: the verifier judges them all before
    # one_per_object, which score_kept applies to those kept
    config = config.with_overrides({"verifier": {"enabled": False},
                                    "split": {"max_overlap": 1.0}})
    real = real_config(config)
    cases = args.work / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    jobs = []
    for case in airport_pair_cases(args.dataset):  # its same-acquisition pairs: controls
        folder = args.cache / case.name
        if not (folder / "truth.geojson").exists():
            print(f"{case.name}: not in {args.cache} (run benchmarks/accuracy.py first)",
                  flush=True)
            continue
        jobs.append((case.name, "control" if case.control else "real", case.group,
                     folder / "before.tif", folder / "after.tif", folder / "truth.geojson",
                     real))
    if args.limit:
        jobs = jobs[:args.limit]
    for seeds, kind in ((SYN_TRAIN_SEEDS, "syn-train"), (SYN_EVAL_SEEDS, "syn-eval")):
        for d in ("easy", "medium", "hard", "no-change"):
            for s in seeds:
                scenario = "no-change" if d == "no-change" else "random"
                difficulty = ("easy", "medium", "hard")[s % 3] if d == "no-change" else d
                name = f"{d}_{s}_1024"
                folder = args.cache / "synthetic" / name
                if not (folder / "truth.geojson").exists():
                    folder = args.work / "synthetic" / name
                    if not (folder / "truth.geojson").exists():
                        synth.write_pair(synth.make_pair(seed=s, size_px=1024, scenario=scenario,
                                                         difficulty=difficulty), folder)
                jobs.append((f"syn_{name}", kind, d, folder / "before.tif", folder / "after.tif",
                             folder / "truth.geojson", config))
    for name, kind, group, before, after, truth, cfg in jobs:
        target = cases / f"{name}.json"
        if target.exists() and not args.overwrite:
            continue
        t0 = time.perf_counter()
        case = dump_pair(name, kind, group, before, after, truth, args.work, cfg)
        if case is None:
            continue
        target.write_text(json.dumps(case))
        labs = [f["properties"]["_label"] for f in case["aircraft"]]
        print(f"{name:28s} {kind:9s} candidates {len(labs):4d} positive {labs.count(1):4d} "
              f"{time.perf_counter() - t0:5.1f}s", flush=True)


def pair_kinds(dataset: Path) -> dict[str, str]:
    """``real`` or ``control`` (same acquisition) for each pair of ``airport_pairs.csv``."""
    return {c.name: "control" if c.control else "real" for c in airport_pair_cases(dataset)}


def load_cases(work: Path, kinds: dict[str, str]) -> list[dict]:
    """The dumped pairs: the synthetic ones, and the real ones that ``kinds`` lists (a pair
    dumped from an older pair list is left out), each of those of the kind ``kinds`` says."""
    cases = []
    for path in sorted((work / "cases").glob("*.json")):
        c = json.loads(path.read_text())
        if c["kind"] in ("real", "control"):
            if c["name"] not in kinds:
                print(f"{path}: not a pair of airport_pairs.csv, left out", flush=True)
                continue
            c["kind"] = kinds[c["name"]]
        _unlabel_duplicates(c["aircraft"])
        cases.append(c)
    return cases


def _kept_and_labelled(cases: list[dict], from_detector: bool) -> list[dict]:
    """The cases with only the aircraft candidates the detector made (or only the others),
    labelled again: a truth aircraft that a candidate left out matched may match another."""
    src = verifier.FEATURES.index("from_detector")
    for c in cases:
        c["aircraft"] = [f for f in c["aircraft"]
                         if bool(f["properties"]["_features"][src]) == from_detector]
        for f, lab in zip(c["aircraft"], detection_labels(c["truth"], c["aircraft"])):
            f["properties"]["_label"] = lab
        _unlabel_duplicates(c["aircraft"])
    return cases


def without_detector(cases: list[dict]) -> list[dict]:
    """The cases as the difference alone gives them: the detector's candidates left out and
    its features (:data:`pipeline.detect.fusion.DETECTOR_FEATURES`) held at 0, which no tree
    splits on: the comparison ``--without-detector`` prints."""
    from pipeline.detect.fusion import DETECTOR_FEATURES

    cols = [verifier.FEATURES.index(f) for f in DETECTOR_FEATURES]
    cases = _kept_and_labelled(cases, from_detector=False)
    for c in cases:
        for f in c["aircraft"]:
            for k in cols:
                f["properties"]["_features"][k] = 0.0
    return cases


def detector_only(cases: list[dict]) -> list[dict]:
    """The cases with the aircraft candidates of the detector's unpartnered sightings alone
    (measured on the difference as the pipeline measures them), labelled again: what a design
    that makes aircraft candidates only where the detector saw one would give
    (``--detector-only``)."""
    return _kept_and_labelled(cases, from_detector=True)


def _unlabel_duplicates(aircraft: list[dict], max_overlap: float = SplitConfig().max_overlap
                        ) -> None:
    """Candidates that one_per_object would merge with a true one (another piece of the same
    aircraft, the aircraft grown from another of its pieces) are neither rewarded nor punished
    in training: label -1. The one-to-one match gave the truth to one of them; which one the
    pipeline reports is one_per_object's choice (the detector's, else the larger), scored
    exactly by score_kept."""
    pos = [f for f in aircraft if f["properties"]["_label"] == 1]
    if not pos:
        return
    rects = [shapely.geometry.shape(f["geometry"]) for f in pos]
    for f in aircraft:
        if f["properties"]["_label"] != 0:
            continue
        g = shapely.geometry.shape(f["geometry"])
        for p, r in zip(pos, rects):
            if (p["properties"]["change"] == f["properties"]["change"] and g.intersects(r)
                    and overlap_share(g, r) > max_overlap):
                f["properties"]["_label"] = -1
                break


def _xy(cases: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    rows = [(f["properties"]["_features"], f["properties"]["_label"])
            for c in cases for f in c["aircraft"] if f["properties"]["_label"] >= 0]
    if not rows:
        return np.zeros((0, len(verifier.FEATURES))), np.zeros(0)
    x, y = zip(*rows)
    return np.asarray(x, float), np.asarray(y, float)


def fit(x: np.ndarray, y: np.ndarray, settings: dict) -> dict:
    """Gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier with ``settings``),
    exported as the JSON model :class:`pipeline.detect.verifier.Verifier` reads."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    gbt = HistGradientBoostingClassifier(**settings, early_stopping=False, random_state=0)
    gbt.fit(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), y)
    trees = []
    for (tree,) in gbt._predictors:
        n = tree.nodes
        trees.append({"feature": n["feature_idx"].tolist(),
                      "threshold": [float(t) for t in n["num_threshold"]],
                      "left": n["left"].tolist(), "right": n["right"].tolist(),
                      "leaf": n["is_leaf"].astype(int).tolist(),
                      "value": [float(v) for v in n["value"]]})
    return {"kind": "trees", "features": list(verifier.FEATURES),
            "baseline": float(np.ravel(gbt._baseline_prediction)[0]), "trees": trees,
            "threshold": 0.5, "settings": settings}


def _probabilities(model: dict, cases: list[dict]) -> None:
    v = verifier.Verifier(model)
    props = [f["properties"] for c in cases for f in c["aircraft"]]
    if not props:
        return
    # all rows at once: the trees walked by numpy, not row by row
    p = np.atleast_1d(v.probability(np.asarray([q["_features"] for q in props], float)
                                    .reshape(len(props), -1)))
    for q, pk in zip(props, p):
        q["_p"] = float(pk)


def _truth_count(case: dict) -> int:
    return sum(not is_ignore(f) and f["properties"].get("category") == "aircraft"
               for f in case["truth"])


def choose_settings(cases: list[dict]) -> tuple[dict, float]:
    """The tree settings (of :data:`GBT_GRID`) and threshold of best F1 over ``cases``'
    airports, each judged by a model trained without it (inner leave-one-airport-out)."""
    best = max(((choose_threshold(cases, settings), settings) for settings in GBT_GRID),
               key=lambda r: r[0][1])
    (threshold, _), settings = best
    return settings, threshold


def choose_threshold(cases: list[dict], settings: dict) -> tuple[float, float]:
    """The threshold of best F1 over ``cases``' airports, each judged by a model trained
    without it (inner leave-one-airport-out; the synthetic training pairs always train), and
    that F1."""
    real = [c for c in cases if c["kind"] in ("real", "control")]
    syn = [c for c in cases if c["kind"] == "syn-train"]
    tp = np.zeros(len(THRESHOLDS))
    fp = np.zeros(len(THRESHOLDS))
    truth = 0
    for g in sorted({c["group"] for c in real}):
        held = [c for c in real if c["group"] == g]
        model = fit(*_xy([c for c in real if c["group"] != g] + syn), settings)
        _probabilities(model, held)
        for c in held:
            truth += _truth_count(c)
            for f in c["aircraft"]:
                p, lab = f["properties"]["_p"], f["properties"]["_label"]
                if lab < 0:
                    continue
                kept = p >= THRESHOLDS
                tp += kept * (lab == 1)
                fp += kept * (lab == 0)
    f1 = 2 * tp / np.maximum(2 * tp + fp + (truth - tp), 1)
    return float(THRESHOLDS[int(np.argmax(f1))]), float(f1.max())


def score_kept(case: dict, keep, max_overlap: float = SplitConfig().max_overlap
               ) -> tuple[int, int, int]:
    """The pair's score with the aircraft candidates ``keep`` keeps, one per object
    (:func:`pipeline.detect.classify.one_per_object`, as run.py applies it after the verifier)."""
    kept = [f for f in case["aircraft"] if keep(f["properties"])]
    if kept:
        rects = np.array([shapely.geometry.shape(f["geometry"]) for f in kept], dtype=object)
        one = larger_of_overlapping(rects, [f["properties"]["change"] for f in kept],
                                    max_overlap=max_overlap,
                                    first=[f["properties"].get("found_by") == "detector"
                                           for f in kept])
        kept = [f for f, k in zip(kept, one) if k]
    found = kept + case["others"]
    s = score_case(case["truth"], found).score
    return s.tp, s.fp, s.fn


def _line(label: str, t: list[int]) -> str:
    tp, fp, fn = t
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return (f"{label:<14} tp {tp:5d} fp {fp:5d} fn {fn:5d} P {p:.3f} R {r:.3f} "
            f"F1 {2 * p * r / max(p + r, 1e-9):.3f}")


def _reach_line(reach: list[int]) -> str:
    matched, truth = reach
    return (f"{'candidates':<14} match {matched} of {truth} changed aircraft: recall "
            f"{matched / max(truth, 1):.3f} with a perfect verifier")


def _airport_order(group: str) -> tuple:
    """G2 before G10."""
    return (len(group), group)


def loao_scores(cases: list[dict]) -> dict[str, dict]:
    """Each held-out airport's fold: its threshold and tree settings, and every pair's
    (tp, fp, fn) with the classical rules (``classical``) and the fold's verifier
    (``verifier``), the truth changes some candidate matches (``reach``: matched, of all), and
    its controls' aircraft counts."""
    real = [c for c in cases if c["kind"] in ("real", "control")]
    syn = [c for c in cases if c["kind"] == "syn-train"]
    folds = {}
    for g in sorted({c["group"] for c in real}, key=_airport_order):
        train = [c for c in real if c["group"] != g]
        held = [c for c in real if c["group"] == g]
        settings, thr = choose_settings(train + syn)
        model = fit(*_xy(train + syn), settings)
        _probabilities(model, held)
        fold = {"threshold": thr, "settings": settings, "classical": {}, "verifier": {},
                "reach": [0, 0], "controls": {}}
        for c in held:
            b = score_kept(c, lambda p: p["_classical"])
            v = score_kept(c, lambda p: p["_p"] >= thr)
            if c["kind"] == "control":
                fold["controls"][c["name"]] = (b[0] + b[1], v[0] + v[1])
                continue
            fold["classical"][c["name"]], fold["verifier"][c["name"]] = b, v
            fold["reach"][0] += sum(f["properties"]["_label"] == 1 for f in c["aircraft"])
            fold["reach"][1] += _truth_count(c)
        folds[g] = fold
    return folds


def _summed(scores) -> list[int]:
    """Element-wise sums of (tp, fp, fn) triples (or of any equal-length counts)."""
    scores = list(scores)
    return [int(x) for x in np.sum(scores, axis=0)] if scores else [0, 0, 0]


def cmd_loao(args) -> None:
    folds = loao_scores(_cases(args))
    print("leave-one-airport-out (tree settings and threshold chosen on the training airports "
          "only)")
    for g, fold in folds.items():
        print(f"{g} (threshold {fold['threshold']:.2f}, trees {fold['settings']['max_iter']} of "
              f"depth {fold['settings']['max_depth']})")
        print("  " + _line("classical", _summed(fold["classical"].values())))
        print("  " + _line("verifier", _summed(fold["verifier"].values())))
        if fold["reach"][1]:
            print("  " + _reach_line(fold["reach"]))
    print("all airports")
    for kind in ("classical", "verifier"):
        print("  " + _line(kind, _summed(s for f in folds.values() for s in f[kind].values())))
    print("  " + _reach_line(_summed(f["reach"] for f in folds.values())[:2]))
    print("controls: " + "; ".join(f"{name}: classical {b} aircraft, verifier {v} aircraft"
                                   for f in folds.values()
                                   for name, (b, v) in f["controls"].items()))


def _f1(t) -> float:
    tp, fp, fn = t
    return 2 * tp / max(2 * tp + fp + fn, 1)


def bootstrap_delta(a: dict[str, dict], b: dict[str, dict], draws: int, seed: int = 0
                    ) -> dict[str, np.ndarray]:
    """Paired bootstrap of the verifier's F1, ``a`` minus ``b`` (two ``loao_scores`` of the
    same pairs), over all real pairs. ``pairs``: pairs drawn again with replacement within
    each airport; ``airports``: whole airports drawn again (the unit the table generalises
    over), each with all its pairs."""
    groups = {g: sorted(set(a[g]["verifier"]) & set(b[g]["verifier"])) for g in a if g in b}
    groups = {g: names for g, names in groups.items() if names}
    rng = np.random.default_rng(seed)
    out = {"pairs": np.empty(draws), "airports": np.empty(draws)}
    keys = list(groups)
    for i in range(draws):
        picked = [(g, n) for g in keys for n in rng.choice(groups[g], len(groups[g]))]
        out["pairs"][i] = (_f1(_summed(a[g]["verifier"][n] for g, n in picked))
                           - _f1(_summed(b[g]["verifier"][n] for g, n in picked)))
        picked = [(g, n) for g in rng.choice(keys, len(keys)) for n in groups[g]]
        out["airports"][i] = (_f1(_summed(a[g]["verifier"][n] for g, n in picked))
                              - _f1(_summed(b[g]["verifier"][n] for g, n in picked)))
    return out


def cmd_compare(args) -> None:
    if args.against is None:
        sys.exit("verifier: compare needs --against (a second dump's --work)")
    a, b = loao_scores(_cases(args)), loao_scores(_cases(args, args.against))
    for label, folds in ((args.work, a), (args.against, b)):
        print(_line(str(label), _summed(s for f in folds.values()
                                        for s in f["verifier"].values())))
    for g in a:
        if g in b and a[g]["verifier"]:
            fa, fb = (_f1(_summed(x[g]["verifier"].values())) for x in (a, b))
            print(f"  {g:<4} F1 {fa:.3f} against {fb:.3f} ({fa - fb:+.3f})")
    delta = bootstrap_delta(a, b, args.draws)
    point = (_f1(_summed(s for f in a.values() for s in f["verifier"].values()))
             - _f1(_summed(s for f in b.values() for s in f["verifier"].values())))
    print(f"F1 difference {point:+.4f} (first minus second), paired bootstrap of "
          f"{args.draws} draws:")
    for how, d in delta.items():
        lo, hi = np.percentile(d, [2.5, 97.5])
        print(f"  {how:<9} 95 % interval {lo:+.4f} .. {hi:+.4f}, standard deviation "
              f"{d.std():.4f}, share of draws below zero {np.mean(d < 0):.3f}")


def _cases(args, work: Path | None = None) -> list[dict]:
    """The cases of ``--work`` (or of ``work``, as they are: compare's second dump), with the
    candidates ``--without-detector`` or ``--detector-only`` keep."""
    cases = load_cases(work or args.work, pair_kinds(args.dataset))
    if work is not None:
        return cases
    if args.without_detector and args.detector_only:
        sys.exit("verifier: --without-detector and --detector-only leave nothing to score")
    if args.without_detector:
        return without_detector(cases)
    return detector_only(cases) if args.detector_only else cases


def cmd_train(args) -> None:
    cases = _cases(args)
    train = [c for c in cases if c["kind"] in ("real", "control", "syn-train")]
    settings, threshold = choose_settings(train)
    model = fit(*_xy(train), settings)
    model["threshold"] = threshold
    model["trained_on"] = sorted(c["name"] for c in train)
    args.out.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {args.out}: threshold {model['threshold']:.2f}, trees {settings['max_iter']} "
          f"of depth {settings['max_depth']}, "
          f"{len(_xy(train)[1])} candidates from {len(train)} pairs")
    # the synthetic suite and all pairs with this model (in-sample on the real pairs)
    _probabilities(model, cases)
    thr = model["threshold"]
    for kind in ("syn-eval",):
        for d in ("easy", "medium", "hard", "no-change"):
            sel = [c for c in cases if c["kind"] == kind and c["group"] == d]
            b = [sum(x) for x in zip(*[score_kept(c, lambda p: p["_classical"]) for c in sel])]
            v = [sum(x) for x in zip(*[score_kept(c, lambda p: p["_p"] >= thr) for c in sel])]
            if sel:
                print(f"synthetic suite {d:<9} classical: {_line('', b)} | verifier: {_line('', v)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("dump", "loao", "train", "compare"))
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (dump output)")
    ap.add_argument("--cache", type=Path, default=CACHE, help="accuracy.py's cache of pairs")
    ap.add_argument("--dataset", type=Path, default=DATASET,
                    help="the airbus-aircraft-sample folder: its airport_pairs.csv lists the pairs")
    ap.add_argument("--config", type=Path, default=None, help="pipeline YAML (default: defaults)")
    ap.add_argument("--out", type=Path, default=Path(verifier.MODEL_PATH))
    ap.add_argument("--limit", type=int, default=0, help="at most this many real pairs")
    ap.add_argument("--overwrite", action="store_true", help="dump pairs already dumped again")
    ap.add_argument("--without-detector", action="store_true",
                    help="loao/train on the difference's candidates alone, without the "
                         "detector's evidence (the comparison)")
    ap.add_argument("--detector-only", action="store_true",
                    help="loao/train/compare on the aircraft candidates of the detector's "
                         "sightings alone, labelled again")
    ap.add_argument("--against", type=Path, default=None,
                    help="compare: a second dump (its --work) of the same pairs")
    ap.add_argument("--draws", type=int, default=2000, help="compare: bootstrap draws")
    args = ap.parse_args()
    {"dump": cmd_dump, "loao": cmd_loao, "train": cmd_train,
     "compare": cmd_compare}[args.command](args)


if __name__ == "__main__":
    main()
