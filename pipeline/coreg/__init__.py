"""Stage 2, co-registration: reproject AFTER onto the BEFORE grid, then measure and remove the
residual shift (global, or a local field) with a quality figure."""
