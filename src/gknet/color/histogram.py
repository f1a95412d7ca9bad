"""1-D histogram matching, shared by the ``histogram`` baseline and the synthetic generator's transfers."""

from __future__ import annotations

import numpy as np


def match_quantiles(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each value of 1-D ``source`` goes to the reference value at its quantile (float64 result).

    scikit-image's ``match_histograms`` algorithm: a value's quantile is the fraction of source
    values <= it, and the distinct reference values, each at the fraction of reference values
    <= it, are interpolated linearly there (clamped at the ends). Equal inputs map to equal outputs.
    """
    values, inverse, counts = np.unique(source, return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference, return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    return np.interp(quantiles, ref_quantiles, ref_values)[inverse.reshape(-1)]
