"""Colour maths shared by the baselines and the synthetic generator: sRGB <-> Lab, histogram matching."""
