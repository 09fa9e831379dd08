"""Styles that travel with the outputs, so that QGIS shows them as the report does.

A QGIS layer style (QML) for the detections layer, stored in the GeoPackage's ``layer_styles``
table (the table QGIS itself writes with "Save as default"): outlines amber for ``appeared``
and blue for ``disappeared``, labelled with the class and id. The change mask's colour table
lives with its writer (:data:`pipeline.io.outputs.MASK_COLOURS`).
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from xml.sax.saxutils import quoteattr

from .draw import CHANGE_COLOURS, CHANGE_MEANING

STYLE_NAME = "detect-changes"
#: the layout of QGIS's ``layer_styles`` table (QgsOgrProvider, GeoPackage)
_LAYER_STYLES_DDL = """CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def _rgba(rgb: tuple[int, int, int], alpha: int) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _fill_symbol(name: str, rgb: tuple[int, int, int]) -> str:
    options = {"color": _rgba(rgb, 50), "outline_color": _rgba(rgb, 255),
               "outline_style": "solid", "outline_width": "0.6", "outline_width_unit": "MM",
               "style": "solid", "joinstyle": "miter"}
    opts = "\n".join(f'            <Option type="QString" name="{k}" value="{v}"/>'
                     for k, v in options.items())
    return (f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
            '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
            f'          <Option type="Map">\n{opts}\n          </Option>\n'
            '        </layer>\n      </symbol>')


def detections_qml() -> str:
    """The QGIS style (QML) of a detections layer: categorised on ``change``, labelled.

    Returns
    -------
    str
        A QGIS 3 QML document: a categorised renderer on the field ``change`` (``appeared``
        amber, ``disappeared`` blue: the overlay's colours, outline 0.6 mm over a faint fill)
        and labels ``"<class> <id>"`` (e.g. ``combat-jet d003``) with a white halo.
    """
    changes = list(CHANGE_COLOURS)
    categories = "\n".join(
        f'      <category symbol="{k}" value="{c}" label={quoteattr(f"{c} ({CHANGE_MEANING[c]})")}'
        ' render="true"/>' for k, c in enumerate(changes))
    symbols = "\n".join(_fill_symbol(str(k), CHANGE_COLOURS[c]) for k, c in enumerate(changes))
    label = quoteattr('"class" || \' \' || "id"')
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="Symbology|Labeling" labelsEnabled="1">
  <renderer-v2 type="categorizedSymbol" attr="change" symbollevels="0" enableorderby="0" forceraster="0" referencescale="-1">
    <categories>
{categories}
    </categories>
    <symbols>
{symbols}
    </symbols>
    <source-symbol>
{_fill_symbol("0", (128, 128, 128))}
    </source-symbol>
    <rotation/>
    <sizescale/>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName={label} isExpression="1" fontFamily="Sans Serif" fontSize="9" fontSizeUnit="Point" fontWeight="75" textColor="0,0,0,255" textOpacity="1" multilineHeight="1" namedStyle="Bold">
        <text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM" bufferColor="255,255,255,255" bufferOpacity="1" bufferNoFill="1" bufferJoinStyle="128"/>
      </text-style>
      <text-format wrapChar="" multilineAlign="3" autoWrapLength="0" placeDirectionSymbol="0" reverseDirectionSymbol="0" formatNumbers="0" decimals="3" plussign="0" leftDirectionSymbol="&lt;" rightDirectionSymbol="&gt;" addDirectionSymbol="0"/>
      <placement placement="1" offsetType="0" dist="1" distUnits="MM" quadOffset="1" xOffset="0" yOffset="-4" offsetUnits="MM" fitInPolygonOnly="0" centroidWhole="0" centroidInside="0" priority="5"/>
      <rendering obstacle="1" displayAll="1" labelPerPart="0" mergeLines="0" scaleVisibility="0" upsidedownLabels="0" drawLabels="1" limitNumLabels="0" minFeatureSize="0" fontLimitPixelSize="0"/>
    </settings>
  </labeling>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def add_layer_style(gpkg: str | Path, layer: str, qml: str, *, geometry_column: str = "geom",
                    description: str = "") -> None:
    """Store ``qml`` as the default QGIS style of ``layer`` in the GeoPackage ``gpkg``.

    Writes a row of the ``layer_styles`` table (created, and registered in ``gpkg_contents``
    as an attribute table, when missing), as QGIS's "Save as default" does; QGIS then opens
    the layer styled. Call it on the file before it is published (renamed into place).
    """
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
    with sqlite3.connect(gpkg) as con:
        con.execute(_LAYER_STYLES_DDL)
        con.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
                    "description, last_change) VALUES ('layer_styles', 'attributes', "
                    "'layer_styles', 'QGIS layer styles', ?)", (now,))
        con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        con.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, "
                    "description, owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, "
                    "'', NULL, ?)",
                    (layer, geometry_column, STYLE_NAME, qml, description, now))
    con.close()
