"""Typed configuration: built once from YAML, validated, and passed down to every stage.

No other module reads YAML. ``configs/default.yaml`` spells out exactly the defaults below; the
``Field`` descriptions here are where each key is documented. A changed copy of a configuration
comes from :meth:`Config.with_overrides`, which validates it like a file.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    """Reading the two inputs."""

    nodata: float | None = Field(
        None, description="Value to treat as nodata in both inputs when a file declares none "
        "(e.g. 0 for Sentinel-2 subsets). A file's own nodata, mask or alpha always counts.")
    band: int | None = Field(
        None, ge=1, description="1-based band used for co-registration; default: mean of the bands.")
    gsd_m: float | None = Field(
        None, gt=0, description="Pixel size in metres given to plain images without georeference "
        "(JPEG, PNG); their outputs are then in pixel coordinates (detections_px.geojson).")
    max_pixel_size_ratio: float = Field(
        4.0, ge=1, description="Refuse a pair whose pixel sizes differ by more than this factor "
        "(objects would be a few pixels wide in the coarser image).")


class CoregistrationConfig(_Strict):
    """Measuring the residual shift of AFTER against BEFORE: phase correlation of matching
    windows (:mod:`pipeline.coreg`)."""

    enabled: bool = Field(True, description="false: AFTER is only reprojected onto the BEFORE "
                          "grid; no residual shift is measured")
    mode: Literal["global", "local"] = Field(
        "global", description="global: one shift; local: a smooth shift field (relief, lean)")
    window_px: int = Field(512, ge=64, le=4096, description="side of each matching window, pixels")
    grid: int = Field(4, ge=1, le=16, description="windows are laid on a grid x grid pattern")
    max_shift_px: float = Field(32.0, gt=0, description="largest residual shift searched, BEFORE pixels")
    min_valid_fraction: float = Field(0.9, gt=0, le=1, description="a window needs this share of valid pixels")
    inlier_tolerance_px: float = Field(0.5, gt=0, description="windows within this of the median "
                                       "form the consensus")
    agreement_px: float = Field(3.0, gt=0, description="windows within this of the consensus "
                                "agree with it (quality); other dates differ locally by relief, "
                                "lean and moved shadows")
    min_quality: float = Field(0.2, ge=0, le=1, description="below this the windows' consensus is "
                               "refused (exit 2, unless --allow-unregistered) when the ground "
                               "plane does not hold either; the ground plane's own gate is "
                               "ground_min_windows and ground_min_share")
    refine_iterations: int = Field(3, ge=0, le=10, description="times a window's shift is "
                                   "measured again after resampling AFTER by the estimate so far "
                                   "(a sub-pixel peak is least biased near zero)")
    local_grid_px: int = Field(256, ge=32, description="local mode: spacing of the field's nodes")
    local_window_px: int = Field(256, ge=64, le=2048, description="local mode: window measured "
                                 "at each node")
    local_max_nodes: int = Field(32, ge=2, le=256, description="local mode: at most this many "
                                 "nodes per side")
    local_max_deviation_px: float = Field(3.0, gt=0, description="local mode: nodes further "
                                          "from the global shift are rejected")
    ground: bool = Field(True, description="also measure the ground plane in many small windows; "
                         "where the windows' consensus is weak, split or off the ground (tall "
                         "structures seen from other angles lean differently), use the ground's "
                         "shift, and refuse a pair only when neither holds")
    ground_first: bool = Field(False, description="measure the ground plane on every pair and "
                               "prefer it where the windows' consensus is split or lies off it; "
                               "false: only where the consensus' quality is below min_quality "
                               "(the verifier was trained on consensus shifts)")
    ground_window_px: int = Field(160, ge=64, le=1024, description="ground plane: side of each "
                                  "small window, pixels")
    ground_grid: int = Field(12, ge=3, le=32, description="ground plane: small windows on a grid "
                             "x grid pattern over the overlap")
    ground_tolerance_px: float = Field(1.5, gt=0, description="ground plane: windows within this "
                                       "of the ground's model lie on the ground")
    ground_min_windows: int = Field(12, ge=3, description="ground plane: it holds when at least "
                                    "this many small windows lie on it...")
    ground_min_share: float = Field(0.2, gt=0, le=1, description="...and this share of those "
                                    "that matched")
    ground_max_slope: float = Field(0.01, ge=0, le=0.1, description="ground plane: largest drift "
                                    "of its displacement across the scene, pixels per pixel "
                                    "(relief, viewing geometry)")


class RadiometryConfig(_Strict):
    """Mapping AFTER's values onto BEFORE's (:mod:`pipeline.change.radiometry`)."""

    method: Literal["linear-quantile", "none"] = Field(
        "linear-quantile", description="linear-quantile: per band, a line fitted through 50 "
        "paired quantiles of the two images; none: AFTER's values as they are")
    quantiles: tuple[float, float] = Field((0.02, 0.98), description="[low, high] range of the "
                                           "quantiles paired for the fit")
    level_m: float = Field(40.0, ge=0, description="spacing (metres) of the nodes of a smooth "
                           "field of local levels also subtracted: what the linear map leaves of "
                           "haze, thin cloud and the seasons varies over a scene. Each node's "
                           "level is the median difference over the 2 x 2 cells around it (80 m "
                           "by default: about the largest aircraft, which covers well under half "
                           "of them); 0 = one level for the scene")


class DifferenceConfig(_Strict):
    """The change mask: a per-pixel change score in units of the local noise, seeds above one
    threshold grown into pixels above a lower one, cleaned by morphology into blobs
    (:mod:`pipeline.change.difference`)."""

    smoothing_px: float = Field(0.8, ge=0, description="Gaussian sigma applied to both images, pixels")
    tolerance_px: int = Field(3, ge=0, le=6, description="misregistration tolerated per pixel "
                              "(neighbourhood radius, pixels): real pairs of other dates differ "
                              "locally by 1-2 m (lean, relief); 3 px is what the Airbus pairs "
                              "were measured with (docs/accuracy-log.md)")
    threshold_sigma: float = Field(5.0, gt=0, description="seed threshold, in noise standard deviations")
    low_threshold_sigma: float = Field(3.0, gt=0, description="seeds grow into pixels above this "
                                       "(noise standard deviations), up to grow_m far")
    blob_sigma: float = Field(5.0, gt=0, description="a blob's mean change score must reach this "
                              "(noise standard deviations): a real object changes strongly over "
                              "its whole body, soil, haze and vehicles' speckle do not")
    grow_m: float = Field(3.0, ge=0, description="how far seeds grow, metres")
    min_contrast: float = Field(0.12, ge=0, le=1, description="a seed must also differ by this share of "
                                "BEFORE's 2-98 % value range (ignores faint roof and haze changes)")
    closing_m: float = Field(1.5, ge=0, description="morphological closing radius joining pieces of one object")
    opening_m: float = Field(0.5, ge=0, description="morphological opening radius removing specks")
    min_area_m2: float = Field(6.0, ge=0, description="blobs smaller than this are never reported")
    min_pixels: int = Field(12, ge=1, description="a blob must cover this many pixels to be measured "
                            "(at coarse resolutions no class can be told apart)")
    local_noise_m: float = Field(40.0, ge=0, le=200, description="half side (metres) of the "
                                 "square whose noise is the unit of each pixel's score; 0 = the "
                                 "scene's noise. A white aircraft on clean concrete then stands "
                                 "out where a change of season makes the fields noisy; about half "
                                 "the largest class, so that the ground outweighs any one object")
    local_noise_quantile: float = Field(0.5, gt=0, lt=1, description="quantile of the noise "
                                        "level over that square, against the scene's same "
                                        "quantile (robust to changes)")
    local_noise_limits: tuple[float, float] = Field((0.5, 3.0), description="the local unit "
                                                    "stays within these multiples of the scene's")
    structure_unit: float = Field(4.0, ge=0, description="unit of the structure score (how far "
                                  "one image's gradient exceeds the other's within tolerance_px), "
                                  "in multiples of the scene's noise of the gradient difference: "
                                  "an outline that one image has and the other lacks seeds and "
                                  "grows the mask like a change of level, so an aircraft survives "
                                  "where a scene-wide change of level hides its body; 0 = off")
    screen: float = Field(0.0, ge=0, le=1, description="the cascade's screen (off by "
                          "default: slower than no screen on the 16000 px speed pair, and no "
                          "faster on the real pairs, docs/cascade.md): compute the mask only "
                          "around the 2 m cells whose mean difference (or gradient) reaches "
                          "this share of the least a seed needs, e.g. 0.75; the same mask "
                          "wherever the screen keeps every seed. 0: every pixel")
    nodata_margin_px: int = Field(8, ge=0, le=256, description="pixels this close to nodata never count "
                                  "(resampling and compression blur the edge of the data)")

    @model_validator(mode="after")
    def _low_below_high(self):
        if self.low_threshold_sigma > self.threshold_sigma:
            raise ValueError("low_threshold_sigma must not exceed threshold_sigma")
        lo, hi = self.local_noise_limits
        if not 0 < lo <= 1 <= hi:
            raise ValueError("local_noise_limits must be [low, high] with 0 < low <= 1 <= high")
        return self


class FootprintClass(_Strict):
    """A footprint class: the sizes of an object's minimum-area rectangle (length >= width). Of
    the classes that contain a blob, one that refines another (most of its ranges lie within the
    other's: combat-jet within light-aircraft) wins over it; of the rest, the one whose centre
    the blob lies nearest (:func:`pipeline.detect.classify.footprint_class`). Blobs that fit
    none (cars, small trucks, buildings) are not reported."""

    name: str = Field(description="unique name, reported as the detection's class")
    category: str = Field(description="reported category (aircraft, launcher...); counts are "
                          "per category and change")
    length_m: tuple[float, float] = Field(description="[min, max] of the long side, metres")
    width_m: tuple[float, float] = Field(description="[min, max] of the short side, metres")
    aspect: tuple[float, float] | None = Field(
        None, description="[min, max] of length / width, when the class has a typical shape")

    @model_validator(mode="after")
    def _ranges(self):
        for key in ("length_m", "width_m") + (("aspect",) if self.aspect else ()):
            lo, hi = getattr(self, key)
            if not (0 < lo < hi):
                raise ValueError(f"{key} must be [min, max] with 0 < min < max, got [{lo}, {hi}]")
        return self


def _default_classes() -> list[FootprintClass]:
    c = FootprintClass
    return [
        # Helicopters: sized by fuselage when the rotor does not resolve (Ka-52 ~14 x 7 m with stub
        # wings, Mi-8 ~18 x 4.5 m with tanks) up to a resolved rotor disc (Mi-8: 25 x 21 m).
        c(name="helicopter", category="aircraft", length_m=(10.0, 26.0), width_m=(5.0, 22.0)),
        # Combat jets: Su-24/34/35 about 21-24 m long, span 10 m (wings swept) to 18 m (spread);
        # never square (a helicopter's rotor disc is).
        c(name="combat-jet", category="aircraft", length_m=(13.0, 25.0), width_m=(8.0, 19.0),
          aspect=(1.2, 2.6)),
        # Business jets and light/medium airliners: 10-40 m.
        c(name="light-aircraft", category="aircraft", length_m=(10.0, 40.0), width_m=(10.0, 40.0)),
        # Il-76 (47 x 50 m), A321 / Tu-154 (about 45 x 35 m)
        c(name="medium-transport", category="aircraft", length_m=(30.0, 58.0), width_m=(25.0, 58.0)),
        # An-124 (69 x 73 m), Il-96, B747: up to 80 m
        c(name="large-transport", category="aircraft", length_m=(50.0, 85.0), width_m=(45.0, 85.0)),
        # Self-propelled TELs, radars and SAM vehicles (9-16 m) and towed semitrailer combinations
        # such as the S-400's 5P85 (up to about 22 m); 2.5-4 m wide, measured up to 5 m with the
        # sensor's blur and a sliver of shadow. Cars and small trucks (under 8 m, measured under 9 m) fall below.
        c(name="sam-launcher", category="launcher", length_m=(9.0, 24.0), width_m=(2.2, 5.0)),
    ]


class ProcessingConfig(_Strict):
    """How the work is cut into blocks and threads."""

    block_px: int = Field(1024, ge=128, le=16384, description="side of a processing block, "
                          "pixels (memory grows with its square)")
    threads: int = Field(0, ge=0, description="threads for GDAL/OpenCV; 0 = all cores")
    pixel_m: float = Field(0.0, ge=0, description="analysis pixel, metres: an input whose "
                           "pixels are finer is read averaged over whole pixels up to it "
                           "(2 x 2 of 0.5 m for 1.0); every stage then works on those pixels, "
                           "parameters given in pixels too, and outputs stay on the BEFORE "
                           "grid; the smoothing keeps its size in metres. Not the default: "
                           "at 1.0 on 0.5 m pairs the run takes 0.6 of the time, and the "
                           "aircraft's F1 on airports held out fell from 0.941 to 0.928 "
                           "(measured while one_per_object kept the larger of two overlapping "
                           "candidates; docs/cascade.md). 0: the inputs' own")


class MovesConfig(_Strict):
    """Linking a ``disappeared`` and an ``appeared`` detection that are one object that moved."""

    enabled: bool = Field(True, description="false: a moved object stays one disappeared and "
                          "one appeared detection, unlinked")
    max_distance_m: float = Field(300.0, gt=0, description="farthest move linked, metres")
    size_tolerance: float = Field(0.15, ge=0, le=1, description="lengths and widths agree within "
                                  "this share; the class must be the same, and each must be the "
                                  "other's only candidate, or nothing is linked")


class VerifierConfig(_Strict):
    """The learned verifier of aircraft candidates (:mod:`pipeline.detect.verifier`), which also judges
    the aircraft a classical rule would drop or no class fits; off: the classical rules alone."""

    enabled: bool = Field(True, description="false: the classical rules alone")
    min_sigma: float = Field(3.0, gt=0, description="with the verifier on, blobs whose mean "
                             "change score reaches this (instead of difference.blob_sigma) are "
                             "classified, and the verifier judges the aircraft among them")
    threshold: float | None = Field(None, ge=0, le=1, description="least probability kept; "
                                    "null = the threshold stored with the model (chosen on "
                                    "held-out airports by benchmarks/verifier.py train)")
    model: str | None = Field(None, description="model JSON; null = the one in the package "
                              "(pipeline/detect/verifier_model.json)")


class DetectorConfig(_Strict):
    """The per-image aircraft detector (:mod:`pipeline.detect.aircraft`) and its fusion with the
    difference (:mod:`pipeline.detect.fusion`): an aircraft one image shows and the other does
    not is a candidate too, and every aircraft candidate is weighed with the detector's score at
    its place in each image. Off: the difference alone, and a verifier that reads the
    detector's evidence is not used either (the classical path)."""

    enabled: bool = Field(True, description="false: the difference alone (and the classical "
                          "rules, when the verifier reads the detector's evidence)")
    model: str | None = Field(None, description="ONNX model; null = the one in the package "
                              "(pipeline/detect/aircraft_detector.onnx)")
    resolution_m: float = Field(1.0, gt=0, description="pixel size the images are resampled to "
                                "for the detector (it was trained and measured best at about 1 m)")
    threshold: float | None = Field(None, gt=0, lt=1, description="least score of a sighting "
                                    "that makes a candidate; null = the model's own")
    partner_share: float = Field(0.5, gt=0, le=1, description="a sighting in the other image "
                                 "scoring at least this share of the threshold, near enough and "
                                 "of a like size, is the same aircraft (no candidate)")
    size_tolerance: float = Field(0.25, ge=0, description="two sightings whose box sides differ "
                                  "by more than this share are different aircraft (one replaced "
                                  "by another on the same stand)")
    where: Literal["scene", "changes"] = Field("scene", description="scene: the detector looks "
                                              "at every block whole; changes: only near the "
                                              "change mask, within half the largest footprint "
                                              "and 16 m of it")
    max_pixel_m: float = Field(2.0, gt=0, description="on imagery with coarser pixels the "
                               "detector is not run and the run goes on as with enabled false "
                               "(report.json says so): a 12 m aircraft is then under 6 pixels, "
                               "and the network, trained on 0.5-1.5 m, would see an upsampled "
                               "blur at many times the cost")


class SplitConfig(_Strict):
    """Cutting a blob that joins several objects at narrow necks (:func:`pipeline.detect.blobs.split_at_necks`):
    aircraft parked wingtip to wingtip, or an aircraft and its neighbour's moved shadow."""

    enabled: bool = Field(True, description="false: a blob is classified whole")
    core_width_m: float | None = Field(None, gt=0, description="an object's core is where a "
                                       "disc this wide fits in the blob; null = the least width "
                                       "of the narrowest aircraft class (5 m by default)")
    min_separation_m: float | None = Field(None, gt=0, description="cores closer than this are "
                                           "one object's; null = the same least width")
    max_overlap: float = Field(0.2, gt=0, le=1, description="of two detections of one category "
                               "and change whose rectangles overlap by more than this share of "
                               "the smaller's area, one is reported (two pieces of one object): "
                               "the one the detector found, else the larger; 1 = keep both")
    grow_m: float = Field(8.0, ge=0, description="with the verifier on, an aircraft candidate "
                          "is also measured as each image shows the object within this far of "
                          "its blob (the pixels that stand out from the ground around it, joined "
                          "to it, less than half of them standing out in the other image too), "
                          "for the verifier to judge: a mask cut into pieces where the other "
                          "image holds something as bright is one candidate again; 0 = off")


class OutputConfig(_Strict):
    """The pictures of a pair's report."""

    overlay_max_px: int = Field(2000, ge=256, description="longest side of overlay.png, pixels")
    chip_m: float = Field(100.0, gt=0, description="side of the before/after chips in report.html, metres")


class StacConfig(_Strict):
    """Batches read from STAC items (``--stac``): how items make sites, which asset is the image."""

    group_by: str | None = Field(None, min_length=1, description="the item property naming its "
                                 "site (e.g. site); 'footprint': items whose images overlap are "
                                 "one site; null: all items must be of one site")
    asset: str | None = Field(None, min_length=1, description="key of the image asset; null: "
                              "the item's only asset with role data, else with role visual")


class Zone(_Strict):
    """A named area of the site (e.g. ``apron``, ``sam-site``) for counts per zone."""

    name: str = Field(min_length=1, description="unique name, used in timeline.csv")
    polygon_lonlat: list[tuple[float, float]] = Field(
        min_length=3, description="outline as [lon, lat] vertices, degrees (EPSG:4326)")

    @model_validator(mode="after")
    def _valid_polygon(self):
        from shapely.geometry import Polygon

        for lon, lat in self.polygon_lonlat:
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"vertex [{lon}, {lat}] is not a lon/lat position in degrees")
        poly = Polygon(self.polygon_lonlat)
        if not poly.is_valid or poly.area == 0:
            raise ValueError("polygon_lonlat must outline a simple polygon (no self-crossing)")
        return self


#: the category of a launcher-sized detection outside every launcher zone
OUTSIDE_LAUNCHER_ZONES = "vehicle"

# a ring of lon/lat vertices, degrees; a polygon is its outer ring, then its holes
Ring = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ZonesFile:
    """A GeoJSON file of lon/lat polygons, read when the configuration is validated (a bad
    file is refused before any work); written back as its path."""

    path: str
    polygons: tuple[tuple[Ring, ...], ...]


def _zone_error(text: str) -> PydanticCustomError:
    return PydanticCustomError("launcher_zones", "{text}", {"text": text})


def _lonlat_ring(points, where: str) -> Ring:
    """``points`` as a ring of (lon, lat) floats, refused unless each is a position in degrees."""
    try:
        ring = tuple((float(p[0]), float(p[1])) for p in points)
    except (TypeError, ValueError, IndexError):
        raise _zone_error(f"{where}: a ring must be a list of [lon, lat] positions") from None
    for lon, lat in ring:
        if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180
                and -90 <= lat <= 90):
            raise _zone_error(f"{where}: vertex [{lon}, {lat}] is not a lon/lat position in "
                              "degrees (GeoJSON is EPSG:4326)")
    return ring


def _checked_polygon(rings: tuple[Ring, ...], where: str) -> tuple[Ring, ...]:
    """``rings`` (outer ring, holes) when they outline a valid polygon, else an error."""
    from shapely.geometry import Polygon

    if not rings or len(rings[0]) < 3:
        raise _zone_error(f"{where}: a polygon needs at least 3 vertices")
    poly = Polygon(rings[0], rings[1:])
    if not poly.is_valid or poly.area == 0:
        raise _zone_error(f"{where}: not a simple polygon (self-crossing or of no area)")
    return rings


def _file_polygons(data: Any, where: str) -> list[tuple[Ring, ...]]:
    """The polygons of a GeoJSON FeatureCollection, Feature, Polygon or MultiPolygon."""
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise _zone_error(f"{where}: a FeatureCollection without a list of features")
        return [p for i, f in enumerate(features) for p in _file_polygons(f, f"{where}: feature {i}")]
    if kind == "Feature":
        return _file_polygons(data.get("geometry"), where)
    if kind == "Polygon":
        parts = [data.get("coordinates")]
    elif kind == "MultiPolygon":
        parts = data.get("coordinates")
    else:
        raise _zone_error(f"{where}: a {kind or type(data).__name__}, not a Polygon or "
                          "MultiPolygon (nor a Feature or FeatureCollection of them)")
    if not isinstance(parts, list) or not all(isinstance(p, list) and p for p in parts):
        raise _zone_error(f"{where}: {kind} coordinates must be lists of rings")
    return [_checked_polygon(tuple(_lonlat_ring(r, where) for r in p), where) for p in parts]


def _read_zones_file(value: Any) -> Any:
    """A path (str) as the :class:`ZonesFile` it names, read and checked now."""
    if value is None or isinstance(value, ZonesFile):
        return value
    if not isinstance(value, (str, Path)):
        raise _zone_error("must be the path of a GeoJSON file")
    path = Path(value)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _zone_error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _zone_error(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err})"
                          ) from None
    except json.JSONDecodeError as err:
        raise _zone_error(f"{path}: not valid GeoJSON ({err.msg}, line {err.lineno})") from None
    polygons = _file_polygons(data, str(path))
    if not polygons:
        raise _zone_error(f"{path}: holds no polygon")
    return ZonesFile(str(path), tuple(polygons))


def _inline_polygons(value: Any) -> Any:
    """Inline outlines, each a list of [lon, lat] vertices, checked as lon/lat polygons."""
    if not isinstance(value, (list, tuple)):
        return value  # the type check names it
    return [_checked_polygon((_lonlat_ring(p, f"polygon {i}"),), f"polygon {i}")[0]
            if isinstance(p, (list, tuple)) else p for i, p in enumerate(value)]


class LauncherZonesConfig(_Strict):
    """Where launchers can be. At an airport every launcher-sized change is a bus, a tug or a
    truck: with ``enabled``, a detection of the ``launcher`` category whose centre lies outside
    every zone is reported as a ``vehicle`` (counted apart); inside one it stays a launcher.
    Off (the default): launcher-sized detections are launchers everywhere."""

    enabled: bool = Field(False, description="true: launcher-sized detections outside every "
                          "zone below are vehicles (with no zone: all of them, e.g. a civil "
                          "airport); false: launchers everywhere, and no zone may be given")
    polygons_lonlat: Annotated[list[list[tuple[float, float]]], BeforeValidator(_inline_polygons)
                               ] = Field(default_factory=list, description="launcher sites "
                                         "given inline: outlines of [lon, lat] vertices, degrees "
                                         "(EPSG:4326)")
    file: Annotated[ZonesFile | None, BeforeValidator(_read_zones_file),
                    PlainSerializer(lambda f: f and f.path, return_type=str | None)] = Field(
        None, description="launcher sites as a GeoJSON file of Polygon or MultiPolygon "
        "features in lon/lat (RFC 7946), e.g. drawn in QGIS; read when the configuration is "
        "loaded, a relative path from the working directory")

    @model_validator(mode="after")
    def _zones_only_when_enabled(self):
        if not self.enabled and (self.polygons_lonlat or self.file is not None):
            raise _zone_error("zones are given but enabled is false (set enabled: true)")
        return self

    def polygons(self) -> list:
        """Every zone, inline and from the file, as shapely Polygons in lon/lat."""
        from shapely.geometry import Polygon

        rings = [(tuple(p),) for p in self.polygons_lonlat]
        rings += list(self.file.polygons) if self.file is not None else []
        return [Polygon(r[0], r[1:]) for r in rings]


class Config(_Strict):
    """The whole configuration: one section per stage of the pipeline, plus the footprint
    classes, the least overlap and the zones. Build it with :func:`load_config` or
    :func:`config_from_mapping`, change it with :meth:`with_overrides`."""

    input: InputConfig = InputConfig()
    coregistration: CoregistrationConfig = CoregistrationConfig()
    radiometry: RadiometryConfig = RadiometryConfig()
    difference: DifferenceConfig = DifferenceConfig()
    classes: list[FootprintClass] = Field(default_factory=_default_classes, description="the "
                                          "footprint classes a blob is matched against")
    launcher_zones: LauncherZonesConfig = LauncherZonesConfig()
    min_overlap: float = Field(0.05, ge=0, le=1, description="least share of BEFORE covered by valid AFTER")
    moves: MovesConfig = MovesConfig()
    verifier: VerifierConfig = VerifierConfig()
    detector: DetectorConfig = DetectorConfig()
    split: SplitConfig = SplitConfig()
    processing: ProcessingConfig = ProcessingConfig()
    output: OutputConfig = OutputConfig()
    zones: list[Zone] = Field(default_factory=list, description="optional named lon/lat "
                              "polygons; batch timelines count detections per zone")
    stac: StacConfig = StacConfig()

    @model_validator(mode="after")
    def _unique_classes(self):
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError("class names must be unique")
        if not names:
            raise ValueError("at least one footprint class is needed")
        zones = [z.name for z in self.zones]
        if len(set(zones)) != len(zones):
            raise ValueError("zone names must be unique")
        return self

    @property
    def categories(self) -> list[str]:
        """Every category a detection can have, sorted: the classes' and, with launcher zones,
        the vehicles outside them."""
        cats = {c.category for c in self.classes}
        if self.launcher_zones.enabled and "launcher" in cats:
            cats.add(OUTSIDE_LAUNCHER_ZONES)
        return sorted(cats)

    @property
    def max_footprint_m(self) -> float:
        return max(c.length_m[1] for c in self.classes)

    @property
    def narrowest_aircraft_m(self) -> float:
        """Least width of the narrowest aircraft class (any class when none is an aircraft)."""
        aircraft = [c for c in self.classes if c.category == "aircraft"] or self.classes
        return min(c.width_m[0] for c in aircraft)

    def digest(self) -> str:
        """A short hash of the effective configuration (for resume state and reports).

        ``stac`` is left out: how a batch finds its pairs changes no pair's result (and the
        pairs of batches run before that section existed stay complete)."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"stac"}), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def on_averaged_pixels(self, factor: int) -> Config:
        """This config for pixels averaged over ``factor`` x ``factor`` (``processing.pixel_m``):
        the images' smoothing keeps its sigma in metres, as the averaging smooths them already
        (at twice the sigma in metres the sample pair's launchers measured 1-2 m too wide and
        long, one as a helicopter, the other lost). Other parameters in pixels are kept."""
        if factor == 1:
            return self
        return self.with_overrides(
            {"difference": {"smoothing_px": self.difference.smoothing_px / factor}})

    def with_overrides(self, overrides: Mapping[str, Any], *, source: str | None = None
                       ) -> Config:
        """A copy with ``overrides`` merged in, validated as a configuration file is.

        Parameters
        ----------
        overrides : mapping
            Nested like the YAML file: ``{"input": {"nodata": 0}, "processing": {"threads": 2}}``.
            Mappings merge key by key into the sections; any other value (a number, a list such
            as ``classes``) replaces the value it names.
        source : str, optional
            Where the overrides come from (a file, a command-line option), named first in an
            error's message.

        Returns
        -------
        Config
            A new configuration; this one is left as it is.

        Raises
        ------
        ConfigError
            An unknown key or a bad value; its ``key`` names it (``"processing.threads"``).

        Examples
        --------
        >>> Config().with_overrides({"processing": {"threads": 2}}).processing.threads
        2
        """
        if not isinstance(overrides, Mapping):
            raise ConfigError(_prefixed(source, "overrides must be a mapping of keys"))
        return _validated(_merged(self.model_dump(), overrides), source)


def _merged(base: dict, overrides: Mapping) -> dict:
    """``base`` with ``overrides`` merged in: mappings key by key, other values replaced."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _prefixed(source: str | None, text: str) -> str:
    return f"{source}: {text}" if source else text


def _validated(data: dict, source: str | None, path: str | Path | None = None) -> Config:
    """``Config.model_validate``, its first error as a :class:`ConfigError` naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or None
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(_prefixed(source, f"{key or '(top level)'}: {msg}"), key=key,
                          path=path) from None


def config_from_mapping(data: dict | None, source: str = "<config>") -> Config:
    """Build a :class:`Config` from a plain mapping, raising :class:`ConfigError` naming the key."""
    return _from_mapping(data, source)


def _from_mapping(data: dict | None, source: str, path: str | Path | None = None) -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys", path=path)
    return _validated(data, source, path)


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a YAML configuration; ``None`` gives the defaults.

    Raises
    ------
    ConfigError
        The file is missing, unreadable or not YAML (``path`` names it), or holds an unknown key
        or a bad value (``key`` names it too).
    """
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})", path=path) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})",
                          path=path) from None
    return _from_mapping(data, str(path), path)
