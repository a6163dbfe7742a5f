import numpy as np
import torch

from cosi.evaluation.stats import FeatureStats


def test_streaming_stats_equal_numpy_and_merge_in_any_order(tmp_path):
    f = torch.randn(500, 6, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7) + 3
    whole = FeatureStats(6).update(f)
    np.testing.assert_allclose(whole.mean, f.double().mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(whole.cov, np.cov(f.double().numpy(), rowvar=False), atol=1e-10)
    parts = FeatureStats(6).update(f[300:]).merge(FeatureStats(6).update(f[:300]))
    np.testing.assert_allclose(parts.cov, whole.cov, atol=1e-10)
    whole.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.n == 500 and np.array_equal(back.cov, whole.cov)


def test_too_few_samples_and_wrong_dimension_are_refused():
    import pytest

    s = FeatureStats(3).update(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 2"):
        s.cov
    with pytest.raises(ValueError, match="dimension 4"):
        s.update(torch.zeros(2, 4))
