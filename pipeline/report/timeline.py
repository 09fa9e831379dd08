"""A dated series at a glance: ``timeline.png`` and the batch's ``index.html``.

The picture has one panel per zone (the whole scene first) and category: per date, the counts
that appeared (amber, up) and disappeared (blue, down) between the previous image and this one,
and the net change in presence since the first image (a line), so that a withdrawal reads as
blue bars and a falling line. The index lists the pairs with their dates, acquisitions and
counts, links every pair's report and the batch's files, and shows the timeline.
"""
from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.outputs import utc_datetime, write_bytes_atomic, write_text_atomic
from .draw import CHANGE_COLOURS

CHANGES = ("appeared", "disappeared")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _when(value: str) -> dt.datetime:
    return utc_datetime(value).replace(tzinfo=None)


def _panels(records: Sequence[dict]) -> list[tuple[str | None, str]]:
    """(site, zone) of each row of panels, in the records' order (``all`` first per site)."""
    seen: dict[tuple[str | None, str], None] = {}
    for r in records:
        seen.setdefault((r.get("site"), r["zone"]), None)
    return sorted(seen, key=lambda k: (str(k[0]), k[1] != "all"))


def timeline_figure(records: Sequence[dict], categories: Sequence[str]):
    """The timeline as a matplotlib Figure (Agg; not shown).

    Parameters
    ----------
    records : sequence of dict
        The rows of timeline.csv (:func:`pipeline.batch.runner.timeline_records`): ``date``,
        ``before_date``, ``status``, ``zone``, optionally ``site``, and ``<category>_<change>``
        counts (None for a failed pair).
    categories : sequence of str
        One column of panels each (``aircraft``, ``launcher``...).

    Returns
    -------
    matplotlib.figure.Figure
        One row of panels per zone (and site), one column per category.
    """
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = _panels(records)
    rows, cols = len(panels), len(categories)
    fig = Figure(figsize=(4.6 * cols + 0.4, 2.5 * rows + 1.1), dpi=100, layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False, sharex=True))
    dates = sorted({_when(r["date"]) for r in records} | {_when(r["before_date"])
                                                           for r in records if r["before_date"]})
    span = (max(dates) - min(dates)) if len(dates) > 1 else dt.timedelta(days=1)
    width = max(span / max(len(dates), 1) * 0.16, dt.timedelta(hours=2))
    for i, (site, zone) in enumerate(panels):
        mine = sorted((r for r in records if r.get("site") == site and r["zone"] == zone),
                      key=lambda r: r["date"])
        for j, cat in enumerate(categories):
            ax = axes[i, j]
            _draw_panel(ax, mine, cat, width)
            where = "whole scene" if zone == "all" else zone
            where = where if site is None else f"{site} \u00b7 {where}"
            ax.set_title(f"{cat} \u2014 {where}", fontsize=10, loc="left")
            if j == 0:
                ax.set_ylabel("objects")
            locator = AutoDateLocator(minticks=3, maxticks=8)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    handles = [Patch(color=_hex(CHANGE_COLOURS["appeared"]), label="appeared since the previous image"),
               Patch(color=_hex(CHANGE_COLOURS["disappeared"]), label="disappeared since the previous image"),
               Line2D([], [], color="#222", marker="o", ms=4, label="net present, relative to the first image")]
    if any(r["status"] not in ("ok", "skipped") for r in records):
        handles.append(Line2D([], [], color="#c00", marker="x", ls="", ms=8, mew=2,
                              label="pair failed (not counted)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 2),
               fontsize=9, frameon=False)
    fig.suptitle("Changes per date (each image against the previous one)", fontsize=11)
    return fig


def _draw_panel(ax, mine: Sequence[dict], cat: str, width) -> None:
    """One panel: a category's appeared (up) and disappeared (down) bars per date, labelled,
    a cross at a failed pair, and the net presence since the first image as a line."""
    ax.axhline(0, color="#444", lw=0.8)
    x = [_when(r["date"]) for r in mine]
    ok = [r["status"] in ("ok", "skipped") for r in mine]
    up = np.array([r[f"{cat}_appeared"] or 0 for r in mine], dtype=float)
    down = np.array([r[f"{cat}_disappeared"] or 0 for r in mine], dtype=float)
    ax.bar(x, up, width, color=_hex(CHANGE_COLOURS["appeared"]), edgecolor="#7a5200", lw=0.5,
           zorder=2)
    ax.bar(x, -down, width, color=_hex(CHANGE_COLOURS["disappeared"]), edgecolor="#004b80",
           lw=0.5, zorder=2)
    for xi, u, d, good in zip(x, up, down, ok):
        # beyond the bar's end, clear of the line's marker, on a halo over the line
        label = {"fontsize": 8, "ha": "center", "textcoords": "offset points", "zorder": 5,
                 "bbox": {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.85}}
        if u:
            ax.annotate(f"+{u:.0f}", (xi, u), xytext=(0, 5), va="bottom", color="#7a5200",
                        **label)
        if d:
            ax.annotate(f"\u2212{d:.0f}", (xi, -d), xytext=(0, -5), va="top", color="#004b80",
                        **label)
        if not good:
            ax.plot([xi], [0], "x", color="#c00", ms=9, mew=2, zorder=3)
    start = [_when(mine[0]["before_date"])] if mine and mine[0]["before_date"] else []
    net = np.cumsum(np.where(ok, up - down, 0))
    ax.plot(start + x, ([0.0] if start else []) + list(net), "-o", color="#222", ms=4, lw=1.6,
            zorder=4)
    top = max(1.0, float(up.max(initial=0)), float(net.max(initial=0)))
    bottom = min(-1.0, float(-down.max(initial=0)), float(net.min(initial=0)))
    pad = 0.25 * (top - bottom)
    ax.set_ylim(bottom - pad, top + pad)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", color="#ddd", lw=0.6, zorder=0)


def write_timeline_png(path: str | Path, records: Sequence[dict],
                       categories: Sequence[str]) -> Path:
    """Render :func:`timeline_figure` to a PNG, atomically."""
    fig = timeline_figure(records, categories)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def write_index(path: str | Path, rows: Sequence[dict], *, title: str,
                categories: Sequence[str], files: Sequence[str], timeline: str | None) -> Path:
    """The batch's ``index.html`` (template ``templates/index.html.j2``), atomically.

    Parameters
    ----------
    rows : sequence of dict
        summary.json's pairs; a pair read from STAC items also has ``acquisitions``
        (``before`` / ``after``: :meth:`pipeline.batch.stac.Acquisition.as_dict`).
    files : sequence of str
        The batch's files to link (summary.csv, catalog.json...), relative to the index.
    timeline : str, optional
        The timeline picture's file name, shown in its section.
    """
    from .html import _environment

    page = _environment().get_template("index.html.j2").render(
        title=title, rows=rows, categories=categories, changes=CHANGES, files=files,
        timeline=timeline,
        generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    write_text_atomic(path, page)
    return Path(path)
