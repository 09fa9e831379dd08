"""Stage 5: blobs of the change mask, their footprint classes, and the learned verifier that
judges aircraft candidates."""
