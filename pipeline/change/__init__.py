"""Stages 3 and 4: radiometric normalisation, the noise model, the change score and the cleaned
change mask."""
