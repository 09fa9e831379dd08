from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline import config as config_module
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_YAML = REPO / "configs" / "default.yaml"


def _yaml_keys(value, prefix: str = "") -> set[str]:
    """Dotted paths of every key of a loaded YAML document (list items by index)."""
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    out = set()
    for key, item in items:
        path = f"{prefix}{key}"
        if isinstance(key, str):
            out.add(path)
        out |= _yaml_keys(item, path + ".")
    return out


def _model_keys(model: BaseModel, prefix: str = "", *, every_field: bool = True) -> set[str]:
    """Dotted paths of a configuration's keys: every field of a section; of an item of a list
    (a footprint class) the fields it was given (``aspect`` only where a class has one)."""
    names = type(model).model_fields if every_field else model.model_fields_set
    out = set()
    for name in names:
        path, value = f"{prefix}{name}", getattr(model, name)
        out.add(path)
        if isinstance(value, BaseModel):
            out |= _model_keys(value, path + ".")
        elif isinstance(value, list):
            for k, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out |= _model_keys(item, f"{path}.{k}.", every_field=False)
    return out


def test_default_yaml_spells_out_every_key_with_its_built_in_default():
    spelled = _yaml_keys(yaml.safe_load(DEFAULT_YAML.read_text()))
    known = _model_keys(Config())
    assert sorted(known - spelled) == [], "keys of Config missing from configs/default.yaml"
    assert sorted(spelled - known) == [], "keys of configs/default.yaml that Config lacks"
    assert load_config(DEFAULT_YAML) == Config()


def test_every_key_is_documented_by_its_field():
    sections = [m for m in vars(config_module).values() if isinstance(m, type)
                and issubclass(m, BaseModel) and m.__module__ == config_module.__name__]
    assert Config in sections and len(sections) > 10
    for section in sections:
        if section.__name__.startswith("_"):
            continue
        assert section.__doc__, f"{section.__name__} has no docstring"
        for name, field in section.model_fields.items():
            nested = isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
            assert nested or field.description, f"{section.__name__}.{name} has no description"


def test_unknown_key_is_rejected_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("difference:\n  treshold_sigma: 4\n")
    with pytest.raises(ConfigError, match=r"difference\.treshold_sigma: unknown key") as caught:
        load_config(p)
    assert caught.value.key == "difference.treshold_sigma" and caught.value.path == str(p)
    assert caught.value.reason == "difference.treshold_sigma: unknown key"


def test_bad_value_is_rejected_naming_the_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("classes:\n  - {name: x, category: aircraft, length_m: [-5, 10], width_m: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"classes\.0") as caught:
        load_config(p)
    assert caught.value.key == "classes.0" and isinstance(caught.value, ValueError)


def test_overrides_merge_into_their_sections_and_leave_the_original_alone():
    base = Config().with_overrides({"input": {"gsd_m": 0.3}})
    changed = base.with_overrides({"input": {"nodata": 0}, "processing": {"threads": 2}})
    assert (changed.input.nodata, changed.input.gsd_m, changed.processing.threads) == (0.0, 0.3, 2)
    assert changed.processing.block_px == Config().processing.block_px
    assert (base.input.nodata, base.processing.threads) == (None, 0)
    assert changed.digest() != base.digest() and base.with_overrides({}) == base
    one_class = changed.with_overrides({"classes": [Config().classes[0].model_dump()]})
    assert [c.name for c in one_class.classes] == ["helicopter"]  # a list is replaced, not merged


@pytest.mark.parametrize("overrides, key, needle", [
    ({"processing": {"threads": -1}}, "processing.threads", "greater than or equal to 0"),
    ({"input": {"nodata": "x"}}, "input.nodata", "valid number"),
    ({"input": {"nodat": 0}}, "input.nodat", "unknown key"),
    ({"difference": {"low_threshold_sigma": 9.0}}, "difference", "must not exceed"),
])
def test_bad_override_is_refused_naming_the_key(overrides, key, needle):
    with pytest.raises(ConfigError, match=needle) as caught:
        Config().with_overrides(overrides, source="--option")
    assert caught.value.key == key
    assert str(caught.value).startswith(f"--option: {key}: ")


@pytest.mark.parametrize("limits", ["[3.0, 0.5]", "[0, 3]", "[1.5, 3]"])
def test_local_noise_limits_must_bracket_the_scene_unit(tmp_path, limits):
    p = tmp_path / "c.yaml"
    p.write_text(f"difference:\n  local_noise_limits: {limits}\n")
    with pytest.raises(ConfigError, match="local_noise_limits must be"):
        load_config(p)


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.path == str(tmp_path / "nope.yaml") and caught.value.key is None
    p = tmp_path / "bad.yaml"
    p.write_text("difference: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as caught:
        load_config(p)
    assert caught.value.path == str(p)


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
