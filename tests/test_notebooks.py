"""The notebooks run headless on the sample pair and draw their figures; they ship without outputs."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
KERNEL = "detect-changes-test"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec running this interpreter (the project's venv), registered nowhere else."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "detect-changes (test)", "language": "python"}))
    return root


def _execute(name: str, params: dict, kernel_dir: Path, cwd: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n# injected by the test\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    km = KernelManager(kernel_name=KERNEL,
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=180, allow_errors=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _figures(nb) -> int:
    return sum("image/png" in out.get("data", {})
               for c in nb.cells if c.cell_type == "code" for out in c.outputs)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_ship_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, \
                f"{path.name}: clear the outputs before committing"


@pytest.fixture(scope="module")
def walkthrough(sample_pair, kernel_dir, tmp_path_factory):
    """The walkthrough executed on the sample pair; its outputs feed the review notebook too."""
    before, after, _ = sample_pair
    cwd = tmp_path_factory.mktemp("walkthrough")
    out = cwd / "out"
    nb = _execute("pipeline_walkthrough.ipynb",
                  {"BEFORE": str(before), "AFTER": str(after), "OUT_DIR": str(out)}, kernel_dir, cwd)
    return nb, out


@pytest.mark.slow
def test_walkthrough_notebook_shows_every_stage(walkthrough):
    nb, out = walkthrough
    assert _figures(nb) >= 8                       # one picture per stage at least
    assert (out / "detections.geojson").exists() and (out / "report.html").exists()


@pytest.mark.slow
def test_review_notebook_runs_and_saves_verdicts(walkthrough, kernel_dir, tmp_path):
    out = Path(shutil.copytree(walkthrough[1], tmp_path / "hmeimim"))
    nb = _execute("review.ipynb", {"OUT_DIR": str(out)}, kernel_dir, tmp_path)
    assert _figures(nb) >= 2                       # the scene and a page of chips
    assert (out / "review.csv").read_text().startswith("id,verdict,")
    truth = json.loads((out / "review_truth.geojson").read_text())
    assert truth["features"]
