"""Train and evaluate the per-image aircraft detector (a small CenterNet-style network).

    python benchmarks/detector.py train                     # rebuilds the shipped ONNX model
    python benchmarks/detector.py quantize                  # only its int8 step, from the fp32
    python benchmarks/detector.py eval                      # AP50, P/R per held-out site
    python benchmarks/detector.py airbus                    # the same on the Airbus sample

Data: ``../shared/data/hrplanes-v2`` (HRPlanes v2, CC BY 4.0; imagery (c) Google), 1,004
distinct Google Earth images of 27 sites with every aircraft boxed. Each source image is taken
once (a copy without letterbox bars when there is one). Whole sites are held out for
evaluation (``--holdout`` share of the images, sites drawn with the seed): the shipped model
never saw them, and ``eval`` scores it on them only. Its threshold is the one that maximises F1
on the training sites (in sample, said so in the metadata).

The network (training needs ``pip install -e .[train]``: torch, onnx, onnxscript; the package
runs it with onnxruntime alone): four stride-2 stages (16, 32, 64, 96 channels), a top-down
path back to stride 4 (32 channels), and one head predicting each cell's aircraft-centre
heatmap, box size (log, in cells) and centre offset (Zhou et al., "Objects as Points", 2019).
Trained on 256 px crops of images rescaled by 0.6-1.6 (the sites' pixel sizes differ), with
flips, quarter turns and colour jitter; focal loss on the heatmap, L1 on size and offset.
The seed, the data list's digest, the held-out sites, the versions and the threshold are
written into the ONNX file's metadata.

``train`` exports the float32 network to ``benchmarks/models/aircraft_detector_fp32.onnx``
(kept in the repository, so ``quantize`` can rebuild what ships without training) and then
quantizes it: int8 weights (per channel) and activations, calibrated on images of the training
sites drawn with the seed, the head (heatmap, sizes, offsets) left in float32. What ships is
the int8 file: 1.8 times the float network's speed on one thread of this machine's CPU (AVX-512
VNNI), the same AP50 on the Airbus sample (``airbus --model`` either file compares them).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "hrplanes-v2" / "train"
MODEL = REPO / "pipeline" / "detect" / "aircraft_detector.onnx"
FP32 = REPO / "benchmarks" / "models" / "aircraft_detector_fp32.onnx"
STRIDE = 4
CROP_PX = 256


@dataclass(frozen=True)
class Sample:
    """One source image: its site, the image (H, W, 3) RGB uint8 and its boxes (N, 4)
    x0, y0, x1, y1 in its pixels."""

    source: str
    site: str
    image: np.ndarray
    boxes: np.ndarray


def site_of(source: str) -> str:
    """The site of a source name (``GBG_059_jpg`` -> GBG, ``373_DT8_jpg`` -> DT8)."""
    tokens = [t for t in source.removesuffix("_jpg").split("_") if t]
    named = [t for t in tokens if not t.isdigit()]
    return named[0] if named else "numbered"


def _bars(image: np.ndarray) -> tuple[int, int] | None:
    """The columns of a letterboxed picture's content (black side bars), or None."""
    cols = image.max(axis=(0, 2)) > 12
    if cols[:8].any() and cols[-8:].any():
        return None
    inside = np.flatnonzero(cols)
    return (int(inside[0]), int(inside[-1]) + 1) if inside.size else None


def load_samples(root: Path = DATA) -> list[Sample]:
    """Each source image once, with its boxes: a copy without bars when there is one, else the
    letterboxed copy cut to its content."""
    doc = json.loads((root / "_annotations.coco.json").read_text())
    boxes = collections.defaultdict(list)
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        if w > 1 and h > 1:
            boxes[a["image_id"]].append((x, y, x + w, y + h))
    copies = collections.defaultdict(list)
    for im in sorted(doc["images"], key=lambda im: im["file_name"]):
        copies[im["file_name"].split(".rf.")[0]].append(im)
    samples = []
    for source in sorted(copies):
        chosen = None
        for im in copies[source]:
            rgb = cv2.cvtColor(cv2.imread(str(root / im["file_name"])), cv2.COLOR_BGR2RGB)
            cut = _bars(rgb)
            if cut is None:
                chosen = (rgb, np.asarray(boxes[im["id"]], np.float32).reshape(-1, 4))
                break
            if chosen is None:
                b = np.asarray(boxes[im["id"]], np.float32).reshape(-1, 4)
                b[:, [0, 2]] -= cut[0]
                chosen = (rgb[:, cut[0]:cut[1]].copy(), b)
        samples.append(Sample(source, site_of(source), *chosen))
    return samples


def split_sites(samples: list[Sample], holdout: float, seed: int) -> tuple[set[str], set[str]]:
    """(training sites, held-out sites): sites drawn in a seeded order until ``holdout`` of the
    images are held out."""
    per_site = collections.Counter(s.site for s in samples)
    order = sorted(per_site)
    np.random.default_rng(seed).shuffle(order)
    held, n = set(), 0
    for site in order:
        if n >= holdout * len(samples):
            break
        held.add(site)
        n += per_site[site]
    return set(per_site) - held, held


def data_digest(samples: list[Sample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(s.source.encode())
        h.update(s.boxes.tobytes())
    return h.hexdigest()[:16]


# --- the network (torch; training only) ------------------------------------------------------

def build_net():
    import torch
    from torch import nn

    def block(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class Net(nn.Module):
        """Encoder at strides 2-16, top-down path to stride 4, one head of 5 maps."""

        def __init__(self):
            super().__init__()
            self.s2 = block(3, 16, 2)
            self.s4 = nn.Sequential(block(16, 32, 2), block(32, 32))
            self.s8 = nn.Sequential(block(32, 64, 2), block(64, 64))
            self.s16 = nn.Sequential(block(64, 96, 2), block(96, 96), block(96, 96))
            self.lat8 = nn.Conv2d(64, 64, 1)
            self.top16 = nn.Conv2d(96, 64, 1)
            self.mix8 = block(64, 64)
            self.lat4 = nn.Conv2d(32, 32, 1)
            self.top8 = nn.Conv2d(64, 32, 1)
            self.mix4 = nn.Sequential(block(32, 32), block(32, 32))
            self.head = nn.Conv2d(32, 5, 1)
            nn.init.constant_(self.head.bias, 0.0)
            with torch.no_grad():
                self.head.bias[0] = -4.0  # few cells hold a centre

        def forward(self, x):
            c4 = self.s4(self.s2(x))
            c8 = self.s8(c4)
            c16 = self.s16(c8)
            up = nn.functional.interpolate
            p8 = self.mix8(self.lat8(c8) + up(self.top16(c16), scale_factor=2, mode="nearest"))
            p4 = self.mix4(self.lat4(c4) + up(self.top8(p8), scale_factor=2, mode="nearest"))
            out = self.head(p4)
            # heat (sigmoid), log size (w, h in cells), offset (0-1): as the runtime reads them
            return torch.cat([torch.sigmoid(out[:, :1]), out[:, 1:3], torch.sigmoid(out[:, 3:])], 1)

    return Net()


def _targets(boxes: np.ndarray, size: int):
    """Heatmap (1, m, m), size and offset (2, m, m) and their mask (m, m) of ``boxes`` on a
    ``size`` crop."""
    m = size // STRIDE
    heat = np.zeros((1, m, m), np.float32)
    wh = np.zeros((2, m, m), np.float32)
    off = np.zeros((2, m, m), np.float32)
    mask = np.zeros((m, m), np.float32)
    yy, xx = np.mgrid[0:m, 0:m]
    for x0, y0, x1, y1 in boxes:
        cx, cy = (x0 + x1) / 2 / STRIDE, (y0 + y1) / 2 / STRIDE
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < m and 0 <= iy < m):
            continue
        w, h = (x1 - x0) / STRIDE, (y1 - y0) / STRIDE
        sigma = max(0.8, 0.15 * math.sqrt(w * h))
        heat[0] = np.maximum(heat[0], np.exp(-((xx - ix) ** 2 + (yy - iy) ** 2) / (2 * sigma ** 2)))
        wh[:, iy, ix] = np.log(max(w, 0.5)), np.log(max(h, 0.5))
        off[:, iy, ix] = cx - ix, cy - iy
        mask[iy, ix] = 1.0
    return heat, wh, off, mask


def _augmented_crop(s: Sample, rng: np.random.Generator):
    """A random 256 px crop of a rescaled, turned, flipped and colour-jittered ``s``."""
    scale = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    img = cv2.resize(s.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA
                     if scale < 1 else cv2.INTER_LINEAR)
    boxes = s.boxes * scale
    h, w = img.shape[:2]
    if h < CROP_PX or w < CROP_PX:
        pad = np.zeros((max(h, CROP_PX), max(w, CROP_PX), 3), np.uint8)
        pad[:h, :w] = img
        img, (h, w) = pad, pad.shape[:2]
    # a crop centred on an aircraft half of the time
    if len(boxes) and rng.random() < 0.5:
        b = boxes[rng.integers(len(boxes))]
        cx, cy = (b[0] + b[2]) / 2 + rng.uniform(-96, 96), (b[1] + b[3]) / 2 + rng.uniform(-96, 96)
        x0 = int(np.clip(cx - CROP_PX / 2, 0, w - CROP_PX))
        y0 = int(np.clip(cy - CROP_PX / 2, 0, h - CROP_PX))
    else:
        x0, y0 = int(rng.integers(0, w - CROP_PX + 1)), int(rng.integers(0, h - CROP_PX + 1))
    img = img[y0:y0 + CROP_PX, x0:x0 + CROP_PX].astype(np.float32)
    boxes = boxes - [x0, y0, x0, y0]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    boxes = boxes[(cx >= 0) & (cx < CROP_PX) & (cy >= 0) & (cy < CROP_PX)]
    for _ in range(int(rng.integers(4))):  # quarter turns: (x, y) -> (y, S - x)
        img = np.rot90(img).copy()
        boxes = np.stack([boxes[:, 1], CROP_PX - boxes[:, 2], boxes[:, 3], CROP_PX - boxes[:, 0]], 1)
    if rng.random() < 0.5:
        img = img[:, ::-1].copy()
        boxes = np.stack([CROP_PX - boxes[:, 2], boxes[:, 1], CROP_PX - boxes[:, 0], boxes[:, 3]], 1)
    img = img * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-30, 30)
    if rng.random() < 0.2:
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    return np.clip(img, 0, 255), boxes


def to_input(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) 0-255 -> (3, H, W) float32 in the network's scale."""
    return (np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0 - 0.5).astype(np.float32)


def _batch(samples: list[Sample], rng: np.random.Generator, n: int):
    xs, heats, whs, offs, masks = [], [], [], [], []
    for i in rng.integers(len(samples), size=n):
        img, boxes = _augmented_crop(samples[i], rng)
        heat, wh, off, mask = _targets(boxes, CROP_PX)
        xs.append(to_input(img))
        heats.append(heat), whs.append(wh), offs.append(off), masks.append(mask)
    return [np.stack(a) for a in (xs, heats, whs, offs, masks)]


def _loss(out, heat, wh, off, mask):
    import torch

    p = out[:, :1].clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg = 1 - pos
    focal = -(pos * (1 - p) ** 2 * torch.log(p)
              + neg * (1 - heat) ** 4 * p ** 2 * torch.log(1 - p)).sum()
    n = pos.sum().clamp(min=1)
    m = mask.unsqueeze(1)
    size = (torch.abs(out[:, 1:3] - wh) * m).sum() / n
    offset = (torch.abs(out[:, 3:5] - off) * m).sum() / n
    return focal / n + size + offset


def train(args) -> None:
    import torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    samples = load_samples()
    train_sites, held = split_sites(samples, args.holdout, args.seed)
    train_set = [s for s in samples if s.site in train_sites]
    print(f"{len(samples)} images of {len(train_sites) + len(held)} sites; training on "
          f"{len(train_set)} ({len(train_sites)} sites), holding out {sorted(held)}", flush=True)
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    t0, step, budget = time.perf_counter(), 0, args.minutes * 60
    # --steps: the schedule follows the steps, so the same command rebuilds the same weights;
    # --minutes: it follows the clock (as many steps as the machine makes in that time)
    by_clock = args.minutes > 0
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / budget if by_clock else step / args.steps
        if frac >= 1:
            break
        for g in opt.param_groups:  # warm-up, then cosine
            g["lr"] = args.lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * frac))
        x, heat, wh, off, mask = (torch.from_numpy(a) for a in _batch(train_set, rng, args.batch))
        loss = _loss(net(x), heat, wh, off, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} ({elapsed / 60:.1f} min): loss {loss.item():.3f}", flush=True)
    net.eval()
    export(net, args, samples, train_sites, held, step)
    quantize(argparse.Namespace(fp32=args.fp32_out, out=args.out, seed=args.seed,
                                images=args.calibration_images), samples)


def export(net, args, samples, train_sites, held, steps: int) -> None:
    """The float32 network to ``args.fp32_out``, its threshold and provenance in the metadata."""
    import onnx
    import torch

    out = args.fp32_out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.onnx")
    x = torch.zeros(1, 3, CROP_PX, CROP_PX)
    torch.onnx.export(net, (x,), str(tmp), input_names=["image"], output_names=["maps"],
                      dynamic_axes={"image": {2: "height", 3: "width"},
                                    "maps": {2: "rows", 3: "cols"}},
                      opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    threshold = choose_threshold(str(tmp), [s for s in samples if s.site in train_sites])
    meta = {
        "kind": "centernet-aircraft", "stride": str(STRIDE), "input": "rgb/255-0.5",
        "threshold": f"{threshold:.2f}", "threshold_chosen_on": "training sites (in sample)",
        "seed": str(args.seed), "steps": str(steps),
        "schedule": f"{args.minutes:g} minutes" if args.minutes > 0 else f"{args.steps} steps",
        "data": "hrplanes-v2 train (CC BY 4.0; imagery (c) Google)",
        "data_digest": data_digest(samples), "images": str(len(samples)),
        "held_out_sites": ",".join(sorted(held)),
        "training_sites": ",".join(sorted(train_sites)),
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
                    f"onnx {onnx.__version__}, numpy {np.__version__}",
        "command": " ".join(["python benchmarks/detector.py", *sys.argv[1:]]),
    }
    for k, v in meta.items():
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                            k: v})
    onnx.save(model, str(out))
    tmp.unlink()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); threshold {threshold:.2f}",
          flush=True)


#: the network's last nodes, from its head convolution on, stay float32: the heatmap's and the
#: sizes' precision is what the scores and boxes are made of (quantized too, AP50 on the Airbus
#: sample fell from 0.970 to 0.906)
HEAD_NODE = "/head/Conv"


def quantize(args, samples: list[Sample] | None = None) -> None:
    """The shipped int8 model from the float32 one: static quantization (QOperator, int8
    per-channel weights, uint8 activations) calibrated on ``args.images`` whole images of the
    training sites drawn with ``args.seed``; the head left in float32. The threshold is chosen
    again on the training sites, as :func:`export` chose the float one's."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    meta = {p.key: p.value for p in onnx.load(str(args.fp32)).metadata_props}
    train_sites = set(meta["training_sites"].split(","))
    pool = [s for s in (samples or load_samples()) if s.site in train_sites]
    chosen = np.random.default_rng(args.seed).choice(len(pool), min(args.images, len(pool)),
                                                      replace=False)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.left = [pool[i].image for i in sorted(chosen)]

        def get_next(self):
            if not self.left:
                return None
            im = self.left.pop()
            h, w = im.shape[0] // 16 * 16, im.shape[1] // 16 * 16
            return {"image": to_input(im[:h, :w])[None]}

    work = Path(tempfile.mkdtemp(prefix="quantize-"))
    pre, tmp = work / "pre.onnx", work / "int8.onnx"
    try:
        # the dynamic input size defeats symbolic shape inference; onnx's own is enough (it
        # leaves scratch files in the working folder: run it in the scratch folder)
        with contextlib.chdir(work):
            quant_pre_process(str(args.fp32.resolve()), str(pre), skip_symbolic_shape=True)
        names = [n.name for n in onnx.load(str(pre)).graph.node]
        quantize_static(str(pre), str(tmp), Images(), quant_format=QuantFormat.QOperator,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, nodes_to_exclude=names[names.index(HEAD_NODE):])
        threshold = choose_threshold(str(tmp), pool)
        model = onnx.load(str(tmp))
        meta.update({
            "fp32_threshold": meta["threshold"],
            "threshold": f"{threshold:.2f}",
            "precision": "int8 (static; per-channel weights, uint8 activations; the head in "
                         "float32)",
            "calibration": f"{len(chosen)} images of the training sites, seed {args.seed}",
            "fp32_sha256": hashlib.sha256(args.fp32.read_bytes()).hexdigest()[:16],
            "quantize_command": f"python benchmarks/detector.py quantize --seed {args.seed} "
                                f"--images {args.images}",
        })
        onnx.helper.set_model_props(model, meta)
        onnx.save(model, str(args.out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, int8); threshold "
          f"{threshold:.2f} (float32: {meta['fp32_threshold']})", flush=True)


# --- evaluation (onnxruntime, as the package runs it) ----------------------------------------

def detect_image(session, rgb: np.ndarray, threshold: float) -> np.ndarray:
    """(N, 5) x0, y0, x1, y1, score of the aircraft in one image, as the package runs it."""
    from pipeline.detect.aircraft import AircraftDetector

    return AircraftDetector(session, STRIDE, threshold, {}).detect(rgb)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def matched_truth(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The truth box each found box (by falling score) matches, not taken before it (IoU >=
    0.5); -1 where none."""
    order = np.argsort(-found[:, 4])
    which = np.full(len(found), -1)
    if not len(truth):
        return which
    iou = _iou(found[order, :4], truth)
    taken = np.zeros(len(truth), bool)
    for k, i in enumerate(order):
        cand = np.where(~taken, iou[k], 0)
        j = int(np.argmax(cand))
        if cand[j] >= 0.5:
            taken[j] = True
            which[i] = j
    return which


def matches(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Whether each found box (by falling score) matches a truth box not taken (IoU >= 0.5)."""
    return matched_truth(found, truth) >= 0


def size_subset(found: np.ndarray, truth: np.ndarray, which: np.ndarray, small: np.ndarray,
                found_small: np.ndarray, want_small: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores, hits and truth count of one size range (COCO's way): the truth boxes of that
    range; a found box counts when it matched one of them, or matched none and is of that
    range itself; found boxes matched to the other range are left out."""
    in_range = small == want_small
    hit = (which >= 0) & in_range[np.maximum(which, 0)]
    keep = hit | ((which < 0) & (found_small == want_small))
    return found[keep, 4], hit[keep], int(in_range.sum())


def average_precision(scores: np.ndarray, hits: np.ndarray, n_truth: int) -> float:
    """Area under the precision-recall curve (all points, precision made monotone)."""
    if not n_truth:
        return float("nan")
    order = np.argsort(-scores)
    tp = np.cumsum(hits[order])
    precision = tp / np.arange(1, len(tp) + 1)
    recall = tp / n_truth
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0], recall])) * precision))


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def choose_threshold(path: str, samples: list[Sample]) -> float:
    """The score threshold of best F1 over ``samples``."""
    session = _session(path)
    scores, hits, n_truth = [], [], 0
    for s in samples:
        found = detect_image(session, s.image, 0.05)
        scores.append(found[:, 4])
        hits.append(matches(found, s.boxes))
        n_truth += len(s.boxes)
    scores, hits = np.concatenate(scores), np.concatenate(hits)
    best = (0.0, 0.3)
    for t in np.arange(0.1, 0.9, 0.02):
        tp = hits[scores >= t].sum()
        f1 = 2 * tp / max(1, (scores >= t).sum() + n_truth)
        best = max(best, (f1, round(float(t), 2)))
    return best[1]


def evaluate(args) -> None:
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(args.model)).metadata_props}
    held = set(meta["held_out_sites"].split(","))
    threshold = float(meta["threshold"])
    session = _session(str(args.model))
    samples = [s for s in load_samples() if s.site in held or args.all_sites]
    rows = collections.defaultdict(lambda: {"scores": [], "hits": [], "truth": 0, "images": 0})
    t0 = time.perf_counter()
    megapixels = 0.0
    for s in samples:
        found = detect_image(session, s.image, 0.05)
        megapixels += s.image.shape[0] * s.image.shape[1] / 1e6
        for key in (s.site, "all held-out" if not args.all_sites else "all"):
            r = rows[key]
            r["scores"].append(found[:, 4])
            r["hits"].append(matches(found, s.boxes))
            r["truth"] += len(s.boxes)
            r["images"] += 1
    seconds = time.perf_counter() - t0
    print(f"model {args.model.name}: threshold {threshold} ({meta['threshold_chosen_on']}); "
          f"sites held out in training: {sorted(held)}")
    print(f"{'site':<14} {'images':>6} {'aircraft':>8} {'AP50':>6} {'P':>6} {'R':>6} {'F1':>6}")
    for key in sorted(rows, key=lambda k: (k.startswith("all"), k)):
        r = rows[key]
        scores, hits = np.concatenate(r["scores"]), np.concatenate(r["hits"])
        kept = scores >= threshold
        tp = int(hits[kept].sum())
        p = tp / max(1, int(kept.sum()))
        rec = tp / max(1, r["truth"])
        f1 = 2 * p * rec / max(1e-9, p + rec)
        ap = average_precision(scores, hits, r["truth"])
        print(f"{key:<14} {r['images']:>6} {r['truth']:>8} {ap:>6.3f} {p:>6.3f} {rec:>6.3f} {f1:>6.3f}")
    print(f"{len(samples)} images, {megapixels:.1f} MP in {seconds:.1f} s "
          f"({megapixels / seconds:.1f} MP/s on 2 threads, with decoding and scoring)")


#: aircraft under this size (the larger side of the box) are reported apart
SMALL_M = 30.0


def airbus(args) -> None:
    """AP50 and P/R on the Airbus Pleiades sample (0.5 m, 11 civil airports, another sensor
    and other sites than any training image), at the image's pixel size and rescaled."""
    from pipeline.detect.aircraft import load_detector
    from pipeline.testing.cases import load_annotations, merge_duplicates

    root = REPO.parent / "shared" / "data" / "airbus-aircraft-sample"
    det = load_detector(str(args.model))
    annotations = load_annotations(root / "annotations.csv")
    # the annotations cover the whole public set; this folder holds part of its images
    names = sorted(n for n in annotations if (root / "images" / n).is_file())
    print(f"model {args.model.name}: threshold {det.threshold}; Airbus images, boxes merged "
          "where one aircraft is boxed twice")
    print(f"{'scale':>5} {'m/px':>5} {'images':>6} {'aircraft':>8} {'AP50':>6} {'P':>6} {'R':>6} "
          f"{'F1':>6} {'MP/s':>6}   small (< {SMALL_M:g} m): aircraft AP50 P R")
    for scale in args.scales:
        scores, hits, n_truth, mp, t0 = [], [], 0, 0.0, time.perf_counter()
        small = {"scores": [], "hits": [], "truth": 0}
        for name in names:
            bgr = cv2.imread(str(root / "images" / name))
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if scale != 1:
                rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            truth = np.array([[b.x0, b.y0, b.x1, b.y1] for b in
                              merge_duplicates(annotations[name])], np.float32).reshape(-1, 4)
            found = det.detect(rgb, threshold=0.05)
            found[:, :4] /= scale
            which = matched_truth(found, truth)
            scores.append(found[:, 4])
            hits.append(which >= 0)
            n_truth += len(truth)
            mp += rgb.shape[0] * rgb.shape[1] / 1e6
            # the larger side of a box, metres (0.5 m pixels)
            size = (lambda b: 0.5 * np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))
            sc, h, n = size_subset(found, truth, which, size(truth) < SMALL_M,
                                   size(found) < SMALL_M, True)
            small["scores"].append(sc)
            small["hits"].append(h)
            small["truth"] += n
        seconds = time.perf_counter() - t0
        scores, hits = np.concatenate(scores), np.concatenate(hits)
        kept = scores >= det.threshold
        tp = int(hits[kept].sum())
        p, r = tp / max(1, int(kept.sum())), tp / max(1, n_truth)
        s_sc, s_hit = np.concatenate(small["scores"]), np.concatenate(small["hits"])
        s_kept = s_sc >= det.threshold
        s_tp = int(s_hit[s_kept].sum())
        print(f"{scale:>5.2f} {0.5 / scale:>5.2f} {len(names):>6} {n_truth:>8} "
              f"{average_precision(scores, hits, n_truth):>6.3f} {p:>6.3f} {r:>6.3f} "
              f"{2 * p * r / max(1e-9, p + r):>6.3f} {mp / seconds:>6.1f}   "
              f"{small['truth']:>8} {average_precision(s_sc, s_hit, small['truth']):.3f} "
              f"{s_tp / max(1, int(s_kept.sum())):.3f} {s_tp / max(1, small['truth']):.3f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and export the ONNX model")
    t.add_argument("--steps", type=int, default=11200,
                   help="steps of 16 crops (the schedule follows them: reproducible)")
    t.add_argument("--minutes", type=float, default=0.0,
                   help="instead of --steps: train for this long (the schedule follows the clock)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--holdout", type=float, default=0.2, help="share of images held out by site")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", type=Path, default=MODEL, help="the shipped (int8) model")
    t.add_argument("--fp32-out", type=Path, default=FP32, help="the float32 network")
    t.add_argument("--calibration-images", type=int, default=64)
    q = sub.add_parser("quantize", help="the shipped int8 model from the float32 one")
    q.add_argument("--fp32", type=Path, default=FP32)
    q.add_argument("--out", type=Path, default=MODEL)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--images", type=int, default=64, help="calibration images")
    e = sub.add_parser("eval", help="AP50 and P/R per held-out site")
    e.add_argument("--model", type=Path, default=MODEL)
    e.add_argument("--all-sites", action="store_true",
                   help="score every site (training sites in sample: said so)")
    a = sub.add_parser("airbus", help="AP50 and P/R on the Airbus sample (other sensor, sites)")
    a.add_argument("--model", type=Path, default=MODEL)
    a.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.75, 0.5])
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    {"train": train, "quantize": quantize, "eval": evaluate,
     "airbus": airbus}[args.command](args)


if __name__ == "__main__":
    main()
