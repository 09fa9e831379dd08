from pathlib import Path

import pytest

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_spells_out_the_built_in_defaults():
    assert load_config(REPO / "configs" / "default.yaml") == Config()


def test_unknown_key_is_rejected_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("difference:\n  treshold_sigma: 4\n")
    with pytest.raises(ConfigError, match=r"difference\.treshold_sigma: unknown key"):
        load_config(p)


def test_bad_value_is_rejected_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("classes:\n  - {name: x, category: aircraft, length_m: [-5, 10], width_m: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"classes\.0"):
        load_config(p)


@pytest.mark.parametrize("limits", ["[3.0, 0.5]", "[0, 3]", "[1.5, 3]"])
def test_local_noise_limits_must_bracket_the_scene_unit(tmp_path, limits):
    p = tmp_path / "c.yaml"
    p.write_text(f"difference:\n  local_noise_limits: {limits}\n")
    with pytest.raises(ConfigError, match="local_noise_limits must be"):
        load_config(p)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("difference: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def _covered(classes, category, lo, hi, step=0.5):
    """Lengths in [lo, hi] m that some class of ``category`` accepts at some width."""
    gaps = []
    x = lo
    while x <= hi:
        if not any(c.category == category and c.length_m[0] <= x <= c.length_m[1] for c in classes):
            gaps.append(x)
        x += step
    return gaps


def test_aircraft_classes_cover_10_to_80_m_without_gaps():
    assert _covered(Config().classes, "aircraft", 10, 80) == []


def test_real_objects_land_in_the_right_category():
    from pipeline.detect.classify import footprint_class
    classes = Config().classes
    cases = {  # (length, width) of footprints as a detector measures them
        "An-124": ((69, 73), "aircraft"), "Il-76": ((47, 50), "aircraft"),
        "Su-24 swept": ((22.5, 10.4), "aircraft"), "Su-24 spread": ((22.5, 17.6), "aircraft"),
        "Su-35": ((21.9, 15.3), "aircraft"), "business jet": ((16, 14), "aircraft"),
        "Ka-52 fuselage": ((14, 7.3), "aircraft"), "Mi-8 with fuel tanks": ((18.3, 5.4), "aircraft"),
        "Mi-8 rotor": ((25, 21.3), "aircraft"), "S-400 5P85T": ((21.5, 3.2), "launcher"),
        "TEL": ((12, 3.2), "launcher"), "radar": ((10, 3.0), "launcher"),
        "TEL measured with blur and shadow": ((14, 4.8), "launcher"),
    }
    for name, ((length, width), category) in cases.items():
        cls, _ = footprint_class(max(length, width), min(length, width), classes)
        assert cls is not None and cls.category == category, name
    expected_class = {"Su-24 swept": "combat-jet", "Su-24 spread": "combat-jet",
                      "Su-35": "combat-jet", "An-124": "large-transport",
                      "Ka-52 fuselage": "helicopter", "S-400 5P85T": "sam-launcher"}
    for name, klass in expected_class.items():
        (length, width), _ = cases[name]
        assert footprint_class(max(length, width), min(length, width), classes)[0].name == klass, name
    for name, (length, width) in {"car": (4.4, 1.8), "small truck": (6.5, 2.4)}.items():
        cls, _ = footprint_class(length, width, classes)
        assert cls is None, name
