"""The per-image aircraft detector (pipeline.detect.aircraft): decoding, the checked loader, and
the shipped model on images it never saw."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.detect.aircraft import MODEL_PATH, decode, load_detector
from pipeline.errors import ConfigError


def test_decode_reads_a_centre_its_size_and_offset():
    maps = np.zeros((5, 32, 48), np.float32)
    maps[0, 10, 20] = 0.9   # a centre
    maps[0, 10, 21] = 0.6   # its neighbour: not a peak
    maps[0, 25, 5] = 0.2    # a peak below the threshold
    maps[1:3, 10, 20] = np.log(8.0), np.log(4.0)
    maps[3:5, 10, 20] = 0.5, 0.25
    boxes = decode(maps, threshold=0.3, stride=4)
    assert boxes.shape == (1, 5)
    # centre ((20 + 0.5) * 4, (10 + 0.25) * 4) = (82, 41); 8 x 4 cells = 32 x 16 px
    np.testing.assert_allclose(boxes[0], [66, 33, 98, 49, 0.9], atol=1e-5)
    assert decode(maps, threshold=0.95, stride=4).shape == (0, 5)


def test_a_missing_or_broken_model_is_a_config_error_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found") as err:
        load_detector(str(tmp_path / "none.onnx"))
    assert err.value.path == str(tmp_path / "none.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("not a model")
    with pytest.raises(ConfigError, match="not an ONNX model"):
        load_detector(str(text))


def test_a_model_of_another_kind_is_refused(tmp_path):
    other = tmp_path / "other.onnx"
    data = MODEL_PATH.read_bytes()
    assert data.count(b"centernet-aircraft") == 1
    other.write_bytes(data.replace(b"centernet-aircraft", b"centernet-aircrafX"))  # same length
    with pytest.raises(ConfigError, match="not an aircraft detector"):
        load_detector(str(other))


def test_shipped_model_says_how_it_was_made():
    det = load_detector()
    meta = det.metadata
    assert det.stride == 4 and 0 < det.threshold < 1
    for key in ("seed", "data_digest", "held_out_sites", "versions", "command", "steps"):
        assert meta.get(key), key
    assert "in sample" in meta["threshold_chosen_on"]


def _recall_precision(found: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Greedy one-to-one matching by falling score at IoU >= 0.5."""
    taken = np.zeros(len(truth), bool)
    tp = 0
    for box in found[np.argsort(-found[:, 4])]:
        x0 = np.maximum(box[0], truth[:, 0])
        y0 = np.maximum(box[1], truth[:, 1])
        x1 = np.minimum(box[2], truth[:, 2])
        y1 = np.minimum(box[3], truth[:, 3])
        inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        union = ((box[2] - box[0]) * (box[3] - box[1])
                 + (truth[:, 2] - truth[:, 0]) * (truth[:, 3] - truth[:, 1]) - inter)
        iou = np.where(taken, 0, inter / union)
        j = int(np.argmax(iou))
        if iou[j] >= 0.5:
            taken[j] = True
            tp += 1
    return tp / max(1, len(truth)), tp / max(1, len(found))


@pytest.mark.realdata
def test_shipped_model_finds_the_aircraft_of_airbus_airports_it_never_saw():
    """Trained on Google Earth images (HRPlanes), run on Pleiades images of other airports at
    1 m per pixel: benchmarks/detector.py airbus measured R 0.955, P 0.961 over all 53."""
    import cv2
    from conftest import shared_dataset

    from pipeline.testing.cases import load_annotations, merge_duplicates

    root = shared_dataset("airbus-aircraft-sample")
    annotations = load_annotations(root / "annotations.csv")
    det = load_detector()
    n_truth, tp_r, tp_p, n_found = 0, 0.0, 0.0, 0
    for name in ("20bfce20-fb8a-4e20-a4aa-57064add848b.jpg", "0641acc3-c0b9-4f9d-b0ba-7ad18aa08864.jpg",
                 "074737f4-7f59-4729-be5d-67f6f1d34668.jpg"):
        rgb = cv2.cvtColor(cv2.imread(str(root / "images" / name)), cv2.COLOR_BGR2RGB)
        found = det.detect(cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA))
        found[:, :4] *= 2
        truth = np.array([[b.x0, b.y0, b.x1, b.y1] for b in merge_duplicates(annotations[name])],
                         np.float32)
        recall, precision = _recall_precision(found, truth)
        tp_r += recall * len(truth)
        tp_p += precision * len(found)
        n_truth += len(truth)
        n_found += len(found)
    assert tp_r / n_truth >= 0.9 and tp_p / n_found >= 0.9, (tp_r / n_truth, tp_p / n_found)


@pytest.mark.realdata
def test_shipped_model_finds_the_aircraft_of_a_held_out_site():
    """DAL is one of the HRPlanes sites held out of training (the model's metadata says so)."""
    import json

    import cv2
    from conftest import shared_dataset

    root = shared_dataset("hrplanes-v2") / "train"
    det = load_detector()
    assert "DAL" in det.metadata["held_out_sites"].split(",")
    doc = json.loads((root / "_annotations.coco.json").read_text())
    boxes: dict[int, list] = {}
    for a in doc["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    hits = truth_n = found_n = precise = 0.0
    for im in doc["images"]:
        if "_DAL_" not in f"_{im['file_name']}" and not im["file_name"].startswith("DAL_"):
            continue
        rgb = cv2.cvtColor(cv2.imread(str(root / im["file_name"])), cv2.COLOR_BGR2RGB)
        found = det.detect(rgb)
        truth = np.array(boxes.get(im["id"], []), np.float32).reshape(-1, 4)
        recall, precision = _recall_precision(found, truth)
        hits += recall * len(truth)
        precise += precision * len(found)
        truth_n += len(truth)
        found_n += len(found)
    assert truth_n > 0 and hits / truth_n >= 0.9 and precise / found_n >= 0.9
