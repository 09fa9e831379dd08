"""Synthetic BEFORE/AFTER airbase scenes with ground truth.

Feeds the tests, the benchmarks and ``sample_tiles/``: a procedural 0.5 m scene of an apron
(concrete slabs, taxiway, grass, buildings) with aircraft, helicopters, SAM launchers and vehicles
drawn as top-view silhouettes with shadows, rendered for two dates, the second shifted by an exact
sub-pixel offset.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import affine
import cv2
import numpy as np
import rasterio
import scipy.fft
import skimage.draw
from pyproj import Transformer
from scipy import ndimage
from shapely.geometry import MultiPoint, Polygon
from shapely.geometry.polygon import orient
from shapely.ops import unary_union

log = logging.getLogger(__name__)

CRS = "EPSG:32636"
HMEIMIM_LONLAT_DEG = (35.949, 35.401)  # Hmeimim air base, apron area (lon, lat)

SCENARIOS = ("random", "hmeimim", "no-change")
DIFFICULTIES = ("easy", "medium", "hard")
_DN_SCALE = {"uint8": 240.0, "uint16": 3800.0}  # DN of reflectance 1.0 (12-bit data for uint16)
_SUBPIXEL_BITS = 4  # fractional bits of cv2 line vertices
_SUPERSAMPLE = 4  # sub-pixels per pixel side when rasterising object outlines
_EDGE_MARGIN_PX = 20
_NOISE_CORRELATION_PX = 0.6  # Gaussian sigma of the sensor noise's spatial correlation
_PSF_SIGMA_PX = 0.8


# --------------------------------------------------------------------------------------------------
# Public value objects


@dataclass(frozen=True)
class TruthObject:
    """One object of a synthetic scene, as a perfect detector would report it.

    Positions are continuous pixel coordinates on the BEFORE grid: (0, 0) is the top-left corner of
    the top-left pixel, so ``transform @ (col_px, row_px)`` gives map coordinates of the centre.
    ``length_m`` x ``width_m`` is the minimum-area rectangle of the silhouette as drawn (rotor discs
    excluded), ``heading_deg`` the direction of its long axis (clockwise from north, 0 to 180) and
    ``height_m`` the height that casts the shadow.
    """

    id: str
    kind: str
    category: str
    klass: str | None
    change: str
    col_px: float
    row_px: float
    length_m: float
    width_m: float
    heading_deg: float
    height_m: float
    area_m2: float = 0.0


@dataclass(frozen=True)
class ScenePair:
    """A synthetic BEFORE/AFTER pair with its truth.

    ``before`` and ``after`` are (bands, rows, cols) arrays on one grid (``transform``, ``crs``);
    AFTER's content is displaced by ``shift_px`` = (dx, dy):
    ``after[r + dy, c + dx] == before[r, c]`` for static content.
    """

    before: np.ndarray
    after: np.ndarray
    transform: affine.Affine
    crs: str
    shift_px: tuple[float, float]
    objects: tuple[TruthObject, ...]


# --------------------------------------------------------------------------------------------------
# Object models: convex parts in local metres (x forward to the nose, y to the right)


@dataclass(frozen=True, eq=False)
class _Part:
    poly_m: np.ndarray                  # (K, 2) convex outline, local metres
    z_m: tuple[float, float]            # bottom and top height above ground, for the shadow
    shade: float = 1.0                  # times the body colour
    tint: tuple[float, ...] | None = None  # absolute RGBN colour instead of the body colour
    alpha: float = 1.0
    footprint: bool = True              # part of the silhouette measured for truth
    shadow: bool = True
    camo: bool = False
    sun_facing: float = 0.0             # brightness change per unit of sun direction along +y


@dataclass(frozen=True, eq=False)
class _Model:
    kind: str
    category: str                       # aircraft, launcher, vehicle, building
    klass: str | None
    height_m: float
    parts: tuple[_Part, ...]
    colour: np.ndarray                  # (4,) RGBN reflectance
    camo_colour: np.ndarray | None
    length_m: float
    width_m: float
    long_axis_forward: bool             # long axis along x (fuselage) rather than y (span)
    area_m2: float


@dataclass(frozen=True, eq=False)
class _Placed:
    id: str
    model: _Model
    col_px: float                       # footprint centre, BEFORE-grid continuous pixels
    row_px: float
    nose_deg: float                     # direction of local +x, clockwise from north, 0..360
    change: str
    seed: int


@dataclass(frozen=True)
class _Sun:
    azimuth_deg: float                  # direction towards the sun, clockwise from north
    elevation_deg: float
    shadow_factor: tuple[float, ...]    # per band (RGBN), multiplies shadowed ground


def _rgbn(r: float, g: float, b: float, nir: float | None = None
          ) -> tuple[float, float, float, float]:
    return (r, g, b, 0.9 * (r + g + b) / 3 + 0.05 if nir is None else nir)


_CANOPY = _rgbn(0.10, 0.12, 0.15, 0.10)


def _poly(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _ellipse(cx: float, cy: float, a: float, b: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def _rect(x0: float, x1: float, y0: float, y1: float, corner: float = 0.0) -> np.ndarray:
    if corner <= 0:
        return _poly([(x1, y0), (x1, y1), (x0, y1), (x0, y0)])
    pts = []
    for cx, cy, start in ((x1 - corner, y1 - corner, 0), (x0 + corner, y1 - corner, 90),
                          (x0 + corner, y0 + corner, 180), (x1 - corner, y0 + corner, 270)):
        for t in np.radians(np.arange(start, start + 91, 30)):
            pts.append((cx + corner * math.cos(t), cy + corner * math.sin(t)))
    return _poly(pts)


def _fuselage(length: float, width: float, *, x0: float = 0.0, nose: float = 0.12,
              tail: float = 0.3, tail_w: float = 0.25, n: int = 8) -> np.ndarray:
    """Convex body outline: elliptic nose, parallel mid-section, straight taper to the tail."""
    half, nose_l, tail_l = width / 2, nose * length, tail * length
    right = []
    for t in np.linspace(0, 1, n):              # nose tip -> end of nose
        x = length / 2 - nose_l * (1 - math.cos(t * math.pi / 2))
        right.append((x, half * math.sin(t * math.pi / 2)))
    right.append((-length / 2 + tail_l, half))
    right.append((-length / 2, half * tail_w))
    left = [(x, -y) for x, y in reversed(right[1:])]
    return _poly([(x + x0, y) for x, y in right + left])


def _halves(poly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The right (y >= 0) and left (y <= 0) halves of a convex outline symmetric about y = 0."""
    right = poly[poly[:, 1] >= 0]
    left = poly[poly[:, 1] <= 0]
    cut = [(poly[:, 0].max(), 0.0), (poly[:, 0].min(), 0.0)]
    return _poly(list(right) + cut[::-1]), _poly(list(left) + cut)


@dataclass(frozen=True)
class _Panel:
    """A trapezoidal wing, tailplane or canard panel, local metres: the root's leading edge at
    ``root_le_x``, spanning ``root_y`` to ``tip_y`` (both >= 0), swept back by ``sweep_deg``."""

    root_le_x: float
    root_y: float
    root_chord: float
    tip_y: float
    sweep_deg: float
    tip_chord: float

    def outline(self, side: int) -> np.ndarray:
        """The panel on the right (``side`` = +1) or the left (-1) of the body."""
        tip_le_x = self.root_le_x - (self.tip_y - self.root_y) * math.tan(
            math.radians(self.sweep_deg))
        return _poly([(self.root_le_x, side * self.root_y), (tip_le_x, side * self.tip_y),
                      (tip_le_x - self.tip_chord, side * self.tip_y),
                      (self.root_le_x - self.root_chord, side * self.root_y)])


def _pair(make: Callable[[int], np.ndarray]) -> list[np.ndarray]:
    return [make(+1), make(-1)]


def _blades(hub_x: float, radius: float, n: int, width: float, phase_deg: float
            ) -> list[np.ndarray]:
    out = []
    for k in range(n):
        t = math.radians(phase_deg + 360.0 * k / n)
        c, s = math.cos(t), math.sin(t)
        ends = [(0.3, -width / 2), (radius, -width / 2), (radius, width / 2), (0.3, width / 2)]
        out.append(_poly([(hub_x + x * c - y * s, x * s + y * c) for x, y in ends]))
    return out


def _finish(kind: str, category: str, klass: str | None, *, height_m: float,
            parts: list[_Part], colour, camo_colour=None) -> _Model:
    """Centre the footprint's bounding box on the origin and measure it."""
    foot = [p.poly_m for p in parts if p.footprint]
    allpts = np.concatenate(foot)
    lo, hi = allpts.min(axis=0), allpts.max(axis=0)
    centre = (lo + hi) / 2
    parts = tuple(dataclasses.replace(p, poly_m=p.poly_m - centre) for p in parts)
    ext_x, ext_y = hi - lo
    area = unary_union([Polygon(p.poly_m) for p in parts if p.footprint]).area
    return _Model(kind, category, klass, height_m, parts, np.asarray(colour, np.float32),
                  None if camo_colour is None else np.asarray(camo_colour, np.float32),
                  float(max(ext_x, ext_y)), float(min(ext_x, ext_y)), bool(ext_x >= ext_y),
                  float(area))


def _shaded_body(poly: np.ndarray, z: tuple[float, float], *, camo: bool = False,
                 facing: float = 0.08, shade: float = 1.0) -> list[_Part]:
    """A rounded body: the whole outline, then its two halves lit according to the sun."""
    right, left = _halves(poly)
    lit = dict(z_m=z, shade=shade, camo=camo, shadow=False, footprint=False)
    return [_Part(poly, z, shade=shade, camo=camo),
            _Part(right, sun_facing=facing, **lit), _Part(left, sun_facing=-facing, **lit)]


def _transport(kind: str, rng: np.random.Generator) -> _Model:
    """High-wing four-engine transports: An-124 (69.1 x 73.3 m), Il-76 (46.6 x 50.5 m)."""
    if kind == "An-124":
        L, span, H, fw = 69.1, 73.3, 21.1, 7.3
        wing = dict(root_le_x=8.0, root_chord=13.0, sweep=32.0, tip_chord=3.5)
        engines_y, nacelle = (10.5, 18.5), (6.5, 2.9)
        tail = _Panel(root_le_x=-21.5, root_y=0.0, root_chord=7.0, tip_y=12.4, sweep_deg=38.0,
                      tip_chord=2.5)
        tail_z, fin, body_z = (7.0, 8.6), (-33.5, -21.0, 0.9), (0.8, 8.6)
        colour = _rgbn(0.80, 0.81, 0.82)
    else:
        L, span, H, fw = 46.6, 50.5, 14.76, 4.8
        wing = dict(root_le_x=6.0, root_chord=9.5, sweep=25.0, tip_chord=2.8)
        engines_y, nacelle = (7.3, 13.4), (5.5, 1.9)
        tail = _Panel(root_le_x=-17.5, root_y=0.0, root_chord=5.0, tip_y=8.7, sweep_deg=30.0,
                      tip_chord=2.2)  # T-tail: on top of the fin
        tail_z, fin, body_z = (14.0, 14.76), (-22.8, -15.0, 0.8), (0.8, 6.0)
        colour = _rgbn(0.70, 0.72, 0.73)
    colour = tuple(c * k for c, k in zip(colour, [rng.uniform(0.94, 1.04)] * 4))
    body = _fuselage(L, fw, nose=0.09, tail=0.3, tail_w=0.3, n=10)
    wz = (body_z[1] - 0.9, body_z[1])
    tan_sw = math.tan(math.radians(wing["sweep"]))
    parts = _shaded_body(body, body_z)
    parts += [_Part(p, tail_z, shade=0.95) for p in _pair(tail.outline)]
    for y in engines_y:
        x = wing["root_le_x"] - y * tan_sw + nacelle[0] * 0.15
        parts += [_Part(_ellipse(x, s * y, nacelle[0] / 2, nacelle[1] / 2), (wz[0] - 2.5, wz[0]),
                        shade=0.78) for s in (1, -1)]
    parts += [_Part(p, wz, shade=0.95) for p in _pair(_Panel(
        wing["root_le_x"], 0.0, wing["root_chord"], span / 2, wing["sweep"], wing["tip_chord"]
    ).outline)]
    x0, x1, w = fin
    parts.append(_Part(_rect(x0, x1, -w / 2, w / 2), (body_z[1], H), shade=0.88))
    parts.append(_Part(_rect(L / 2 - 2.9, L / 2 - 2.1, -fw * 0.22, fw * 0.22, 0.2), body_z,
                       tint=_CANOPY, shadow=False, footprint=False))
    return _finish(kind, "aircraft", "medium-transport" if kind == "Il-76" else "large-transport",
                   height_m=H, parts=parts, colour=colour)


def _an26(rng: np.random.Generator) -> _Model:
    """An-26 twin turboprop, 23.8 m long, 29.2 m span (high straight wing)."""
    L, span, H = 23.8, 29.2, 8.58
    colour = _rgbn(*(c * k for c, k in zip((0.72, 0.73, 0.72), [rng.uniform(0.95, 1.05)] * 3)))
    body_z, wz = (0.6, 3.2), (2.8, 3.3)
    parts = _shaded_body(_fuselage(L, 2.9, nose=0.08, tail=0.32, tail_w=0.25), body_z)
    parts += [_Part(p, (2.9, 3.3), shade=0.95) for p in _pair(_Panel(
        -8.2, 0.0, 3.0, 4.9, 12.0, 1.5).outline)]
    parts += [_Part(_ellipse(1.3, s * 4.0, 3.4, 0.75), (1.8, 3.0), shade=0.82) for s in (1, -1)]
    parts += [_Part(p, wz, shade=0.96) for p in _pair(_Panel(
        3.0, 0.0, 3.6, span / 2, 4.0, 1.6).outline)]
    parts.append(_Part(_rect(-11.6, -7.0, -0.25, 0.25), (3.2, H), shade=0.88))
    parts.append(_Part(_rect(9.9, 10.9, -0.8, 0.8, 0.2), body_z, tint=_CANOPY, shadow=False,
                       footprint=False))
    return _finish("An-26", "aircraft", "light-aircraft", height_m=H, parts=parts, colour=colour)


def _su24(rng: np.random.Generator, swept: bool | None = None) -> _Model:
    """Su-24M, 22.53 m long; span 10.37 m (wings swept) or 17.64 m (spread)."""
    L, H = 22.53, 6.19
    if swept is None:
        swept = bool(rng.random() < 0.5)
    half_span = (10.37 if swept else 17.64) / 2
    sweep = 69.0 if half_span < 6 else 16.0
    base, camo = _rgbn(0.44, 0.47, 0.42), _rgbn(0.32, 0.35, 0.30)
    body_z, wz = (1.2, 3.2), (2.1, 2.5)
    pivot_x, pivot_y = -0.8, 3.0
    length_wing = (half_span - pivot_y) / math.cos(math.radians(sweep))
    parts = [_Part(p, wz, shade=0.95, camo=True) for p in _pair(lambda s: _poly([
        (pivot_x, s * pivot_y),
        (pivot_x - length_wing * math.sin(math.radians(sweep)), s * half_span),
        (pivot_x - length_wing * math.sin(math.radians(sweep)) - 1.6, s * half_span),
        (pivot_x - 3.4, s * pivot_y)]))]
    parts += [_Part(p, (1.9, 2.4), shade=0.95, camo=True) for p in _pair(_Panel(
        -6.4, 1.1, 3.3, 4.3, 45.0, 1.2).outline)]
    parts.append(_Part(_poly([(5.0, 1.0), (1.5, 3.2), (-1.2, 3.2), (-1.2, -3.2), (1.5, -3.2),
                              (5.0, -1.0)]), body_z, camo=True))                 # wing gloves
    parts += _shaded_body(_fuselage(L, 2.4, nose=0.22, tail=0.15, tail_w=0.6), body_z, camo=True)
    parts.append(_Part(_rect(-11.0, -6.2, -0.2, 0.2), (3.2, H), shade=0.85))
    parts.append(_Part(_ellipse(6.3, 0.0, 1.5, 0.85), body_z, tint=_CANOPY, shadow=False,
                       footprint=False))
    return _finish("Su-24", "aircraft", "combat-jet",
                   height_m=H, parts=parts, colour=base, camo_colour=camo)


def _flanker(kind: str, rng: np.random.Generator) -> _Model:
    """Su-35 (21.9 x 15.3 m) and Su-34 (23.34 x 14.7 m): twin nacelles, twin fins, tail sting."""
    if kind == "Su-34":
        L, span, H, nose_w, canards = 23.34, 14.7, 6.09, 2.3, True
        base, camo = _rgbn(0.42, 0.47, 0.53), _rgbn(0.31, 0.35, 0.41)
    else:
        L, span, H, nose_w, canards = 21.9, 15.3, 5.9, 1.7, False
        base, camo = _rgbn(0.44, 0.50, 0.56), _rgbn(0.33, 0.38, 0.45)
    x_nose = L / 2
    body_z, wz = (1.0, 3.4), (2.2, 2.6)
    parts = [_Part(p, wz, shade=0.95, camo=True) for p in _pair(_Panel(
        0.8, 2.6, 6.4, span / 2, 42.0, 1.5).outline)]
    parts += [_Part(p, (2.0, 2.5), shade=0.93, camo=True) for p in _pair(_Panel(
        -6.6, 2.2, 3.3, 4.9, 40.0, 1.1).outline)]
    parts.append(_Part(_poly([(x_nose - 5.5, 0.9), (0.8, 2.9), (-7.5, 2.9), (-9.4, 1.7),
                              (-9.4, -1.7), (-7.5, -2.9), (0.8, -2.9), (x_nose - 5.5, -0.9)]),
                       body_z, camo=True))                            # LERX, nacelles, tunnel
    if canards:
        parts += [_Part(p, (2.4, 2.8), shade=0.93, camo=True) for p in _pair(_Panel(
            x_nose - 6.0, 1.0, 1.6, 3.0, 35.0, 0.6).outline)]
    nose_len = 9.0
    parts += _shaded_body(_fuselage(nose_len, nose_w, x0=x_nose - nose_len / 2, nose=0.5,
                                    tail=0.05, tail_w=1.0), body_z)
    parts += [_Part(_ellipse(-8.6, s * 1.55, 1.9, 0.62), body_z, shade=0.6) for s in (1, -1)]
    parts.append(_Part(_fuselage(3.2, 1.0, x0=-L / 2 + 1.6, nose=0.3, tail=0.3, tail_w=0.5),
                       body_z, shade=0.9))                            # tail sting
    parts += [_Part(_rect(-10.0, -6.0, s * 2.1 - 0.18, s * 2.1 + 0.18), (3.0, H), shade=0.85)
              for s in (1, -1)]
    parts.append(_Part(_ellipse(x_nose - 4.6, 0.0, 1.4, 0.55 if not canards else 0.9),
                       body_z, tint=_CANOPY, shadow=False, footprint=False))
    return _finish(kind, "aircraft", "combat-jet",
                   height_m=H, parts=parts, colour=base, camo_colour=camo)


def _helicopter(kind: str, rng: np.random.Generator) -> _Model:
    """Ka-52 (13.5 m, stub wings 7.3 m, coaxial rotors 14.5 m) and Mi-8 (18 x 4.5 m, rotor 21.3 m).

    Rotor blades are drawn faint and left out of the footprint: at 0.5 m they seldom resolve.
    """
    phase = rng.uniform(0, 360)
    if kind == "Ka-52":
        L, H, fw = 13.5, 4.93, 1.9
        colour, camo = _rgbn(0.18, 0.20, 0.16), _rgbn(0.24, 0.25, 0.18)
        body = _fuselage(L, fw, nose=0.2, tail=0.5, tail_w=0.3)
        parts = [_Part(p, (1.2, 1.5), shade=0.9) for p in _pair(_Panel(
            1.1, 0.0, 1.3, 3.65, 8.0, 1.0).outline)]
        parts += [_Part(_ellipse(0.0, s * y, 0.9, 0.22), (0.8, 1.2), shade=0.7)
                  for s in (1, -1) for y in (2.0, 3.2)]
        parts += [_Part(p, (1.5, 1.8), shade=0.9) for p in _pair(_Panel(
            -4.8, 0.0, 0.8, 1.5, 5.0, 0.7).outline)]
        parts += _shaded_body(body, (0.3, 3.6), camo=True)
        parts.append(_Part(_ellipse(4.2, 0.0, 1.2, 0.7), (0.3, 3.6), tint=_CANOPY, shadow=False,
                           footprint=False))
        hub, rotor = 0.5, _blades(0.5, 7.25, 3, 0.55, phase) + _blades(0.5, 7.25, 3, 0.55,
                                                                         phase + 60)
        rotor_z = (4.2, 4.93)
    else:
        L, H, fw = 18.0, 5.65, 2.5
        colour, camo = _rgbn(0.25, 0.28, 0.18), _rgbn(0.38, 0.35, 0.25)
        cabin = _fuselage(L, fw, nose=0.07, tail=0.42, tail_w=0.2)
        parts = [_Part(_rect(-1.0, 3.0, s * 1.25 - 0.5 * s, s * 2.25, 0.45) if s > 0 else
                       _rect(-1.0, 3.0, -2.25, -0.75, 0.45), (0.5, 1.8), shade=0.85)
                 for s in (1, -1)]                                     # external tanks
        parts += [_Part(p, (1.8, 2.1), shade=0.9) for p in _pair(_Panel(
            -7.2, 0.0, 0.8, 1.4, 5.0, 0.6).outline)]
        parts += _shaded_body(cabin, (0.4, 4.4), camo=True)
        parts.append(_Part(_rect(0.5, 4.8, -0.8, 0.8, 0.4), (0.4, 4.5), shade=0.8, footprint=False))
        parts.append(_Part(_ellipse(8.0, 0.0, 0.9, 1.0), (0.4, 3.0), tint=_CANOPY, shadow=False,
                           footprint=False))
        hub, rotor = 1.5, _blades(1.5, 10.65, 5, 0.52, phase)
        rotor_z = (4.6, 5.65)
    parts += [_Part(b, rotor_z, shade=0.7, alpha=0.4, footprint=False) for b in rotor]
    parts.append(_Part(_ellipse(hub, 0.0, 0.55, 0.55), rotor_z, shade=0.6, footprint=False))
    return _finish(kind, "aircraft", "helicopter",
                   height_m=H, parts=parts, colour=colour, camo_colour=camo)


def _s400_tel(rng: np.random.Generator) -> _Model:
    """S-400 5P85TE2: tractor and semitrailer with four canisters, about 20 x 3.2 m."""
    H, L = 4.0, rng.uniform(19.0, 21.0)
    colour, camo = _rgbn(0.24, 0.27, 0.18), _rgbn(0.16, 0.18, 0.12)
    x_front = L / 2
    parts = [_Part(_rect(x_front - 6.0, x_front - 2.4, -1.3, 1.3), (0.0, 3.0), shade=0.8),
             _Part(_rect(x_front - 2.5, x_front, -1.5, 1.5, 0.3), (0.0, 3.4), camo=True),
             _Part(_rect(x_front - 0.6, x_front - 0.1, -1.3, 1.3), (0.0, 3.4), tint=_CANOPY,
                   shadow=False, footprint=False),
             _Part(_rect(-L / 2, x_front - 5.0, -1.6, 1.6), (0.0, 3.0), shade=0.9, camo=True)]
    for y in (-1.2, -0.4, 0.4, 1.2):                                  # canisters, as stripes
        tube = _rect(-L / 2 + 0.4, x_front - 5.4, y - 0.36, y + 0.36, 0.2)
        parts.append(_Part(tube, (0.0, H), shade=1.05, sun_facing=0.0))
        parts.append(_Part(_rect(-L / 2 + 0.4, x_front - 5.4, y, y + 0.3), (0.0, H),
                           shade=1.05, sun_facing=0.25, shadow=False, footprint=False))
        parts.append(_Part(_rect(-L / 2 + 0.05, -L / 2 + 0.5, y - 0.3, y + 0.3), (0.0, H),
                           shade=0.55, shadow=False, footprint=False))
    return _finish("S-400 TEL", "launcher", "sam-launcher",
                   height_m=H, parts=parts, colour=colour, camo_colour=camo)


def _radar(rng: np.random.Generator) -> _Model:
    """Self-propelled radar or TEL on an 8x8 chassis, about 12.5 x 3.1 m (antenna stowed)."""
    H, L = 4.0, rng.uniform(11.0, 13.0)
    colour, camo = _rgbn(0.24, 0.27, 0.18), _rgbn(0.17, 0.19, 0.13)
    parts = [_Part(_rect(-L / 2, L / 2 - 2.3, -1.55, 1.55), (0.0, 3.0), shade=0.9, camo=True),
             _Part(_rect(L / 2 - 2.4, L / 2, -1.45, 1.45, 0.3), (0.0, 3.2), camo=True),
             _Part(_rect(L / 2 - 0.6, L / 2 - 0.1, -1.25, 1.25), (0.0, 3.2), tint=_CANOPY,
                   shadow=False, footprint=False),
             _Part(_rect(-L / 2 + 0.6, L / 2 - 3.0, -1.3, 1.3), (0.0, H), shade=1.15),
             _Part(_rect(-L / 2 + 1.0, L / 2 - 3.4, -1.3, 0.0), (0.0, H), shade=1.15,
                   sun_facing=-0.15, shadow=False, footprint=False)]
    return _finish("radar", "launcher", "sam-launcher",
                   height_m=H, parts=parts, colour=colour, camo_colour=camo)


_CAR_COLOURS = [_rgbn(0.82, 0.82, 0.80), _rgbn(0.62, 0.63, 0.64), _rgbn(0.07, 0.07, 0.08),
                _rgbn(0.55, 0.12, 0.10), _rgbn(0.10, 0.18, 0.40), _rgbn(0.22, 0.25, 0.17),
                _rgbn(0.60, 0.52, 0.38)]
_TRUCK_COLOURS = [_rgbn(0.22, 0.25, 0.17), _rgbn(0.80, 0.80, 0.78), _rgbn(0.55, 0.48, 0.35),
                  _rgbn(0.30, 0.32, 0.26)]


def _car(rng: np.random.Generator) -> _Model:
    L, W, H = 4.4, 1.8, 1.5
    colour = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
    parts = [_Part(_rect(-L / 2, L / 2, -W / 2, W / 2, 0.35), (0.0, H)),
             _Part(_rect(0.25, 1.0, -0.75, 0.75, 0.15), (0.0, H), tint=_CANOPY, shadow=False,
                   footprint=False),
             _Part(_rect(-1.7, -1.25, -0.72, 0.72, 0.12), (0.0, H), tint=_CANOPY, shadow=False,
                   footprint=False)]
    return _finish("car", "vehicle", None, height_m=H, parts=parts, colour=colour)


def _truck(rng: np.random.Generator) -> _Model:
    L, W, H = rng.uniform(6.0, 7.0), 2.4, 2.8
    colour = _TRUCK_COLOURS[rng.integers(len(_TRUCK_COLOURS))]
    parts = [_Part(_rect(L / 2 - 1.9, L / 2, -1.15, 1.15, 0.2), (0.0, 2.5), shade=0.9),
             _Part(_rect(L / 2 - 0.5, L / 2 - 0.1, -1.0, 1.0), (0.0, 2.5), tint=_CANOPY,
                   shadow=False, footprint=False),
             _Part(_rect(-L / 2, L / 2 - 2.1, -W / 2, W / 2), (0.0, H), shade=1.05)]
    return _finish("truck", "vehicle", None, height_m=H, parts=parts, colour=colour)


def _building(rng: np.random.Generator, length_m: float, width_m: float) -> _Model:
    """A hangar with a ridged roof or a flat-roofed block with rooftop plant."""
    H = rng.uniform(7.0, 13.0)
    if rng.random() < 0.6:
        colour = _rgbn(0.58, 0.60, 0.62) if rng.random() < 0.6 else _rgbn(0.50, 0.36, 0.30)
        roof = _rect(-length_m / 2, length_m / 2, -width_m / 2, width_m / 2)
        parts = [_Part(roof, (0.0, H)),
                 _Part(_rect(-length_m / 2, length_m / 2, 0.0, width_m / 2), (0.0, H),
                       sun_facing=0.22, shadow=False, footprint=False),
                 _Part(_rect(-length_m / 2, length_m / 2, -width_m / 2, 0.0), (0.0, H),
                       sun_facing=-0.22, shadow=False, footprint=False)]
    else:
        colour = _rgbn(0.66, 0.64, 0.60)
        parts = [_Part(_rect(-length_m / 2, length_m / 2, -width_m / 2, width_m / 2), (0.0, H)),
                 _Part(_rect(-length_m / 2 + 0.6, length_m / 2 - 0.6, -width_m / 2 + 0.6,
                             width_m / 2 - 0.6), (0.0, H), shade=0.9, shadow=False,
                       footprint=False)]
        for _ in range(rng.integers(2, 5)):
            x = rng.uniform(-length_m / 2 + 3, length_m / 2 - 3)
            y = rng.uniform(-width_m / 2 + 3, width_m / 2 - 3)
            parts.append(_Part(_rect(x - 1.2, x + 1.2, y - 0.9, y + 0.9), (H, H + 1.5),
                               shade=1.12, footprint=False))
    return _finish("building", "building", None, height_m=H, parts=parts, colour=colour)


_BUILDERS: dict[str, Callable[[np.random.Generator], _Model]] = {
    "An-124": lambda rng: _transport("An-124", rng),
    "Il-76": lambda rng: _transport("Il-76", rng),
    "An-26": _an26,
    "Su-24": _su24,
    "Su-34": lambda rng: _flanker("Su-34", rng),
    "Su-35": lambda rng: _flanker("Su-35", rng),
    "Ka-52": lambda rng: _helicopter("Ka-52", rng),
    "Mi-8": lambda rng: _helicopter("Mi-8", rng),
    "S-400 TEL": _s400_tel,
    "radar": _radar,
    "car": _car,
    "truck": _truck,
}
KINDS = tuple(_BUILDERS)


def kind_class(kind: str) -> str | None:
    """The footprint class a perfect detector reports for ``kind`` (None for vehicles)."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return _BUILDERS[kind](np.random.default_rng(0)).klass


# --------------------------------------------------------------------------------------------------
# Geometry helpers


def _local_to_px(poly_m: np.ndarray, placed: _Placed, gsd_m: float) -> np.ndarray:
    """Local metres -> continuous BEFORE-grid pixels (col, row)."""
    h = math.radians(placed.nose_deg)
    fwd = np.array([math.sin(h), -math.cos(h)])
    right = np.array([math.cos(h), math.sin(h)])
    return (np.array([placed.col_px, placed.row_px])
            + (poly_m[:, :1] * fwd + poly_m[:, 1:2] * right) / gsd_m)


def _shadow_px_per_m(sun: _Sun, gsd_m: float) -> np.ndarray:
    """Displacement (col, row) of a shadow per metre of height."""
    a = math.radians(sun.azimuth_deg)
    length = 1.0 / math.tan(math.radians(sun.elevation_deg)) / gsd_m
    return np.array([-math.sin(a), math.cos(a)]) * length


def footprint_corners_px(obj: TruthObject, gsd_m: float = 0.5) -> np.ndarray:
    """(4, 2) corners (col, row) of an object's footprint rectangle on the BEFORE grid."""
    h = math.radians(obj.heading_deg)
    along = np.array([math.sin(h), -math.cos(h)]) * obj.length_m / 2 / gsd_m
    across = np.array([math.cos(h), math.sin(h)]) * obj.width_m / 2 / gsd_m
    c = np.array([obj.col_px, obj.row_px])
    return np.array([c + along + across, c + along - across, c - along - across,
                     c - along + across])


def _rect_corners_px(placed: _Placed, gsd_m: float) -> np.ndarray:
    m = placed.model
    if m.long_axis_forward:
        hx, hy = m.length_m / 2, m.width_m / 2
    else:
        hx, hy = m.width_m / 2, m.length_m / 2
    return _local_to_px(_rect(-hx, hx, -hy, hy), placed, gsd_m)


def _keep_out_px(placed: _Placed, suns: tuple[_Sun, ...], gsd_m: float) -> np.ndarray:
    """Corners of the footprint and of its shadows under every sun (their hull is kept clear)."""
    rect = _rect_corners_px(placed, gsd_m)
    pts = [rect] + [rect + _shadow_px_per_m(s, gsd_m) * placed.model.height_m for s in suns]
    return np.concatenate(pts)


# --------------------------------------------------------------------------------------------------
# Layout: bands of taxiway, apron, road across a rotated axis; buildings beside the taxiway


@dataclass(frozen=True)
class _Layout:
    axis_deg: float        # direction of the taxiway (u axis), clockwise from north
    centre_px: tuple[float, float]
    taxiway_m: tuple[float, float]  # v range
    apron_m: tuple[float, float]
    road_m: tuple[float, float]
    leadins_u_m: tuple[float, ...]

    def uv_m(self, col_px, row_px, gsd_m: float):
        """BEFORE-grid pixels -> (u along the taxiway, v across towards the apron), metres."""
        h = math.radians(self.axis_deg)
        dc, dr = col_px - self.centre_px[0], row_px - self.centre_px[1]
        return ((dc * math.sin(h) - dr * math.cos(h)) * gsd_m,
                (dc * math.cos(h) + dr * math.sin(h)) * gsd_m)

    def px(self, u_m, v_m, gsd_m: float):
        """(u, v) metres -> BEFORE-grid continuous pixels (col, row)."""
        h = math.radians(self.axis_deg)
        return (self.centre_px[0] + (u_m * math.sin(h) + v_m * math.cos(h)) / gsd_m,
                self.centre_px[1] + (-u_m * math.cos(h) + v_m * math.sin(h)) / gsd_m)


def _make_layout(size_px: int, gsd_m: float, axis_deg: float, rng: np.random.Generator) -> _Layout:
    L = size_px * gsd_m
    tw0 = -0.30 * L
    apron = (tw0 + 22.5, 0.30 * L)
    road = (apron[1] + 14.0, apron[1] + 21.0)
    leadins = tuple(sorted(rng.uniform(-0.6 * L, 0.6 * L, size=max(2, int(L / 60)))))
    return _Layout(axis_deg, (size_px / 2, size_px / 2), (tw0, tw0 + 22.5), apron, road, leadins)


# --------------------------------------------------------------------------------------------------
# Ground


def _fractal(shape: tuple[int, int], rng: np.random.Generator, *, factor: int,
             beta: float = 2.0, f_min: float = 1 / 128) -> np.ndarray:
    """Zero-mean, unit-std 1/f^(beta/2) noise, generated ``factor`` times coarser and upsampled."""
    h, w = shape[0] // factor + 3, shape[1] // factor + 3
    spec = scipy.fft.rfft2(rng.standard_normal((h, w)).astype(np.float32))
    fy = scipy.fft.fftfreq(h)[:, None] / factor
    fx = scipy.fft.rfftfreq(w)[None, :] / factor
    f = np.maximum(np.hypot(fx, fy), f_min)
    field = scipy.fft.irfft2(spec * f ** (-beta / 2), s=(h, w)).astype(np.float32)
    field -= field.mean()
    field /= field.std() + 1e-12
    if factor > 1:
        field = cv2.resize(field, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return field[:shape[0], :shape[1]]


def _joints(pos_m: np.ndarray, coord_m: np.ndarray, gsd_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Slab index and joint-line coverage (0..1, about 1 px wide) along one axis."""
    idx = np.clip(np.searchsorted(pos_m, coord_m), 1, len(pos_m) - 1)
    dist = np.minimum(coord_m - pos_m[idx - 1], pos_m[idx] - coord_m) / gsd_m
    return idx, np.clip(1.0 - np.abs(dist) / 0.7, 0.0, 1.0)


def _band_cover(v: np.ndarray, lo: float, hi: float, gsd_m: float) -> np.ndarray:
    """Anti-aliased coverage of lo <= v < hi (v in metres)."""
    return (np.clip(0.5 + (v - lo) / gsd_m, 0, 1) * np.clip(0.5 + (hi - v) / gsd_m, 0, 1))


_MATERIALS = {  # RGBN reflectance
    "concrete": (0.57, 0.555, 0.525, 0.58), "asphalt": (0.23, 0.23, 0.24, 0.25),
    "soil": (0.47, 0.41, 0.32, 0.47), "veg": (0.31, 0.31, 0.20, 0.45),
    "yellow": (0.72, 0.60, 0.16, 0.66), "white": (0.82, 0.82, 0.80, 0.80),
}


def _ground(layout: _Layout, n_px: int, pad_px: int, gsd_m: float, n_bands: int,
            rng: np.random.Generator) -> np.ndarray:
    """Reflectance (n_bands, n_px, n_px) of the bare airfield on the padded canvas.

    Concrete slabs on the apron, asphalt on the taxiway and the road, soil and grass elsewhere,
    each modulated by shared fractal textures; stains, tyre marks and painted lines on top.
    """
    shape = (n_px, n_px)
    idx = np.arange(n_px, dtype=np.float32) - pad_px + 0.5
    u, v = layout.uv_m(idx[None, :], idx[:, None], gsd_m)
    u, v = u.astype(np.float32), v.astype(np.float32)

    mottle = _fractal(shape, rng, factor=4)
    patches = _fractal(shape, rng, factor=8, f_min=1 / 600)
    speckle = cv2.GaussianBlur(_fractal(shape, rng, factor=2, beta=0.0), (0, 0), 0.6)
    fine = rng.standard_normal(shape, dtype=np.float32)
    concrete_mod = _concrete_mod((u, v), (mottle, fine, speckle), gsd_m, rng)

    tw0, tw1 = layout.taxiway_m
    tw_c = (tw0 + tw1) / 2
    asphalt_mod = 1.0 + 0.05 * mottle + 0.025 * fine + 0.045 * speckle
    asphalt_mod -= 0.10 * np.exp(-((v - tw_c) / 3.5) ** 2) * _band_cover(v, tw0, tw1, gsd_m)
    veg = np.clip(0.35 + 0.6 * patches + 0.25 * mottle, 0, 1)
    grass_mod = 1.0 + 0.07 * mottle + 0.025 * fine + 0.055 * speckle
    grass_mod -= 0.25 * (speckle > 2.2)                                  # shrubs and tufts

    m_tw = _band_cover(v, tw0, tw1, gsd_m)
    m_ap = _band_cover(v, *layout.apron_m, gsd_m)
    m_rd = _band_cover(v, *layout.road_m, gsd_m)
    m_grass = np.clip(1.0 - m_tw - m_ap - m_rd, 0, 1)

    concrete_mod *= 1.0 - 0.25 * _stains(layout, shape, pad_px, gsd_m, rng) * m_ap
    paint_y, paint_w = _paint(layout, v, pad_px, gsd_m, m_ap)

    out = np.empty((n_bands, n_px, n_px), np.float32)
    for b in range(n_bands):
        mat = {k: v_[b] for k, v_ in _MATERIALS.items()}
        grass = (mat["soil"] + (mat["veg"] - mat["soil"]) * veg) * grass_mod
        band = (mat["concrete"] * concrete_mod * m_ap + mat["asphalt"] * asphalt_mod * (m_tw + m_rd)
                + grass * m_grass)
        band += paint_y * (mat["yellow"] * (1.0 + 0.04 * fine) - band)
        band += paint_w * (mat["white"] - band)
        out[b] = band
    return out


def _concrete_mod(uv_m: tuple[np.ndarray, np.ndarray], textures: tuple[np.ndarray, ...],
                  gsd_m: float, rng: np.random.Generator) -> np.ndarray:
    """Brightness of the concrete: slabs of irregular size, each its own tone, low-contrast
    joints (no strong periodic pattern), and the ``(mottle, fine, speckle)`` textures."""
    u, v = uv_m
    mottle, fine, speckle = textures
    extent = u.shape[0] * gsd_m
    slab_edges = []
    for _ in range(2):
        widths = rng.uniform(4.4, 5.6, size=int(2 * extent / 4.4) + 4)
        slab_edges.append(np.cumsum(widths) - extent)
    iu, ju = _joints(slab_edges[0], u, gsd_m)
    iv, jv = _joints(slab_edges[1], v, gsd_m)
    slab_tone = rng.normal(0.0, 0.018, size=(len(slab_edges[0]) + 1, len(slab_edges[1]) + 1))
    slab_tone -= 0.05 * (rng.random(slab_tone.shape) < 0.04)           # stained slabs
    return (1.0 + 0.03 * mottle + 0.01 * fine + 0.025 * speckle
            + slab_tone[iu, iv].astype(np.float32) - 0.045 * np.maximum(ju, jv))


def _stains(layout: _Layout, shape: tuple[int, int], pad_px: int, gsd_m: float,
            rng: np.random.Generator) -> np.ndarray:
    """Stains and tyre marks on the apron (0..1), drawn at full resolution then softened."""
    extent = shape[0] * gsd_m
    tw_c = (layout.taxiway_m[0] + layout.taxiway_m[1]) / 2
    stains = np.zeros(shape, np.uint8)
    n_stains = int(0.003 * (extent ** 2) * 0.4)
    for _ in range(n_stains):
        uc = rng.uniform(-extent, extent)
        vc = rng.uniform(*layout.apron_m)
        c, r = layout.px(uc, vc, gsd_m)
        axes = (max(1, int(rng.uniform(0.5, 4.0) / gsd_m)),
                max(1, int(rng.uniform(0.5, 2.5) / gsd_m)))
        cv2.ellipse(stains, (int(c + pad_px), int(r + pad_px)), axes, rng.uniform(0, 180), 0, 360,
                    int(rng.uniform(40, 160)), -1, cv2.LINE_AA)
    for u0 in layout.leadins_u_m:
        for _ in range(3):
            pts = _leadin_m(u0 + rng.normal(0, 1.5), tw_c, rng.uniform(20, 30), 60.0, rng)
            cv2.polylines(stains, [_to_cv(np.array([layout.px(a, b, gsd_m) for a, b in pts]),
                                          pad_px)], False, 50, 2, cv2.LINE_AA, _SUBPIXEL_BITS)
    return cv2.GaussianBlur(stains, (0, 0), 1.5).astype(np.float32) / 255.0


def _paint(layout: _Layout, v: np.ndarray, pad_px: int, gsd_m: float, m_ap: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cover (0..1) of yellow paint (taxiway centre and edge lines, lead-in lines) and of white
    paint (the apron's edge line)."""
    tw0, tw1 = layout.taxiway_m
    tw_c = (tw0 + tw1) / 2
    paint_y = np.clip(0.5 + (0.25 - np.abs(v - tw_c)) / gsd_m, 0, 1) * 0.85
    for edge in (tw0 + 1.0, tw1 - 1.0):
        paint_y = np.maximum(paint_y, np.clip(0.5 + (0.18 - np.abs(v - edge)) / gsd_m, 0, 1) * 0.7)
    lines = np.zeros(v.shape, np.uint8)
    for u0 in layout.leadins_u_m:
        pts = _leadin_m(u0, tw_c, 25.0, 70.0, None)
        cv2.polylines(lines, [_to_cv(np.array([layout.px(a, b, gsd_m) for a, b in pts]), pad_px)],
                      False, 200, 1, cv2.LINE_AA, _SUBPIXEL_BITS)
    paint_y = np.maximum(paint_y, lines.astype(np.float32) / 255.0 * m_ap)
    paint_w = np.clip(0.5 + (0.2 - np.abs(v - (layout.apron_m[1] - 1.0))) / gsd_m, 0, 1) * 0.6
    return paint_y, paint_w


def _leadin_m(u0: float, v_centre: float, radius: float, length: float,
              rng: np.random.Generator | None) -> list[tuple[float, float]]:
    """A lead-in line: quarter circle off the taxiway centre line, then straight into the apron."""
    sign = 1.0 if rng is None or rng.random() < 0.5 else -1.0
    pts = [(u0 + sign * radius * math.sin(t), v_centre + radius * (1 - math.cos(t)))
           for t in np.linspace(0, math.pi / 2, 12)]
    pts.append((u0 + sign * radius, v_centre + radius + length))
    return pts


def _to_cv(pts_px: np.ndarray, offset_px: float) -> np.ndarray:
    """Continuous pixel coordinates -> cv2 fixed-point vertices (pixel centres at integers)."""
    return np.round((pts_px + offset_px - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)


# --------------------------------------------------------------------------------------------------
# Rendering objects


def _part_cover(pts_px: np.ndarray, shape: tuple[int, int]
                ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """Exact-on-average area coverage of a polygon over the pixels of its bounding box.

    ``pts_px`` are continuous coordinates (col, row) of a window of ``shape``; each pixel is
    sampled at 4 x 4 sub-pixel centres (unbiased: an anti-aliased ``cv2.fillPoly`` fattens
    outlines by more than half a pixel). Returns the window slices and the coverage (0..1).
    """
    s = _SUPERSAMPLE
    c0, r0 = np.maximum(np.floor(pts_px.min(axis=0)).astype(int), 0)
    c1 = min(int(math.ceil(pts_px[:, 0].max())), shape[1])
    r1 = min(int(math.ceil(pts_px[:, 1].max())), shape[0])
    if c1 <= c0 or r1 <= r0:
        return None
    local = (pts_px - (c0, r0)) * s - 0.5
    rr, cc = skimage.draw.polygon(local[:, 1], local[:, 0], ((r1 - r0) * s, (c1 - c0) * s))
    fine = np.zeros(((r1 - r0) * s, (c1 - c0) * s), np.float32)
    fine[rr, cc] = 1.0
    cover = cv2.resize(fine, (c1 - c0, r1 - r0), interpolation=cv2.INTER_AREA)
    return (slice(r0, r1), slice(c0, c1)), cover


def _draw_shadows(cover: np.ndarray, placed: _Placed, sun: _Sun, gsd_m: float, pad_px: int) -> None:
    """Max-combine the shadow coverage of one object into ``cover`` (canvas-sized, in place)."""
    per_m = _shadow_px_per_m(sun, gsd_m)
    polys = []
    for part in placed.model.parts:
        if not part.shadow:
            continue
        pts = _local_to_px(part.poly_m, placed, gsd_m)
        swept = np.concatenate([pts + per_m * part.z_m[0], pts + per_m * part.z_m[1]])
        hull = cv2.convexHull(swept.astype(np.float32))[:, 0, :].astype(np.float64)
        polys.append((hull, part.alpha))
    for hull, alpha in polys:
        got = _part_cover(hull + pad_px, cover.shape)
        if got is not None:
            win = cover[got[0]]
            np.maximum(win, got[1] * alpha, out=win)


def _camo_field(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((shape[0] // 7 + 3, shape[1] // 7 + 3)).astype(np.float32)
    big = cv2.resize(coarse, (coarse.shape[1] * 7, coarse.shape[0] * 7),
                     interpolation=cv2.INTER_CUBIC)[:shape[0], :shape[1]]
    return np.clip(0.5 + 2.5 * big, 0, 1)


def _draw_body(canvas: np.ndarray, placed: _Placed, sun: _Sun, gsd_m: float, pad_px: int) -> None:
    """Composite an object's parts over ``canvas`` (bands, rows, cols), in place."""
    model = placed.model
    n_bands = canvas.shape[0]
    pts_all = [_local_to_px(p.poly_m, placed, gsd_m) for p in model.parts]
    allpts = np.concatenate(pts_all) + pad_px
    c0, r0 = np.floor(allpts.min(axis=0)).astype(int) - 2
    c1, r1 = np.ceil(allpts.max(axis=0)).astype(int) + 3
    if c0 < 0 or r0 < 0 or c1 > canvas.shape[2] or r1 > canvas.shape[1]:
        raise ValueError(f"object {placed.id} ({model.kind}) leaves the canvas")
    win = canvas[:, r0:r1, c0:c1]
    shape = win.shape[1:]
    sun_y = math.sin(math.radians(sun.azimuth_deg - placed.nose_deg))
    colour = _bands(model.colour, n_bands)[:, None, None]
    if model.camo_colour is not None:
        camo = _camo_field(shape, placed.seed)
        body = colour + (_bands(model.camo_colour, n_bands)[:, None, None] - colour) * camo
    else:
        body = np.broadcast_to(colour, (n_bands,) + shape)
    grain = 1.0 + 0.012 * np.random.default_rng(placed.seed + 1).standard_normal(shape,
                                                                                 dtype=np.float32)
    offset = pad_px - np.array([c0, r0])
    for part, pts in zip(model.parts, pts_all):
        got = _part_cover(pts + offset, shape)
        if got is None:
            continue
        sl, cover = got
        cov = cover * part.alpha
        gain = part.shade * (1.0 + part.sun_facing * sun_y)
        if part.tint is not None:
            col = _bands(np.asarray(part.tint, np.float32), n_bands)[:, None, None]
        elif part.camo:
            col = body[(slice(None),) + sl] * gain * grain[sl]
        else:
            col = colour * gain * grain[sl]
        w = win[(slice(None),) + sl]
        w += cov * (col - w)


def _bands(rgbn: np.ndarray, n_bands: int) -> np.ndarray:
    return np.asarray(rgbn, np.float32)[:n_bands]


def _render_date(ground: np.ndarray, placed: list[_Placed], sun: _Sun, gsd_m: float,
                 pad_px: int, psf_sigma_px: float) -> np.ndarray:
    """Ground, shadows, objects, then the sensor's PSF: float reflectance on the padded canvas."""
    canvas = ground.copy()
    cover = np.zeros(canvas.shape[1:], np.float32)
    for p in placed:
        _draw_shadows(cover, p, sun, gsd_m, pad_px)
    for b in range(canvas.shape[0]):
        canvas[b] *= 1.0 - cover * (1.0 - sun.shadow_factor[b])
    for p in placed:
        _draw_body(canvas, p, sun, gsd_m, pad_px)
    for b in range(canvas.shape[0]):
        canvas[b] = cv2.GaussianBlur(canvas[b], (0, 0), psf_sigma_px)
    return canvas


def _subpixel_shift(canvas: np.ndarray, dx_px: float, dy_px: float) -> np.ndarray:
    """Move content by (dx, dy) exactly: multiply the spectrum by the shift's phase ramp."""
    n_cols = canvas.shape[-1]
    out = np.empty_like(canvas)
    for b in range(canvas.shape[0]):
        spec = scipy.fft.rfft2(canvas[b], workers=-1)
        spec = ndimage.fourier_shift(spec, (dy_px, dx_px), n=n_cols)
        out[b] = scipy.fft.irfft2(spec, s=canvas.shape[1:], workers=-1)
    return out


# --------------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class _Difficulty:
    noise_dn: float            # sensor noise, DN of 255
    gain_range: float
    band_jitter: float
    haze_max: float
    sun_turn_deg: float
    sun_drop_deg: float
    moving_vehicles: tuple[int, int]
    clearance_m: float
    min_contrast: float
    contrast_pull: float       # 0: nominal colours; 1: colours pulled onto the ground


_DIFFICULTY = {
    "easy": _Difficulty(1.0, 0.05, 0.01, 0.02, 8.0, 5.0, (1, 3), 12.0, 0.15, 0.0),
    "medium": _Difficulty(2.0, 0.12, 0.02, 0.05, 20.0, 10.0, (2, 4), 8.0, 0.11, 0.0),
    "hard": _Difficulty(3.0, 0.20, 0.04, 0.10, 40.0, 18.0, (4, 7), 6.0, 0.08, 0.45),
}

_CHANGE_WEIGHTS = {"An-124": 0.6, "Il-76": 0.9, "An-26": 1.0, "Su-24": 1.2, "Su-34": 0.9,
                   "Su-35": 1.2, "Ka-52": 1.4, "Mi-8": 1.2, "S-400 TEL": 1.4, "radar": 0.8}


def _suns(rng: np.random.Generator, diff: _Difficulty) -> tuple[_Sun, _Sun]:
    out = []
    az = rng.uniform(125.0, 160.0)
    el = rng.uniform(48.0, 66.0)
    for k in range(2):
        if k == 1:
            az += diff.sun_turn_deg * rng.choice([-1.0, 1.0]) * rng.uniform(0.7, 1.0)
            el = max(28.0, el - diff.sun_drop_deg * rng.uniform(0.6, 1.0))
        s = rng.uniform(0.45, 0.6)
        out.append(_Sun(az, el, (s * 0.95, s, min(0.8, s * 1.18), s * 0.85)))
    return out[0], out[1]


class _Placer:
    """Places objects without overlap: footprints and shadows (both dates) keep a clearance."""

    def __init__(self, size_px: int, gsd_m: float, layout: _Layout, suns: tuple[_Sun, ...],
                 clearance_m: float):
        self.size_px, self.gsd_m, self.layout, self.suns = size_px, gsd_m, layout, suns
        self.half_gap_px = clearance_m / 2 / gsd_m
        self.taken: list[Polygon] = []

    def fits(self, placed: _Placed, region: str) -> bool:
        rect = _rect_corners_px(placed, self.gsd_m)
        keep = _keep_out_px(placed, self.suns, self.gsd_m)
        lo, hi = _EDGE_MARGIN_PX, self.size_px - _EDGE_MARGIN_PX
        if keep.min() < lo or keep.max() > hi:
            return False
        _, v = self.layout.uv_m(rect[:, 0], rect[:, 1], self.gsd_m)
        if region == "apron":
            ok_lo, ok_hi = self.layout.apron_m[0] + 2.0, self.layout.apron_m[1] - 2.0
        elif region == "road":
            ok_lo, ok_hi = self.layout.road_m[0] + 0.3, self.layout.road_m[1] - 0.3
        else:  # beside the taxiway, on grass
            ok_lo, ok_hi = -1e9, self.layout.taxiway_m[0] - 8.0
        if v.min() < ok_lo or v.max() > ok_hi:
            return False
        hull = MultiPoint([tuple(p) for p in keep]).convex_hull.buffer(self.half_gap_px)
        return not any(hull.intersects(t) for t in self.taken)

    def take(self, placed: _Placed) -> None:
        keep = _keep_out_px(placed, self.suns, self.gsd_m)
        self.taken.append(MultiPoint([tuple(p) for p in keep]).convex_hull.buffer(self.half_gap_px))


def _random_pose(rng: np.random.Generator, placer: _Placer, region: str, *,
                 near: Sequence[_Placed] = (), cluster: bool = False) -> tuple[float, float]:
    """A candidate centre in ``region``; with ``cluster``, mostly near one of ``near``."""
    layout, gsd_m = placer.layout, placer.gsd_m
    L = placer.size_px * gsd_m
    if cluster and near and rng.random() < 0.7:
        anchor = near[rng.integers(len(near))]
        dist = rng.uniform(15.0, 45.0) / gsd_m
        t = rng.uniform(0, 2 * np.pi)
        return anchor.col_px + dist * math.cos(t), anchor.row_px + dist * math.sin(t)
    u = rng.uniform(-0.75 * L, 0.75 * L)
    if region == "apron":
        v = rng.uniform(*layout.apron_m)
    elif region == "road":
        v = rng.uniform(*layout.road_m)
    else:
        v = rng.uniform(-0.75 * L, layout.taxiway_m[0])
    return layout.px(u, v, gsd_m)


def _place_random(kind: str, change: str, obj_id: str, placer: _Placer, rng: np.random.Generator,
                  *, region: str, placed: list[_Placed], cluster: bool, tries: int = 80
                  ) -> _Placed | None:
    """An object of ``kind`` where ``placer`` finds room in ``region`` (mostly aligned with the
    taxiway), or None after ``tries`` candidate poses; ``placed`` are the anchors of clusters."""
    seed = int(rng.integers(2**31))
    model = _BUILDERS[kind](np.random.default_rng(seed))
    axis = placer.layout.axis_deg
    for _ in range(tries):
        col, row = _random_pose(rng, placer, region, near=placed, cluster=cluster)
        if kind in ("car", "truck") and region == "road":
            nose = axis + rng.choice([0.0, 180.0]) + rng.normal(0, 2)
        elif rng.random() < 0.75:
            nose = axis + rng.choice([0.0, 90.0, 180.0, 270.0]) + rng.normal(0, 4)
        else:
            nose = rng.uniform(0, 360)
        cand = _Placed(obj_id, model, col, row, nose % 360.0, change, seed)
        if placer.fits(cand, region):
            placer.take(cand)
            return cand
    log.debug("no room for %s (%s)", kind, change)
    return None


def _random_scene(rng: np.random.Generator, placer: _Placer, diff: _Difficulty,
                  with_changes: bool) -> list[_Placed]:
    kinds = list(_CHANGE_WEIGHTS)
    weights = np.array([_CHANGE_WEIGHTS[k] for k in kinds])
    weights /= weights.sum()
    todo: list[tuple[str, str, str]] = []
    if with_changes:
        for _ in range(rng.integers(4, 9)):
            todo.append((kinds[rng.choice(len(kinds), p=weights)],
                         str(rng.choice(["appeared", "disappeared"])), "apron"))
    for _ in range(rng.integers(4, 9)):
        todo.append((kinds[rng.choice(len(kinds), p=weights)], "static", "apron"))
    n_vehicles = int(rng.integers(6, 13))
    n_moving = int(rng.integers(*diff.moving_vehicles)) if with_changes else 0
    for k in range(n_vehicles):
        kind = "car" if rng.random() < 0.6 else "truck"
        region = "road" if rng.random() < 0.3 else "apron"
        if k < n_moving:
            todo.append((kind, "disappeared", region))
            todo.append((kind, "appeared", "road" if rng.random() < 0.3 else "apron"))
        else:
            todo.append((kind, "static", region))
    size_order = {k: _BUILDERS[k](np.random.default_rng(0)).length_m for k in _BUILDERS}
    todo.sort(key=lambda t: -size_order[t[0]])
    placed: list[_Placed] = []
    fallback = ["Ka-52", "Su-35", "S-400 TEL"]
    for kind, change, region in todo:
        p = _place_random(kind, change, f"t{len(placed) + 1:03d}", placer, rng, region=region,
                          placed=placed, cluster=diff.clearance_m <= 6.0)
        if p is None and kind not in ("car", "truck") and change != "static":
            for alt in fallback:  # a big aircraft that does not fit leaves room for a small one
                p = _place_random(alt, change, f"t{len(placed) + 1:03d}", placer, rng,
                                  region=region, placed=placed, cluster=False)
                if p is not None:
                    break
        if p is not None:
            placed.append(p)
    return placed


# The Hmeimim story, laid out on a 512 m tile: (kind, change, u_m along the taxiway, v_m across
# towards the apron, nose relative to the taxiway axis, degrees).
_HMEIMIM = (
    ("An-124", "appeared", -145.0, -70.0, -90.0),
    ("Il-76", "static", 145.0, -80.0, -90.0),
    ("Su-24", "static", -205.0, 110.0, 90.0),
    ("Su-24", "static", -170.0, 110.0, 90.0),
    ("Su-24", "static", -135.0, 110.0, 90.0),
    ("Su-24", "static", -100.0, 110.0, 90.0),
    ("Su-35", "static", -55.0, 110.0, 90.0),
    ("Su-35", "static", -20.0, 110.0, 90.0),
    ("Su-34", "static", 20.0, 110.0, 90.0),
    ("Ka-52", "disappeared", 60.0, 40.0, -90.0),
    ("Ka-52", "disappeared", 95.0, 40.0, -90.0),
    ("Ka-52", "disappeared", 130.0, 40.0, -90.0),
    ("S-400 TEL", "disappeared", -55.0, 20.0, 0.0),
    ("S-400 TEL", "disappeared", -55.0, 37.0, 0.0),
    ("radar", "static", -90.0, 28.0, 0.0),
    ("truck", "static", 110.0, -40.0, 20.0),
    ("truck", "static", -150.0, 142.0, 0.0),
    ("truck", "disappeared", -20.0, 25.0, 180.0),
    ("car", "static", -60.0, 171.0, 0.0),
    ("car", "static", 90.0, 171.0, 180.0),
    ("car", "disappeared", 60.0, -25.0, 30.0),
    ("car", "disappeared", -140.0, 171.0, 0.0),
    ("car", "appeared", -20.0, -100.0, -60.0),
    ("car", "appeared", 190.0, 171.0, 180.0),
    ("car", "appeared", 170.0, 60.0, 90.0),
)


def _hmeimim_scene(rng: np.random.Generator, placer: _Placer, size_px: int, gsd_m: float
                   ) -> list[_Placed]:
    scale = min(1.0, size_px * gsd_m / 512.0)
    placed = []
    for k, (kind, change, u, v, rel) in enumerate(_HMEIMIM):
        seed = int(rng.integers(2**31))
        if kind == "Su-24":  # two with wings swept, two spread
            model = _su24(np.random.default_rng(seed), swept=k % 2 == 0)
        else:
            model = _BUILDERS[kind](np.random.default_rng(seed))
        col, row = placer.layout.px(u * scale, v * scale, gsd_m)
        cand = _Placed(f"t{k + 1:03d}", model, col, row,
                       (placer.layout.axis_deg + rel + rng.normal(0, 1.5)) % 360.0, change, seed)
        region = "road" if v * scale > placer.layout.road_m[0] - 1.0 else "apron"
        if placer.fits(cand, region):
            placer.take(cand)
            placed.append(cand)
        else:
            log.warning("hmeimim scene: no room for %s (%s) on a %d px tile", kind, change, size_px)
    return placed


def _buildings(rng: np.random.Generator, placer: _Placer, count: int) -> list[_Placed]:
    out = []
    for k in range(count):
        length, width = rng.uniform(24.0, 45.0), rng.uniform(15.0, 28.0)
        model = _building(np.random.default_rng(int(rng.integers(2**31))), length, width)
        for _ in range(40):
            col, row = _random_pose(rng, placer, "grass")
            cand = _Placed(f"b{k}", model, col, row,
                           (placer.layout.axis_deg + rng.choice([0.0, 90.0])) % 360, "static", 0)
            if placer.fits(cand, "grass"):
                placer.take(cand)
                out.append(cand)
                break
    return out


def _ensure_contrast(placed: _Placed, ground: np.ndarray, pad_px: int, gsd_m: float,
                     diff: _Difficulty) -> _Placed:
    """Pull the colour towards the ground (hard), then keep >= min_contrast in the mean."""
    rect = _rect_corners_px(placed, gsd_m) + pad_px
    c0, r0 = np.floor(rect.min(axis=0)).astype(int)
    c1, r1 = np.ceil(rect.max(axis=0)).astype(int) + 1
    g = np.median(ground[:, r0:r1, c0:c1].reshape(ground.shape[0], -1), axis=1)
    g4 = np.append(g, g.mean()) if g.size == 3 else g
    model = placed.model
    colour = model.colour.copy()
    camo = None if model.camo_colour is None else model.camo_colour.copy()
    if diff.contrast_pull > 0:
        colour = colour + (g4 - colour) * diff.contrast_pull
        if camo is not None:
            camo = camo + (g4 - camo) * diff.contrast_pull
    ref = colour[:3] if camo is None else (colour[:3] + camo[:3]) / 2
    d = float(ref.mean() - g4[:3].mean())
    need = diff.min_contrast + 0.01
    if abs(d) < need:
        up = d > 0 or (d == 0 and g4[:3].mean() < 0.45)
        delta = (need - d) if up else (-need - d)
        if float((colour + delta)[:3].max()) > 0.93 or float((colour + delta)[:3].min()) < 0.03:
            delta = (-need - d) if up else (need - d)
        colour = np.clip(colour + delta, 0.02, 0.95)
        if camo is not None:
            camo = np.clip(camo + delta, 0.02, 0.95)
    model = dataclasses.replace(model, colour=colour.astype(np.float32),
                                camo_colour=None if camo is None else camo.astype(np.float32))
    return dataclasses.replace(placed, model=model)


def _truth(p: _Placed) -> TruthObject:
    m = p.model
    heading = (p.nose_deg if m.long_axis_forward else p.nose_deg + 90.0) % 180.0
    return TruthObject(p.id, m.kind, m.category, m.klass, str(p.change), float(p.col_px),
                       float(p.row_px), round(float(m.length_m), 3), round(float(m.width_m), 3),
                       round(float(heading), 3), float(m.height_m), round(float(m.area_m2), 2))


def hmeimim_origin_xy_m(size_px: int, gsd_m: float) -> tuple[float, float]:
    """Top-left corner (easting, northing) in EPSG:32636 of a tile centred on Hmeimim's apron."""
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    x, y = to_utm.transform(*HMEIMIM_LONLAT_DEG)
    half = size_px * gsd_m / 2
    return float(round(x - half)), float(round(y + half))


def _padded_size(size_px: int, pad_px: int) -> int:
    """Smallest odd FFT-friendly canvas side >= size + 2 pad (odd: no Nyquist bin to mangle)."""
    n = size_px + 2 * pad_px
    while True:
        n = scipy.fft.next_fast_len(n, real=True)
        if n % 2:
            return n
        n += 1


def make_pair(*, seed: int = 0, size_px: int = 1024, gsd_m: float = 0.5,
              shift_px: tuple[float, float] = (2.3, -1.6), scenario: str = "random",
              difficulty: str = "medium", bands: int = 3, dtype: str = "uint8",
              origin_xy_m: tuple[float, float] | None = None) -> ScenePair:
    """Render a synthetic BEFORE/AFTER pair of an airbase apron with its ground truth.

    Parameters
    ----------
    seed : int
        Seeds everything; the same arguments always give the same arrays.
    size_px : int
        Side of the square tile, pixels (>= 64).
    gsd_m : float
        Pixel size, metres. Objects keep their real size in metres.
    shift_px : (float, float)
        (dx, dy) displacement of AFTER's content, BEFORE pixels, x right and y down:
        ``after[r + dy, c + dx] == before[r, c]`` up to noise and lighting, exactly (sub-pixel).
    scenario : {"random", "hmeimim", "no-change"}
        ``"random"``: 4-8 changed aircraft/launchers, 4-8 static ones, 6-12 vehicles (some moving).
        ``"hmeimim"``: an An-124 appears; three Ka-52 and two S-400 TELs leave; cars move; jets, an
        Il-76, a radar and trucks stay. ``"no-change"``: like random but nothing changes.
    difficulty : {"easy", "medium", "hard"}
        Sensor noise 1, 2, 3 DN (of the 8-bit product); sun turning by about 8, 20, 40 degrees
        and dropping 5, 10, 18; gain within 5, 12, 20 %; more moving vehicles; hard also packs
        objects closer (6 m clearance) and closer in tone to the ground (>= 0.08 reflectance).
    bands : {1, 3, 4}
        Panchromatic, RGB, or RGB + NIR.
    dtype : {"uint8", "uint16"}
        uint16 holds 12-bit data (reflectance 1.0 = 3800 DN).
    origin_xy_m : (float, float), optional
        Top-left corner (easting, northing) in EPSG:32636; default: the tile is centred on Hmeimim
        air base's apron.

    Returns
    -------
    ScenePair

    Notes
    -----
    Both dates are rendered in float reflectance on a canvas padded by at least 64 px (objects
    rasterised with 4 x 4 sub-pixel sampling, so their areas are exact), then blurred by a Gaussian
    PSF (sigma 0.8 px) so the scene is band-limited. AFTER is moved by the Fourier shift theorem
    (an odd-sized canvas: no Nyquist bin), cropped, and given a new gain, offset and haze; both
    get sensor noise (shared mostly by the bands, slightly correlated between pixels) and are
    quantised. Shadows are the silhouette's parts swept from their bottom to their top height
    along the sun's azimuth; they move between the dates, as do those of static objects.
    """
    _check_request(scenario=scenario, difficulty=difficulty, bands=bands, dtype=dtype,
                   size_px=size_px, gsd_m=gsd_m, shift_px=shift_px)
    dx, dy = (float(s) for s in shift_px)
    size_px = int(size_px)
    diff = _DIFFICULTY[difficulty]
    pad_px = 40 + int(math.ceil(max(abs(dx), abs(dy)))) + 24
    rngs = [np.random.default_rng([seed, k]) for k in range(7)]
    layout, suns, buildings, placed = _lay_out(scenario, size_px, gsd_m, diff, rngs)

    ground = _ground(layout, _padded_size(size_px, pad_px), pad_px, gsd_m, 4 if bands == 4 else 3,
                     rngs[2])
    placed = [_ensure_contrast(p, ground, pad_px, gsd_m, diff) for p in placed]
    before_f, after_f = _render_dates(ground, buildings, placed, suns, size_px=size_px,
                                      pad_px=pad_px, gsd_m=gsd_m, shift_px=(dx, dy))
    del ground
    _relight(after_f, rngs[4], diff)
    if bands == 1:
        before_f = before_f.mean(axis=0, keepdims=True)
        after_f = after_f.mean(axis=0, keepdims=True)

    scale = _DN_SCALE[dtype]
    noise_sigma = diff.noise_dn / _DN_SCALE["uint8"]  # DN of the 8-bit product
    before = _quantise(before_f, scale, noise_sigma, rngs[5], dtype)
    after = _quantise(after_f, scale, noise_sigma, rngs[6], dtype)

    if origin_xy_m is None:
        origin_xy_m = hmeimim_origin_xy_m(size_px, gsd_m)
    transform = affine.Affine(gsd_m, 0.0, float(origin_xy_m[0]), 0.0, -gsd_m, float(origin_xy_m[1]))
    objects = tuple(sorted((_truth(p) for p in placed), key=lambda o: o.id))
    return ScenePair(before, after, transform, CRS, (dx, dy), objects)


def _check_request(*, scenario: str, difficulty: str, bands: int, dtype: str, size_px: int,
                   gsd_m: float, shift_px: tuple[float, float]) -> None:
    """Refuse arguments of :func:`make_pair` it cannot render, with a ValueError naming them."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}, got {scenario!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {DIFFICULTIES}, got {difficulty!r}")
    if bands not in (1, 3, 4):
        raise ValueError(f"bands must be 1, 3 or 4, got {bands!r}")
    if dtype not in _DN_SCALE:
        raise ValueError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    if int(size_px) != size_px or size_px < 64:
        raise ValueError(f"size_px must be an integer >= 64, got {size_px!r}")
    if not gsd_m > 0:
        raise ValueError(f"gsd_m must be positive, got {gsd_m!r}")
    dx, dy = (float(s) for s in shift_px)
    if not (math.isfinite(dx) and math.isfinite(dy)):
        raise ValueError(f"shift_px must be finite, got {shift_px!r}")


def _lay_out(scenario: str, size_px: int, gsd_m: float, diff: _Difficulty,
             rngs: list[np.random.Generator]
             ) -> tuple[_Layout, tuple[_Sun, _Sun], list[_Placed], list[_Placed]]:
    """The site's layout, the two dates' suns, its buildings and its other objects.

    Draws from ``rngs[0]`` (layout), ``rngs[3]`` (objects) and ``rngs[4]`` (suns; the AFTER
    date's look draws from it next, in :func:`_relight`).
    """
    axis = (-8.0 if scenario == "hmeimim" else float(rngs[0].uniform(0, 180)))
    layout = _make_layout(size_px, gsd_m, axis, rngs[0])
    suns = _suns(rngs[4], diff)
    # The hand-made Hmeimim layout is spaced for the 6 m minimum clearance at every difficulty.
    placer = _Placer(size_px, gsd_m, layout, suns,
                     6.0 if scenario == "hmeimim" else diff.clearance_m)
    n_buildings = 3 if scenario == "hmeimim" else int(rngs[3].integers(1, 4))
    buildings = _buildings(rngs[3], placer, n_buildings)
    if scenario == "hmeimim":
        placed = _hmeimim_scene(rngs[3], placer, size_px, gsd_m)
    else:
        placed = _random_scene(rngs[3], placer, diff, with_changes=scenario == "random")
    return layout, suns, buildings, placed


def _render_dates(ground: np.ndarray, buildings: list[_Placed], placed: list[_Placed],
                  suns: tuple[_Sun, _Sun], *, size_px: int, pad_px: int, gsd_m: float,
                  shift_px: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """BEFORE and AFTER in float reflectance, cropped from the padded canvas: each with its
    objects under its sun, AFTER moved by ``shift_px`` (dx, dy) before the crop."""
    before_objs = buildings + [p for p in placed if p.change != "appeared"]
    after_objs = buildings + [p for p in placed if p.change != "disappeared"]
    crop = (slice(None), slice(pad_px, pad_px + size_px), slice(pad_px, pad_px + size_px))
    before_f = _render_date(ground, before_objs, suns[0], gsd_m, pad_px, _PSF_SIGMA_PX)[crop]
    after_f = _subpixel_shift(_render_date(ground, after_objs, suns[1], gsd_m, pad_px,
                                           _PSF_SIGMA_PX), *shift_px)[crop]
    return before_f, after_f


def _relight(after_f: np.ndarray, rng: np.random.Generator, diff: _Difficulty) -> None:
    """The AFTER date's look, in place: a new gain and offset per band, and haze that lifts and
    flattens the scene."""
    gain = rng.uniform(1 - diff.gain_range, 1 + diff.gain_range)
    haze = rng.uniform(0.0, diff.haze_max)
    haze_colour = np.array([0.62, 0.66, 0.74, 0.5], np.float32)
    offset = rng.uniform(-0.02, 0.02)
    for b in range(after_f.shape[0]):
        g_b = gain * (1.0 + rng.normal(0, diff.band_jitter))
        o_b = offset + rng.normal(0, 0.004)
        after_f[b] = (after_f[b] * g_b + o_b) * (1.0 - haze) + haze * haze_colour[b]


def _quantise(image: np.ndarray, scale: float, sigma: float, rng: np.random.Generator,
              dtype: str) -> np.ndarray:
    """Add sensor noise and quantise.

    The noise is mostly shared by the bands (pan-sharpened data) and slightly correlated between
    neighbouring pixels (the ground segment's resampling kernels); ``sigma`` is its per-pixel
    standard deviation in reflectance.
    """
    def field() -> np.ndarray:
        white = cv2.GaussianBlur(rng.standard_normal(image.shape[1:], dtype=np.float32), (0, 0),
                                 _NOISE_CORRELATION_PX)
        return white / float(white.std())

    shared = field()
    out = np.empty(image.shape, dtype)
    top = np.iinfo(dtype).max if dtype == "uint8" else 4095
    for b in range(image.shape[0]):
        noisy = (image[b] + sigma * (0.75 * shared + 0.66 * field())) * scale
        out[b] = np.clip(np.rint(noisy), 0, top)
    return out


def truth_changes(pair: ScenePair) -> list[TruthObject]:
    """The changes a perfect detector reports: appeared or disappeared aircraft and launchers."""
    return [o for o in pair.objects if o.change != "static" and o.category != "vehicle"]


def truth_feature_collection(pair: ScenePair) -> dict:
    """The truth changes as an RFC 7946 FeatureCollection (lon/lat), with a ``shift_px`` member.

    Each Feature is the rotated footprint rectangle of one changed aircraft or launcher, with the
    properties of ``detections.geojson`` (id, category, class, change, length_m, width_m, area_m2,
    heading_deg, score) plus ``kind``.
    """
    gsd_m = abs(pair.transform.a)
    to_lonlat = Transformer.from_crs(pair.crs, "EPSG:4326", always_xy=True)
    features = []
    for o in truth_changes(pair):
        corners = footprint_corners_px(o, gsd_m)
        xs, ys = zip(*(pair.transform @ (float(c), float(r)) for c, r in corners))
        lon, lat = to_lonlat.transform(xs, ys)
        ring = orient(Polygon(zip(lon, lat)), sign=1.0).exterior.coords
        coords = [[round(x, 8), round(y, 8)] for x, y in ring]
        if not np.all(np.isfinite(coords)):
            raise ValueError(f"truth object {o.id} does not map to finite lon/lat")
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [coords]},
            "properties": {
                "id": o.id, "category": o.category, "class": o.klass, "change": o.change,
                "length_m": round(o.length_m, 2), "width_m": round(o.width_m, 2),
                "area_m2": round(o.area_m2, 1), "heading_deg": round(o.heading_deg, 1),
                "score": 1.0, "kind": o.kind,
            },
        })
    return {"type": "FeatureCollection", "shift_px": [pair.shift_px[0], pair.shift_px[1]],
            "features": features}


def write_pair(pair: ScenePair, folder, *, before_name: str = "before.tif",
               after_name: str = "after.tif") -> dict[str, Path]:
    """Write BEFORE and AFTER as tiled, deflated GeoTIFFs and the truth as ``truth.geojson``.

    Returns the paths under the keys ``before``, ``after`` and ``truth``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"before": folder / before_name, "after": folder / after_name,
             "truth": folder / "truth.geojson"}
    count, rows, cols = pair.before.shape
    profile = dict(driver="GTiff", width=cols, height=rows, count=count,
                   dtype=pair.before.dtype.name, crs=pair.crs, transform=pair.transform,
                   tiled=True, blockxsize=256, blockysize=256, compress="deflate", predictor=2,
                   zlevel=9, interleave="pixel")
    if count == 3 and pair.before.dtype == np.uint8:
        profile["photometric"] = "RGB"
    names = {1: ["pan"], 3: ["red", "green", "blue"], 4: ["red", "green", "blue", "nir"]}
    for key, image in (("before", pair.before), ("after", pair.after)):
        with rasterio.open(paths[key], "w", **profile) as ds:
            ds.write(image)
            for b, name in enumerate(names.get(count, []), start=1):
                ds.set_band_description(b, name)
            ds.update_tags(SYNTH_DATE=key, SYNTH_SHIFT_PX=f"{pair.shift_px[0]} {pair.shift_px[1]}")
    paths["truth"].write_text(json.dumps(truth_feature_collection(pair), indent=1) + "\n")
    return paths
