"""The per-image aircraft detector: where one image shows aircraft, whatever the other shows.

A small CenterNet-style network (``benchmarks/detector.py`` trains it and writes its ONNX file,
``aircraft_detector.onnx`` beside this module) predicts, per cell of 4 pixels, how likely an
aircraft's centre lies there, its box size and the centre's offset in the cell
(:func:`decode`). The package runs it with onnxruntime on the CPU (its CUDA provider when one
is there); nothing is downloaded and torch is never needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError

MODEL_PATH = Path(__file__).with_name("aircraft_detector.onnx")


def decode(maps: np.ndarray, *, threshold: float, stride: int,
           max_detections: int = 1000) -> np.ndarray:
    """Boxes from the network's maps, (N, 5): x0, y0, x1, y1 (input pixels) and score.

    Parameters
    ----------
    maps : ndarray, shape (5, M, N)
        Heat (0-1), log width and height in cells, centre offset in the cell (0-1).
    threshold : float
        Least heat of a centre.
    stride : int
        Input pixels a cell.

    Notes
    -----
    A centre is a cell whose heat is the largest of its 3 x 3 neighbours (the network's own
    non-maximum suppression, Zhou et al. 2019).
    """
    heat = np.ascontiguousarray(maps[0], np.float32)
    peaks = (heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))) & (heat >= threshold)
    ys, xs = np.nonzero(peaks)
    if ys.size > max_detections:
        keep = np.argsort(-heat[ys, xs])[:max_detections]
        ys, xs = ys[keep], xs[keep]
    w = np.exp(maps[1, ys, xs]) * stride
    h = np.exp(maps[2, ys, xs]) * stride
    cx = (xs + maps[3, ys, xs]) * stride
    cy = (ys + maps[4, ys, xs]) * stride
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, heat[ys, xs]],
                    axis=1).astype(np.float32).reshape(-1, 5)


@dataclass(frozen=True)
class AircraftDetector:
    """An ONNX aircraft detector and what its metadata says: cell size and threshold."""

    session: object
    stride: int
    threshold: float
    metadata: dict

    def detect(self, rgb: np.ndarray, *, threshold: float | None = None) -> np.ndarray:
        """(N, 5) boxes and scores of the aircraft in ``rgb`` ((H, W, 3), 0-255), pixels."""
        h, w = rgb.shape[:2]
        # the network's input, (1, 3, H, W) to multiples of 16, made in one array: rgb / 255
        # - 0.5, and 0 (mid-grey) in the padding
        x = np.zeros((1, 3, h + -h % 16, w + -w % 16), np.float32)
        for k in range(3):
            band = x[0, k, :h, :w]
            np.divide(rgb[..., k], np.float32(255.0), out=band, casting="unsafe")
            band -= np.float32(0.5)
        maps = self.session.run(None, {"image": x})[0][0]
        boxes = decode(maps, threshold=self.threshold if threshold is None else threshold,
                       stride=self.stride)
        # centres in the padding are none of the image's
        inside = ((boxes[:, 0] + boxes[:, 2]) / 2 < w) & ((boxes[:, 1] + boxes[:, 3]) / 2 < h)
        return boxes[inside]


@lru_cache(maxsize=2)
def load_detector(path: str | None = None, *, threads: int = 2) -> AircraftDetector:
    """The detector of ``path``, or the one shipped with the package (loaded once).

    Raises
    ------
    ConfigError
        The file is missing, is no ONNX model, or is no aircraft detector of this kind.
    """
    import onnxruntime as ort

    source = Path(path or MODEL_PATH)
    if not source.is_file():
        raise ConfigError(f"{source}: aircraft detector model not found", path=source)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # blocks differ in size: an arena sized for the largest (and a memory pattern per shape)
    # would be held for the whole run
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    try:
        session = ort.InferenceSession(str(source), opts, providers=providers)
    except Exception as err:  # onnxruntime raises its own classes for every kind of bad file
        raise ConfigError(f"{source}: not an ONNX model ({str(err).splitlines()[0][:120]})",
                          path=source) from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("kind") != "centernet-aircraft":
        raise ConfigError(f"{source}: not an aircraft detector of this version (retrain with "
                          "benchmarks/detector.py)", path=source)
    return AircraftDetector(session, int(meta["stride"]), float(meta["threshold"]), dict(meta))
