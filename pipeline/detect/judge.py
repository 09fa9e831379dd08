"""The one place where candidates become detections (:func:`judge`).

Launchers and the classical path's aircraft pass as they are; with the verifier on, each
aircraft candidate is weighed by the learned model (:mod:`pipeline.detect.verifier`) against
its threshold. A recorder, when given, receives every judged candidate instead and keeps them
all: the training dump of ``benchmarks/verifier.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..config import Config
from . import verifier
from .candidates import Candidate
from .classify import Detection, link_moves, one_per_object


@dataclass(frozen=True)
class Judge:
    """How aircraft candidates are judged.

    Attributes
    ----------
    model : Verifier or None
        The learned verifier (``verifier.enabled``), None for the classical path or a recorder.
    threshold : float or None
        The probability a candidate must reach (``verifier.threshold``, else the model's own).
    recorder : list or None
        When given, every judged candidate is appended to it as a dict (``centroid_px``,
        ``change``, ``classical``: whether the classical path keeps it, ``features``) and kept.
    """

    model: verifier.Verifier | None = None
    threshold: float | None = None
    recorder: list | None = None

    @property
    def judging(self) -> bool:
        """Whether aircraft candidates get verifier features (and so are made even where a
        classical rule would drop them)."""
        return self.model is not None or self.recorder is not None

    @property
    def sights(self) -> bool:
        """Whether the detector's evidence is wanted: recorded, or read by the verifier."""
        return self.recorder is not None or (self.model is not None and self.model.uses_detector)

    @classmethod
    def from_config(cls, config: Config, *, recorder: list | None = None,
                    detector: bool | None = None) -> Judge:
        """The verifier of ``config`` (loaded through its checked loader), or a recorder;
        ``detector`` says whether the detector runs (None: as ``config`` says)."""
        v = config.verifier
        if recorder is not None or not v.enabled:
            return cls(recorder=recorder)
        model = verifier.load_verifier(v.model)
        if model.uses_detector and not (config.detector.enabled if detector is None else detector):
            return cls()  # a verifier of the detector's evidence, without it: the classical path
        return cls(model, v.threshold if v.threshold is not None else model.threshold)


def with_blob_context(found: list[Candidate]) -> list[Candidate]:
    """Each judged candidate's features with those that weigh it against the blob's others
    (:func:`pipeline.detect.verifier.blob_context`) appended."""
    judged = [i for i, c in enumerate(found) if c.features is not None]
    if not judged:
        return found
    found = list(found)
    context = verifier.blob_context([found[i].det.blob.area_m2 for i in judged])
    for i, more in zip(judged, context):
        found[i] = replace(found[i], features=np.append(found[i].features, more))
    return found


def judge(found: list[Candidate], judge_with: Judge) -> list[Detection]:
    """The detections among the candidates of one blob.

    Parameters
    ----------
    found : list of Candidate
        All the candidates one blob gave (:func:`pipeline.detect.candidates.blob_candidates`).
    judge_with : Judge

    Returns
    -------
    list of Detection
        Every candidate without verifier features; those with features that the verifier
        keeps (all of them with a recorder).
    """
    dets = []
    for c in with_blob_context(found):
        if c.features is not None:
            if judge_with.recorder is not None:
                judge_with.recorder.append({
                    "centroid_px": c.det.blob.centroid_px, "change": c.det.change,
                    "classical": c.classical, "features": c.features.tolist()})
            elif judge_with.model.probability(c.features) < judge_with.threshold:
                continue  # the verifier finds it unlike an aircraft that came or went
        dets.append(c.det)
    return dets


def settle(detections: list[Detection], res_m: tuple[float, float], config: Config
           ) -> list[Detection]:
    """The scene's detections in reading order (rows of the centroid, then columns), one per
    object (:func:`~pipeline.detect.classify.one_per_object`), numbered ``d001``..., and a
    disappeared and an appeared aircraft alike and near each other linked as a move
    (``moves``)."""
    detections = sorted(detections, key=lambda d: (round(d.blob.centroid_px[1]),
                                                   d.blob.centroid_px[0]))
    detections = one_per_object(detections, max_overlap=config.split.max_overlap)
    detections = [d.with_id(f"d{i + 1:03d}") for i, d in enumerate(detections)]
    if config.moves.enabled:
        detections = link_moves(detections, res_m, max_distance_m=config.moves.max_distance_m,
                                size_tolerance=config.moves.size_tolerance)
    return detections
