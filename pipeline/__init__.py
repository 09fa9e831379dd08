"""detect-changes: what changed between two satellite images of an airbase.

The stages, in the order :func:`pipeline.run.run_pair` calls them, each a subpackage:
``io`` (rasters in, outputs out) -> ``coreg`` (co-registration) -> ``change`` (radiometry, the
change score and mask) -> ``detect`` (blobs, classes, the verifier) -> ``report`` (pictures,
report.json, report.html, review). ``batch`` runs many pairs; ``testing`` makes synthetic scenes
and annotated cases for tests and benchmarks (never needed to detect).
"""

# the one place the version lives: pyproject.toml reads it from here
__version__ = "0.1.0"
