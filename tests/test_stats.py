"""dgmkit/stats.py: the mean over images and its standard error (sample std, N - 1), by hand."""
import math

import pytest
import torch

from dgmkit.stats import mean_and_se


def test_mean_and_se_by_hand():
    values = torch.tensor([1.0, 2.0, 4.0, 9.0], dtype=torch.float64)
    mean, se = mean_and_se(values)
    sample_var = ((values - 4.0) ** 2).sum().item() / 3  # N - 1
    assert mean == 4.0 and se == pytest.approx(math.sqrt(sample_var / 4), rel=1e-12)
    assert mean_and_se(torch.tensor([3.0, 5.0], dtype=torch.float64)) == pytest.approx((4.0, 1.0))
    assert mean_and_se(torch.tensor([7.5])) == (7.5, None)
    assert mean_and_se(torch.tensor([], dtype=torch.float64))[1] is None  # "None for N < 2", N = 0 included
