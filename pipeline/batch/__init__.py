"""Many pairs: manifests and dated series, resume state, execution on dask.distributed, and the
batch's summaries (CSV, JSON, GeoPackage, timeline)."""
