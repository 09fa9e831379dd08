"""The change score of a chip, recomputed from what report.json records (radiometry, score unit,
difference settings): the third chip of report.html's gallery and the review tools' score layer.

The recorded numbers are parsed once per report into a :class:`ScoreRecipe`, a frozen value
that the caller holds and passes to every chip; nothing is cached between reports.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from ..change.difference import change_score
from ..change.radiometry import Radiometry, comparable, normalise
from .model import ReportModel, as_report


@dataclass(frozen=True, eq=False)
class ScoreRecipe:
    """What the change score of a chip needs, parsed from one report.json.

    Attributes
    ----------
    radiometry : Radiometry
        The map applied to AFTER (gains, offsets, level field).
    score_unit : (B,) float32 ndarray
        One noise standard deviation per band, BEFORE's units.
    smoothing_px : float
        ``difference.smoothing_px``: Gaussian sigma applied before differencing, pixels.
    tolerance_px : int
        ``difference.tolerance_px``: neighbourhood searched for the nearest value, pixels.
    threshold_sigma : float
        ``difference.threshold_sigma``: the seed threshold, noise sigma (for the colour scale).
    """

    radiometry: Radiometry
    score_unit: np.ndarray
    smoothing_px: float
    tolerance_px: int
    threshold_sigma: float = 5.0

    @classmethod
    def from_report(cls, report: ReportModel | Mapping) -> ScoreRecipe:
        """The recipe of a report.

        Raises
        ------
        ValueError
            When the report records no radiometry, no score unit, or no difference settings
            (report.json of an early version): its chips cannot be scored.
        """
        report = as_report(report)
        rad, diff = report.radiometry, report.config.difference
        if rad is None or rad.score_unit is None:
            raise ValueError("the report records no radiometry score unit")
        if diff.smoothing_px is None or diff.tolerance_px is None:
            raise ValueError("the report records no difference.smoothing_px / tolerance_px")
        if len(rad.gains) != len(rad.score_unit):
            raise ValueError(f"the report's radiometry has {len(rad.gains)} gains and "
                             f"{len(rad.score_unit)} score units")
        return cls(Radiometry.from_dict(rad.model_dump()), np.asarray(rad.score_unit, np.float32),
                   float(diff.smoothing_px), int(diff.tolerance_px), float(diff.threshold_sigma))

    @property
    def bands(self) -> int:
        """Bands the score compares (1: luminance, when BEFORE and AFTER differ in band count)."""
        return int(self.score_unit.size)


def score_chip(before: np.ndarray, after: np.ndarray, valid: np.ndarray, recipe: ScoreRecipe,
               window: Window | None = None) -> np.ndarray:
    """Recompute the change score of a chip as the pipeline computed it.

    Parameters
    ----------
    before, after : (B, M, N) float32
        BEFORE and AFTER values on the BEFORE grid (AFTER co-registered, not yet normalised).
    valid : (M, N) bool
        Pixels valid in both.
    recipe : ScoreRecipe
        The report's numbers (:meth:`ScoreRecipe.from_report`).
    window : rasterio Window, optional
        Where the chip lies on the BEFORE grid; needed when the radiometry has a level field.

    Returns
    -------
    (M, N) float32
        Change score in noise standard deviations, as :func:`pipeline.change.difference.change_score`
        gives it inside the pipeline (up to the chip's border, where the smoothing sees less).

    Raises
    ------
    ValueError
        When the chip's band count is not the report's.
    """
    b, a = comparable(before, after)
    if recipe.bands != b.shape[0]:
        raise ValueError(f"report radiometry has {recipe.bands} bands, the chip {b.shape[0]}")
    a = normalise(a, recipe.radiometry, window)
    return change_score(b, a, valid, recipe.score_unit, smoothing_px=recipe.smoothing_px,
                        tolerance_px=recipe.tolerance_px)
