"""Whether a change of code changes what a run writes: detections and the change mask of
three pairs, by the code of another revision and by the working tree, compared byte for byte.

    python benchmarks/identical.py --base 4ae66d7          # sample, Airbus G1, 8192 px pairs
    python benchmarks/identical.py --base HEAD~3 --pairs sample airbus

The other revision runs from a temporary git worktree (its own package on PYTHONPATH, this
virtual environment's libraries). The pairs: the synthetic sample at Hmeimim; the Airbus G1 pair
20bfce20/534ba32c wrapped at 0.5 m with nodata 0 (needs ../shared/data); the 8192 px benchmark
pair (``common.large_pair``, cached in benchmarks/.cache).
"""
from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import CACHE, large_pair  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AIRBUS = REPO.parent / "shared" / "data" / "airbus-aircraft-sample" / "images"
OUTPUTS = ("detections.geojson", "change_mask.tif")


def pairs(names: list[str]) -> dict[str, tuple[Path, Path, list[str]]]:
    """(before, after, extra options) of each named pair, made once where needed."""
    out = {}
    for name in names:
        if name == "sample":
            folder = REPO / "sample_tiles" / "hmeimim"
            out[name] = (folder / "before.tif", folder / "after.tif", [])
        elif name == "airbus":
            from pipeline import io as rio

            folder = CACHE / "identical_airbus"
            before, after = folder / "before.tif", folder / "after.tif"
            if not after.exists():
                folder.mkdir(parents=True, exist_ok=True)
                rio.wrap_plain_image(AIRBUS / "20bfce20-fb8a-4e20-a4aa-57064add848b.jpg", before,
                                     gsd_m=0.5)
                rio.wrap_plain_image(AIRBUS / "534ba32c-cde2-402b-9b47-1396cf0999e8.jpg", after,
                                     gsd_m=0.5)
            out[name] = (before, after, ["--nodata", "0"])
        elif name == "p8192":
            out[name] = (*large_pair(8192), [])
        else:
            sys.exit(f"unknown pair {name!r}: sample, airbus or p8192")
    return out


def run(source: Path, before: Path, after: Path, options: list[str], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", str(before), str(after),
                           "--out", str(out), "-q", *options], cwd=source, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{source}: failed on {before.name}/{after.name}: {done.stderr.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the revision to compare with (git rev)")
    ap.add_argument("--pairs", nargs="+", default=["sample", "airbus", "p8192"])
    args = ap.parse_args()
    chosen = pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree),
                        args.base], check=True, capture_output=True)
        try:
            different = 0
            for name, (before, after, options) in chosen.items():
                run(tree, before, after, options, Path(tmp) / "a" / name)
                run(REPO, before, after, options, Path(tmp) / "b" / name)
                same = [filecmp.cmp(Path(tmp) / "a" / name / f, Path(tmp) / "b" / name / f,
                                    shallow=False) for f in OUTPUTS]
                different += not all(same)
                print(f"{name:<8} " + ", ".join(f"{f} {'identical' if s else 'DIFFERENT'}"
                                               for f, s in zip(OUTPUTS, same)), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                           capture_output=True)
    sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
