"""Stage 1 and the last: open and check rasters, read them by windows on the BEFORE grid, write
outputs atomically (the change-mask COG, GeoJSON, GeoPackage).

The names of :mod:`~pipeline.io.raster` (opening, checking, reading), :mod:`~pipeline.io.warp`
(AFTER on the BEFORE grid) and :mod:`~pipeline.io.outputs` (atomic writes, the change mask,
staged output folders), in one place: ``from pipeline import io as rio``.
"""
from .outputs import (
    STAGE_PREFIX,
    MaskReader,
    MaskWriter,
    atomic_path,
    ensure_output_dir,
    publish,
    refuse_used_output_dir,
    staged_outputs,
    write_bytes_atomic,
    write_parts_atomic,
    write_text_atomic,
)
from .raster import (
    NOMINAL_CRS,
    NOMINAL_EASTING,
    SUPPORTED_DTYPES,
    Grid,
    OnGridReader,
    averaging_factor,
    block_windows,
    coarse_cells,
    data_bands,
    decimated_grid,
    declares_all_valid,
    describe,
    grid_of,
    input_px,
    is_pixel_frame,
    matching_bands,
    open_raster,
    pixel_size_m,
    read_decimated,
    read_display,
    read_window,
    source_path,
    wrap_plain_image,
)
from .warp import (
    PAD_PX,
    AfterOnGrid,
    LatticeSource,
    PaddedRead,
    cubic_weights,
    lattice_source,
    read_padded,
    resample_field,
    resample_shifted,
    translation_offset,
    valid_lowres,
    warped_onto,
)

__all__ = [
    # raster: opening, checking and reading
    "NOMINAL_CRS", "NOMINAL_EASTING", "SUPPORTED_DTYPES", "Grid", "OnGridReader",
    "averaging_factor", "block_windows", "coarse_cells", "data_bands", "decimated_grid",
    "declares_all_valid", "describe", "grid_of", "input_px", "is_pixel_frame", "matching_bands",
    "open_raster", "pixel_size_m",
    "read_decimated", "read_display", "read_window", "source_path", "wrap_plain_image",
    # warp: AFTER on the BEFORE grid
    "PAD_PX", "AfterOnGrid", "LatticeSource", "PaddedRead", "cubic_weights", "lattice_source",
    "read_padded", "resample_field", "resample_shifted", "translation_offset", "valid_lowres",
    "warped_onto",
    # outputs: atomic writes, the change mask, staged output folders
    "STAGE_PREFIX", "MaskReader", "MaskWriter", "atomic_path", "ensure_output_dir", "publish",
    "refuse_used_output_dir", "staged_outputs", "write_bytes_atomic", "write_parts_atomic",
    "write_text_atomic",
]
