"""The plan runner's pieces that the CUDA-graph path shares with eager sampling, on the CPU
(tests/test_gpu.py runs the captured graphs themselves on the GPU machine)."""

import pytest
import torch

import cosi
from cosi.core.integrators.plan import lin_update
from cosi.core.noise import mix32
from cosi.evaluation.oracle import GaussianMixture
from cosi.core.processes import apply_blocks


@pytest.mark.parametrize("k,shape", [(1, (5, 3, 4, 4)), (2, (5, 6, 4, 4)), (2, (5, 2 * 7))])
@pytest.mark.parametrize("parts", [1, 2, 3])
def test_lin_update_is_the_blockwise_linear_map(k, shape, parts):
    g = torch.Generator().manual_seed(k * 10 + parts)
    C = torch.randn(k, k * parts, generator=g, dtype=torch.float64)
    xs = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(parts)]
    want = sum(apply_blocks(C[:, j * k:(j + 1) * k], x) for j, x in enumerate(xs))
    torch.testing.assert_close(lin_update(C, *xs), want, rtol=1e-12, atol=1e-12)


def test_the_hash_is_the_same_on_ints_and_tensors():
    xs = [0, 1, 2**31 - 1, 2**32 - 1, 123456789]
    assert mix32(torch.tensor(xs, dtype=torch.int64)).tolist() == [mix32(x) for x in xs]


def test_graph_mode_off_a_gpu_or_with_a_callback_is_refused():
    p = cosi.make_process("psld")
    eps = GaussianMixture.random(d=4, components=2).eps_model(p)
    with pytest.raises(ValueError, match="CUDA"):
        cosi.sample(eps, p, "csps-d", 10, shape=(4, 8), graph=True)
    with pytest.raises(ValueError, match="callback"):
        cosi.sample(eps, p, "csps-d", 10, shape=(4, 8), graph=True, callback=lambda s: None)


def test_graph_mode_refuses_samplers_run_by_diffusers():
    vp = cosi.make_process("vp")
    with pytest.raises(ValueError, match="graph=True applies to cosi's own samplers"):
        cosi.sample(lambda z, t: torch.zeros_like(z), vp, "dpm-solver++", 10, shape=(2, 4), graph=True)
