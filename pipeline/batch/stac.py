"""STAC in: a batch's pairs from STAC items, as providers and archives deliver imagery.

Reads an ItemCollection (or one Item, or a folder of item files) with pystac, picks each item's
image asset, checks that it is a local raster, groups the items into sites and pairs each
acquisition of a site with the previous one (:func:`stac_jobs`). The acquisitions travel with
the pairs (:class:`Acquisition`) into report.json, the pairs' STAC items and the batch's index.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InputError, UnreadableInputError
from .runner import PairJob, _safe

log = logging.getLogger(__name__)

#: the view extension's angles carried into the report, degrees
VIEW_FIELDS = ("view:sun_azimuth", "view:sun_elevation", "view:off_nadir")
#: asset roles searched, in order, when no asset key is given
IMAGE_ROLES = ("data", "visual")
#: the value of ``group_by`` that groups items by their overlapping footprints
FOOTPRINT = "footprint"
_RASTER_TYPES = ("image/tiff", "image/jp2", "application/x-vrt", "application/x-hdf",
                 "image/vnd.", "application/x-erdas-hfa")


@dataclass(frozen=True)
class Acquisition:
    """One STAC item as a pair sees it: which item, its image and when and how it was taken.

    ``item_href`` is where the item itself lives (its file, or its ``self`` link; None for an
    item of an ItemCollection without one), ``source`` the file it was read from. ``datetime``
    is ISO 8601 in UTC; the angles (degrees) are None where the item lacks them.
    """

    item_id: str
    item_href: str | None
    source: str
    image: Path
    asset: str
    datetime: str
    site: str | None = None
    sun_azimuth: float | None = None
    sun_elevation: float | None = None
    off_nadir: float | None = None
    platform: str | None = None

    def as_dict(self) -> dict:
        """The fields report.json and the result's STAC item carry (STAC's own names)."""
        return {"item": self.item_id, "href": self.item_href, "source": self.source,
                "asset": self.asset,
                "datetime": self.datetime, "site": self.site, "platform": self.platform,
                "view:sun_azimuth": self.sun_azimuth, "view:sun_elevation": self.sun_elevation,
                "view:off_nadir": self.off_nadir}


def stac_jobs(source: str | Path, *, group_by: str | None = None,
              asset: str | None = None) -> list[PairJob]:
    """The pairs of a dated series per site, read from STAC items.

    Parameters
    ----------
    source : path
        An ItemCollection (a GeoJSON FeatureCollection of items), one Item, or a folder of item
        files (``*.json``, searched recursively; catalogs and collections in it are skipped).
    group_by : str, optional
        The item property naming each item's site (e.g. ``site``); ``"footprint"``: items whose
        images overlap (their rasters' bounds), directly or through others, are one site.
        None: the items must be of one site (their images all connected so), else an error.
    asset : str, optional
        The key of the image asset; None: the item's only asset with role ``data``, else its
        only asset with role ``visual``.

    Returns
    -------
    list of PairJob
        Per site, in datetime order, each acquisition against the previous one; names
        ``<before item>_<after item>`` (``<site>_...`` when grouped), dates the items'
        datetimes, extras ``site`` (when grouped), ``before_item`` and ``after_item``.

    Raises
    ------
    UnreadableInputError
        The source, or an item's image, is missing.
    InputError
        A file is no STAC item, an item lacks a datetime, an image asset or the grouping
        property, its image is not a raster, or the items are of several sites and nothing
        groups them; the message names the file and the item.
    """
    source = Path(source)
    items = [_acquisition(d, f, alone=alone, group_by=group_by, asset=asset)
             for d, f, alone in _item_dicts(source)]
    seen: dict[str, Acquisition] = {}
    for acq in items:
        if acq.item_id in seen:
            raise InputError(f"{acq.source}: item '{acq.item_id}' is listed twice "
                             f"(also in {seen[acq.item_id].source})", path=acq.source)
        seen[acq.item_id] = acq
    sites = _sites(items, group_by, source)
    jobs = []
    for site, members in sites.items():
        members = sorted(members, key=lambda a: a.datetime)
        for a, b in pairwise(members):
            if a.datetime == b.datetime:
                raise InputError(f"{source}: items '{a.item_id}' and '{b.item_id}' have the same "
                                 f"datetime {a.datetime}; which is BEFORE?", path=source)
        if len(members) < 2:
            log.warning("%s: site %s has one item (%s): nothing to compare it with yet", source,
                        site, members[0].item_id)
            continue
        for a, b in pairwise(members):
            name = _safe(f"{a.item_id}_{b.item_id}" if site is None
                         else f"{site}_{a.item_id}_{b.item_id}")
            extra = {"site": site} if site is not None else {}
            jobs.append(PairJob(name, a.image, b.image, before_date=a.datetime,
                                after_date=b.datetime,
                                extra={**extra, "before_item": a.item_id, "after_item": b.item_id},
                                before_acquisition=a, after_acquisition=b))
    if not jobs:
        raise InputError(f"{source}: no site has two items to compare", path=source)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{source}: two pairs would share the folder name '{dup}' (item ids "
                         "alike once made into folder names)", path=source)
    return jobs


def _item_dicts(source: Path) -> list[tuple[dict, Path, bool]]:
    """Every item of ``source`` as a dict, with the file it was read from and whether that
    file holds it alone (an item file, not an ItemCollection)."""
    if source.is_dir():
        files = sorted(p for p in source.rglob("*.json") if not p.name.startswith("."))
        docs = [(_read_json(f), f, True) for f in files]
    elif source.is_file():
        docs = [(_read_json(source), source, False)]
    else:
        raise UnreadableInputError(f"{source}: STAC items not found", path=source)
    found = [(d, f, isinstance(doc, dict) and doc.get("type") == "Feature")
             for doc, f, skip in docs for d in _items_of(doc, f, skip_others=skip)]
    if not found:
        raise InputError(f"{source}: holds no STAC item", path=source)
    return found


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise UnreadableInputError(f"{path}: cannot be read ({err.strerror or err})",
                                   path=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a STAC item or ItemCollection (not valid JSON: {err})",
                         path=path) from None


def _items_of(doc, path: Path, *, skip_others: bool) -> list[dict]:
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind == "Feature":
        return [doc]
    if kind == "FeatureCollection" and isinstance(doc.get("features"), list):
        for k, feat in enumerate(doc["features"]):
            if not isinstance(feat, dict) or feat.get("type") != "Feature":
                raise InputError(f"{path}: feature {k} is not a STAC item", path=path)
        return doc["features"]
    if skip_others:  # a catalog or collection beside the items
        return []
    raise InputError(f"{path}: not a STAC item or ItemCollection (type {kind!r})", path=path)


def _acquisition(doc: dict, path: Path, *, alone: bool, group_by: str | None,
                 asset: str | None) -> Acquisition:
    import pystac
    import rasterio
    import rasterio.errors

    where = f"{path}: item '{doc.get('id', '?')}'"
    props = doc.get("properties") if isinstance(doc.get("properties"), dict) else {}
    stamp = props.get("datetime") or props.get("start_datetime")
    if not stamp:
        raise InputError(f"{where} has no datetime (properties.datetime or start_datetime)",
                         path=path)
    try:
        when = pystac.utils.str_to_datetime(stamp)
    except (ValueError, TypeError):
        raise InputError(f"{where}: datetime {stamp!r} is not an RFC 3339 date and time",
                         path=path) from None
    try:
        item = pystac.Item.from_dict(doc, migrate=False)
    except (KeyError, ValueError, TypeError, AttributeError, pystac.STACError) as err:
        raise InputError(f"{where} is not a STAC item ({type(err).__name__}: {err})",
                         path=path) from None
    key = _image_asset(item, asset, where, path)
    image = _local_path(item.assets[key].href, path, where, key)
    media = item.assets[key].media_type
    if media and not media.startswith(_RASTER_TYPES):
        raise InputError(f"{where}: asset '{key}' is {media}, not a raster", path=path)
    if not image.exists():
        raise UnreadableInputError(f"{where}: asset '{key}' file {image} not found", path=path)
    try:
        with rasterio.open(image):
            pass
    except rasterio.errors.RasterioError:
        raise InputError(f"{where}: asset '{key}' ({image}) is not a raster GDAL can read",
                         path=path) from None
    site = None
    if group_by and group_by != FOOTPRINT:
        if props.get(group_by) in (None, ""):
            raise InputError(f"{where} has no property '{group_by}' to group the items by "
                             "(--group-by / stac.group_by)", path=path)
        site = str(props[group_by])
    utc = when.astimezone(dt.timezone.utc) if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    return Acquisition(item.id, _item_href(doc, path, alone), str(path), image, key, utc.isoformat(), site,
                       *(_angle(props.get(k)) for k in VIEW_FIELDS),
                       platform=props.get("platform") if isinstance(props.get("platform"), str)
                       else None)


def _item_href(doc: dict, path: Path, alone: bool) -> str | None:
    """Where the item lives: its ``self`` link, else the file when it holds this item alone."""
    for link in doc.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "self" and link.get("href"):
            return str(link["href"])
    return str(path.absolute()) if alone else None


def _image_asset(item, asset: str | None, where: str, path: Path) -> str:
    """The key of the image asset: ``asset``, else the only one with role data (or visual)."""
    if asset is not None:
        if asset not in item.assets:
            raise InputError(f"{where} has no asset '{asset}' (it has: "
                             f"{', '.join(item.assets) or 'none'})", path=path)
        return asset
    for role in IMAGE_ROLES:
        keys = [k for k, a in item.assets.items() if role in (a.roles or [])]
        if len(keys) == 1:
            return keys[0]
        if len(keys) > 1:
            raise InputError(f"{where} has several assets with role '{role}' "
                             f"({', '.join(keys)}); name the image with --asset KEY", path=path)
    raise InputError(f"{where} has no image asset (no asset with role 'data' or 'visual'; "
                     f"assets: {', '.join(item.assets) or 'none'}); name it with --asset KEY",
                     path=path)


def _local_path(href: str, item_file: Path, where: str, key: str) -> Path:
    """A local path from an asset href: a path (relative ones from the item file's folder) or
    a ``file://`` URL; any other scheme is refused (the pipeline reads local files)."""
    url = urlparse(href)
    if url.scheme == "file":
        return Path(unquote(url.path))
    if url.scheme and len(url.scheme) > 1:  # (a Windows drive letter is no scheme)
        raise InputError(f"{where}: asset '{key}' is remote ({href}); only local paths and "
                         "file:// URLs are read (download it first)", path=item_file)
    p = Path(href).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else item_file.parent.absolute() / p))


def _angle(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _footprint(acq: Acquisition):
    """The lon/lat outline of an acquisition's image (its raster's bounds)."""
    import rasterio
    from rasterio.warp import transform_bounds
    from shapely.geometry import box

    with rasterio.open(acq.image) as ds:
        if ds.crs is None:
            return None
        return box(*transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21))


def _sites(items: list[Acquisition], group_by: str | None, source: Path
           ) -> dict[str | None, list[Acquisition]]:
    """The items by site: by the property, by connected footprints, or all one site."""
    if group_by and group_by != FOOTPRINT:
        out: dict[str | None, list[Acquisition]] = {}
        for acq in items:
            out.setdefault(acq.site, []).append(acq)
        return dict(sorted(out.items(), key=lambda kv: str(kv[0])))
    groups = _connected(items)
    if group_by == FOOTPRINT:
        groups.sort(key=lambda g: min((a.datetime, a.item_id) for a in g))
        if len(groups) == 1:
            return {None: groups[0]}
        return {f"area{k}": [_with_site(a, f"area{k}") for a in g]
                for k, g in enumerate(groups, start=1)}
    if len(groups) > 1:
        a, b = groups[0][0], groups[1][0]
        raise InputError(f"{source}: the items are of {len(groups)} sites (items '{a.item_id}' "
                         f"and '{b.item_id}' do not overlap); name the item property that tells "
                         "them apart with --group-by PROPERTY (stac.group_by), or group them by "
                         "--group-by footprint", path=source)
    return {None: groups[0]}


def _with_site(acq: Acquisition, site: str) -> Acquisition:
    from dataclasses import replace

    return replace(acq, site=site)


def _connected(items: list[Acquisition]) -> list[list[Acquisition]]:
    """Items whose raster footprints overlap, directly or through others (union-find)."""
    shapes = [_footprint(a) for a in items]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if shapes[i] is None or shapes[j] is None or shapes[i].intersects(shapes[j]):
                parent[root(i)] = root(j)
    groups: dict[int, list[Acquisition]] = {}
    for i, acq in enumerate(items):
        groups.setdefault(root(i), []).append(acq)
    return list(groups.values())
