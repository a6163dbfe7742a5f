import pytest
import torch

from cosi.evaluation.oracle import GaussianMixture


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models, where a second thread only adds contention), restored after."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_configure(config):
    config.addinivalue_line("markers", "stable_ranges: keep cosi's measured stable ranges (and their refusals) on")


@pytest.fixture(autouse=True)
def _stable_ranges(request, monkeypatch):
    """The stable ranges of cosi.core.integrators.stability are measured on the shipped learned models; the numerical
    tests run samplers on exact oracles at any NFE (their order, moments and plans), so the ranges are off for
    them and on for the tests marked ``stable_ranges`` (tests/test_stability.py and the refusals' tests)."""
    if request.node.get_closest_marker("stable_ranges") is None:
        from cosi.core.integrators import stability

        monkeypatch.setattr(stability, "min_nfe", lambda sampler, process: None)


def oracle_case(process, d=8, n=16, seed=0, components=4):
    """A small mixture, n exact states at T and their reference ODE endpoints."""
    from cosi.evaluation.oracle import reference_solution

    gmm = GaussianMixture.random(d=d, components=components, seed=seed, std_range=(0.1, 0.3))
    g = torch.Generator().manual_seed(seed)
    z_T = gmm.sample_state(process, process.T, n, g)
    return gmm, z_T, reference_solution(gmm, process, z_T)


def oracle_order(process, sampler, nfes, **options) -> tuple[float, list[float]]:
    """The convergence order of ``sampler`` on the oracle (median per-sample RMSE of the whole state against the
    reference ODE endpoint, over ``nfes``), and the errors."""
    import cosi
    from cosi.evaluation.distances import convergence_order

    gmm, z_T, ref = oracle_case(process)
    errs = [float(((cosi.sample(gmm.eps_model(process), process, sampler, n, z_T=z_T, **options).z - ref) ** 2)
                  .flatten(1).mean(1).sqrt().median()) for n in nfes]
    return convergence_order(list(nfes), errs), errs


def mmd_and_floor(process, sampler, nfe, **options):
    """A stochastic sampler's MMD to exact samples of x at t_min (400 samples of a small mixture,
    fixed seeds) with the metrics' floor: distribution_metrics' dict."""
    import cosi
    from cosi.evaluation.distances import distribution_metrics

    gmm = GaussianMixture.random(d=8, components=4, seed=1, std_range=(0.1, 0.3))
    g = torch.Generator().manual_seed(3)
    z_T = gmm.sample_state(process, process.T, 400, g)
    x = cosi.sample(gmm.eps_model(process), process, sampler, nfe, z_T=z_T, generator=g, **options).x
    return distribution_metrics(gmm, x, process=process, t=process.t_min)


class FlatFeatures:
    """The flattened (quantized) data as features, with the interface of
    cosi.evaluation.metrics.ClassifierFeatures (for data of 16 values per sample)."""

    dim = 16

    def stats(self, batches):
        from cosi.evaluation.metrics import feature_stats

        return feature_stats(lambda x: x.flatten(1), batches, self.dim)

    def collect(self, batches):
        from cosi.evaluation.metrics import quantize

        return torch.cat([quantize(x).flatten(1) for x in batches])
