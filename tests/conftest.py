import pytest
import torch

from cosi.oracle import GaussianMixture
from cosi.processes import f64


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def oracle_case(process, d=8, n=16, seed=0, components=4):
    """A small mixture, n exact states at T and their reference ODE endpoints."""
    from cosi.oracle import reference_solution

    gmm = GaussianMixture.random(d=d, components=components, seed=seed, std_range=(0.1, 0.3))
    g = torch.Generator().manual_seed(seed)
    z_T = gmm.sample_state(process, process.T, n, g)
    return gmm, z_T, reference_solution(gmm, process, z_T)
