"""The U-Net: shapes for k-block states at 28 and 32 pixels, its config, its size."""

import json

import pytest
import torch

from cosi.models.unet import UNet, UNetConfig, count_parameters, timestep_embedding


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny CPU kernels: one thread avoids OpenMP contention on a loaded 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = dict(base_channels=16, num_res_blocks=1, num_heads=2, dropout=0.0)


@pytest.mark.parametrize("k,C,size,mult,attn", [(1, 1, 28, (1, 2, 2), (7,)), (2, 1, 28, (1, 2, 2), (14, 7)),
                                                (2, 3, 32, (1, 2, 2, 2), (8,)), (1, 3, 32, (1, 2), ())])
def test_unet_maps_a_k_block_state_to_eps_of_the_same_shape(k, C, size, mult, attn):
    cfg = UNetConfig(in_channels=k * C, image_size=size, channel_mult=mult, attn_resolutions=attn, **TINY)
    net = UNet(cfg)
    z = torch.randn(3, k * C, size, size)
    assert net(z, torch.rand(3)).shape == z.shape


def test_untrained_unet_predicts_zero_and_learns_away_from_it():
    net = UNet(UNetConfig(in_channels=2, image_size=8, channel_mult=(1, 2), attn_resolutions=(4,), **TINY))
    z, t = torch.randn(4, 2, 8, 8), torch.rand(4)
    assert torch.count_nonzero(net(z, t)) == 0  # the last conv starts at zero
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    (net(z, t) - torch.ones_like(z)).square().mean().backward()
    opt.step()
    assert net(z, t).abs().mean() > 0


def test_scalar_time_is_broadcast_over_the_batch():
    net = UNet(UNetConfig(in_channels=1, image_size=8, channel_mult=(1, 2), attn_resolutions=(), **TINY))
    torch.nn.init.normal_(net.conv_out.weight)
    z = torch.randn(2, 1, 8, 8)
    assert torch.allclose(net(z, torch.tensor(0.3)), net(z, torch.full((2,), 0.3)))


def test_time_embedding_separates_nearby_small_times():
    e = timestep_embedding(torch.tensor([1e-3, 2e-3, 0.5]), 64, scale=1000.0)
    assert e.shape == (3, 64)
    assert (e[0] - e[1]).norm() > 0.5  # t·1000 moves the first frequency by one radian


def test_config_round_trips_through_json():
    cfg = UNetConfig(in_channels=6, image_size=32, channel_mult=(1, 2, 2, 2), attn_resolutions=(16, 8))
    back = UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.out_channels == 6


@pytest.mark.parametrize("bad,match", [(dict(image_size=30, channel_mult=(1, 2, 2)), "divisible"),
                                       (dict(attn_resolutions=(8,)), "not among"),
                                       (dict(base_channels=30, num_heads=4), "num_heads")])
def test_bad_configs_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**{"in_channels": 2, "image_size": 28, **bad})
    with pytest.raises(ValueError, match="unknown U-Net config keys"):
        UNetConfig.from_dict({"in_channels": 2, "widht": 3})


def test_shipped_size_is_5_to_7M_parameters_and_fits_16MB_in_fp16():
    for k in (1, 2):
        n = count_parameters(UNet(UNetConfig(in_channels=k)))  # the defaults are the shipped Fashion-MNIST net
        assert 5e6 <= n <= 7e6
        assert 2 * n <= 16e6
