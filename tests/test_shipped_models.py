"""The shipped Fashion-MNIST models load by name, predict ε far better than chance, and sample."""

import pytest
import torch

import cosi
from cosi.data import to_unit_range
from cosi.models.checkpoint import CheckpointError, load, shipped_names
from cosi.training.train import MarginalTable, hsm_loss


def test_the_four_models_are_shipped():
    assert {"fmnist-psld", "fmnist-vp", "fmnist-cld", "fmnist-classifier"} <= set(shipped_names())


@pytest.mark.parametrize("name", ["fmnist-psld", "fmnist-vp", "fmnist-cld"])
def test_shipped_model_predicts_eps_far_better_than_zero(name):
    m = load(name)
    g = torch.Generator().manual_seed(0)
    from cosi.data import FMNIST_DEFAULT, load_fashion_mnist

    if not FMNIST_DEFAULT.is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    x0 = to_unit_range(load_fashion_mnist(None, "test").images[:64])
    p = m.process
    t = p.t_train_min + (p.T - p.t_train_min) * torch.rand(64, generator=g)
    eps = torch.randn(64, p.k, 28, 28, generator=g)
    with torch.no_grad():
        loss = float(hsm_loss(m.net, MarginalTable(p), x0, t, eps))
    assert loss < 0.1  # the zero network scores 1.0


@pytest.mark.parametrize("name,sampler", [("fmnist-psld", "csps-d"), ("fmnist-vp", "ddim"), ("fmnist-cld", "gddim-2m")])
def test_shipped_model_samples_images_in_range(name, sampler):
    m = load(name)
    r = cosi.sample(m.eps_model, m.process, sampler, 20, shape=(2, *m.data_shape),
                    generator=torch.Generator().manual_seed(0))
    assert r.x.shape == (2, 1, 28, 28) and r.nfe == 20
    assert torch.isfinite(r.z).all() and r.x.abs().max() < 3


def test_unknown_model_name_lists_the_shipped_ones():
    with pytest.raises(CheckpointError, match="fmnist-psld"):
        load("fmnist-nope")
