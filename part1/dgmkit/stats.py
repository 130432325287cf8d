"""Summary statistics every model family reports: a mean over images with its standard error."""
import math


def mean_and_se(values):
    """Mean of a 1-D tensor and its standard error std / sqrt(N) (sample std, N - 1); SE is None for N < 2."""
    n = len(values)
    se = (values.std() / math.sqrt(n)).item() if n > 1 else None
    return values.mean().item(), se
