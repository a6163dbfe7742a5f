"""The CUDA-only paths (whole-sampler CUDA graphs, compiled updates and noise), run on the GPU
machine; skipped elsewhere. The CPU tests check the same functions uncompiled and uncaptured."""

import pytest
import torch

from cosi.core.sampling import sample
from cosi.evaluation.generate import sample_range
from cosi.core.integrators import get_sampler
from cosi.core.integrators.plan import _fused_updates, lin_update, release_graphs
from cosi.models.checkpoint import load
from cosi.core.noise import CounterNoise, counter_normal, sample_keys

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module", params=["fmnist-psld", "fmnist-vp"])
def model(request):
    # float64 network and state: graph and eager sampling then differ by float64 rounding alone. In
    # float32 (TF32 off) a 1e-7 difference between the fused and the eager update grows over ten PSLD
    # steps at 10 NFE, where the samplers are unstable, to 3e-3 on average (seen on an H200), which
    # says nothing about the replay. Both sides draw the same (fused) noise kernel.
    yield load(request.param, device="cuda", dtype=torch.float64)


def test_fused_update_and_noise_equal_the_eager_ones():
    C = torch.randn(2, 6, device="cuda")
    z, a, b = torch.randn(3, 8, 4, 5, 5, device="cuda").unbind(0)
    torch.testing.assert_close(_fused_updates()[3](C, z, a, b), lin_update(C, z, a, b))
    C4, r = torch.randn(2, 8, device="cuda"), torch.randn(8, 4, 5, 5, device="cuda")  # with the register
    torch.testing.assert_close(_fused_updates()[4](C4, z, a, r, b), lin_update(C4, z, a, r, b))
    keys = sample_keys(3, torch.arange(7, device="cuda"))
    torch.testing.assert_close(counter_normal(keys, 5, (2, 28, 28), fused=True), counter_normal(keys, 5, (2, 28, 28)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sampler,nfe", [("csps-d", 10), ("csps-s", 10), ("em", 10), ("euler", 10),
                                         ("lambda-ddim-2", 10), ("ddim", 10), ("gddim-2m", 10),
                                         ("gddim-s", 10)])
def test_graph_sampling_equals_eager_sampling(model, sampler, nfe):
    if not get_sampler(sampler).accepts(model.process):
        pytest.skip(f"{sampler} is not defined for {model.process.name}")
    release_graphs()
    for start in (0, 16, 40):  # the first batch runs the warm-up, the later ones replay the graph
        keys = sample_keys(0, torch.arange(start, start + 16, device="cuda"))
        z_T = model.process.prior_sample(model.process.state_shape((len(keys), *model.data_shape)), dtype=torch.float64, keys=keys)
        eager, graphed = (sample(model.eps_model, model.process, sampler, nfe, z_T=z_T,
                                 noise=CounterNoise(keys, fused=True), graph=g).x for g in (False, True))
        # a replay with stale inputs or a wrong update differs by O(1) nearly everywhere
        assert (graphed - eager).abs().max() < 1e-6, (graphed - eager).abs().max().item()


def test_graph_memory_does_not_grow_with_nfe(model):
    peaks = []
    for nfe in (20, 40):
        release_graphs()
        torch.cuda.reset_peak_memory_stats()
        sample_range(model, "em", nfe, 0, 64, graph=True)
        sample_range(model, "em", nfe, 64, 64, graph=True)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] < 1.1 * peaks[0], peaks


def test_graph_refuses_a_network_with_its_own_cuda_graphs():
    m = load("fmnist-vp", device="cuda").compile("reduce-overhead")
    with pytest.raises(ValueError, match="reduce-overhead"):
        sample_range(m, "ddim", 5, 0, 4, graph=True)
