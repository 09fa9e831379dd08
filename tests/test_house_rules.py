"""House rules a reader relies on, checked on the package's source: short functions, few
positional parameters, no module switches."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
MAX_LINES = 80
MAX_POSITIONAL = 6


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(PACKAGE.parent), node


def test_no_function_is_longer_than_80_lines():
    long = [f"{p}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
            for p, n in _functions() if n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, long


def test_no_function_takes_more_than_6_positional_parameters():
    many = []
    for p, n in _functions():
        a = n.args
        positional = [x.arg for x in a.posonlyargs + a.args if x.arg not in ("self", "cls")]
        if len(positional) + (a.vararg is not None) > MAX_POSITIONAL:
            many.append(f"{p}:{n.lineno} {n.name} {positional}")
    assert not many, many


def test_run_py_only_orders_the_stages():
    """run.py imports each stage and calls it; it holds no array arithmetic of its own."""
    source = (PACKAGE / "run.py").read_text(encoding="utf-8")
    for stage in ("open_scene", "register", "fit_noise_model", "mask_block", "block_candidates",
                  "judge", "settle", "pair_report"):
        assert stage in source, stage
    tree = ast.parse(source)
    numpy_calls = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id == "np"
                   and n.attr not in ("round", "ndarray")]
    assert not numpy_calls, numpy_calls
