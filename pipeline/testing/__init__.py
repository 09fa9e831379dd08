"""Development-only code: procedural airbase scenes with truth, and annotated real cases. Tests,
benchmarks and sample_tiles/ use it; detecting changes never does."""
