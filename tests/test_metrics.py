"""Fréchet distance on known cases, streamed feature statistics, and the shipped classifier."""

import numpy as np
import pytest
import torch

from cosi.data import FMNIST_DEFAULT
from cosi.evaluation.metrics import ClassifierFeatures, fd, feature_stats, frechet_distance, quantize
from cosi.evaluation.stats import FeatureStats


def test_fd_of_a_set_with_itself_is_zero():
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = FeatureStats(16).update(x)
    assert abs(fd(s, s)) < 1e-9


def test_fd_of_two_gaussians_matches_the_closed_form():
    # N(mu, diag(a)) vs N(0, diag(b)): |mu|^2 + sum (sqrt(a) - sqrt(b))^2; and a rotated pair
    rng = np.random.default_rng(0)
    mu, a, b = rng.normal(size=5), rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    want = (mu ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu, np.diag(a), np.zeros(5), np.diag(b)) == pytest.approx(want, rel=1e-10)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    got = frechet_distance(Q @ mu, Q @ np.diag(a) @ Q.T, np.zeros(5), Q @ np.diag(b) @ Q.T)
    assert got == pytest.approx(want, rel=1e-8)


def test_fd_of_samples_approaches_the_population_value():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    y = 1.5 * torch.randn(20000, 4, generator=g, dtype=torch.float64) + 0.5
    got = fd(FeatureStats(4).update(x), FeatureStats(4).update(y))
    assert got == pytest.approx(4 * 0.25 + 4 * 0.25, abs=0.05)  # |mu|^2 + tr(1 + 2.25 - 2*1.5)


def test_streaming_features_equal_one_pass_and_quantize_to_8_bits():
    x = torch.rand(37, 3) * 2 - 1
    one = FeatureStats(3).update(quantize(x))
    streamed = feature_stats(lambda v: v, (x[i:i + 10] for i in range(0, 37, 10)), 3)
    assert np.allclose(one.mean, streamed.mean) and np.allclose(one.cov, streamed.cov)
    levels = (quantize(x) + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)


@pytest.mark.skipif(not FMNIST_DEFAULT.is_dir(), reason="Fashion-MNIST is not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_shipped_classifier_is_accurate_and_its_features_separate_data_from_noise():
    from cosi.data import load_fashion_mnist, to_unit_range

    test = load_fashion_mnist(None, "test")
    feats = ClassifierFeatures("fmnist-classifier")
    with torch.no_grad():
        logits = feats.net(to_unit_range(test.images[:2000]))
    assert (logits.argmax(1) == test.labels[:2000]).float().mean() > 0.92
    a, b = feats.image_stats(test.images[:1000]), feats.image_stats(test.images[1000:2000])
    noise = feats.stats([torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1])
    assert fd(a, b) * 20 < fd(a, noise)


def test_kid_is_centred_on_zero_for_one_distribution_and_sees_a_shift():
    from cosi.evaluation.metrics import kid

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    same, spread = kid(a, b, subsets=20, subset_size=500)
    assert abs(same) < 3 * spread / 20 ** 0.5 + 1e-3
    shifted, _ = kid(a, b + 0.5, subsets=20, subset_size=500)
    assert shifted > 20 * max(abs(same), spread / 20 ** 0.5)
