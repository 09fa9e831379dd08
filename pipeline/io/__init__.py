"""Stage 1 and the last: open and check rasters, read them by windows on the BEFORE grid, write
outputs atomically (the change-mask COG, GeoJSON, GeoPackage)."""
