"""ResidualDiffusion with ``patch > 1``: the denoiser works on folded p x p pixel blocks."""

from __future__ import annotations

import pytest
import torch
from diffusion_stubs import FixedBackbone, StubBackbone, fit_fixed_batch, tiny_model
from torch import nn

from diffcast.models.diffusion.residual import ResidualDiffusion


def _data(b=2, t_in=5, t_out=10, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t_in, 1, size, size, generator=g), torch.rand(b, t_out, 1, size, size, generator=g)


def test_blocks_round_trip_and_layout():
    m = tiny_model(patch=2)
    x = torch.arange(2 * 3 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 3, 1, 8, 8)
    blocks = m.to_blocks(x)
    assert blocks.shape == (2, 3, 4, 4, 4)
    # channel c of block (i, j) holds pixel (2 i + c // 2, 2 j + c % 2)
    for c in range(4):
        torch.testing.assert_close(blocks[:, :, c], x[:, :, 0, c // 2 :: 2, c % 2 :: 2])
    torch.testing.assert_close(m.from_blocks(blocks), x)
    assert tiny_model().to_blocks(x) is x


def test_denoiser_and_context_run_on_blocks():
    m = tiny_model(patch=2)
    assert m.model.init_conv.in_channels == 2 * 5 * 4  # cond + x_t, 5 frames of 4 block channels
    assert m.ctx_net.init_conv.in_channels == 4
    seen = []
    m.model.register_forward_hook(lambda mod, args, out: seen.append((tuple(args[0].shape), tuple(out.shape))))
    x, y = _data()
    m.loss(x, y, generator=torch.Generator().manual_seed(0))
    m.sample(x, members=2, steps=2)
    assert seen[0] == ((2 * 2, 5, 4, 4, 4), (2 * 2, 5, 4, 4, 4))  # loss: both segments folded into the batch
    assert all(s == ((2 * 2, 5, 4, 4, 4), (2 * 2, 5, 4, 4, 4)) for s in seen[1:])  # sampling: members x batch


class _PixelwiseDenoiser(nn.Module):
    """Predicts ``0.5 * x_t``, pixel by pixel: the sample depends on the layout only through folding."""

    def forward(self, x_t, t, cond, ctx, idx):
        return 0.5 * x_t


def test_patch_sampling_maps_pixel_noise_to_the_same_pixels():
    """With a pixel-wise denoiser, patch 1 and patch 2 must give identical residuals from the same
    pixel noise, explicit or drawn from one seed: folding and unfolding keep every pixel in place."""
    x, _ = _data(b=2)
    models = []
    for patch in (1, 2):
        m = tiny_model(patch=patch, objective="eps")
        m.model = _PixelwiseDenoiser()
        models.append(m)
    noise = torch.randn(2, 3, 2, 5, 1, 8, 8)
    a, b = (m.sample(x, members=3, steps=3, noise=noise) for m in models)
    torch.testing.assert_close(a.residual, b.residual)
    a, b = (m.sample(x, members=3, steps=3, generator=torch.Generator().manual_seed(4)) for m in models)
    torch.testing.assert_close(a.residual, b.residual)
    assert not torch.allclose(a.residual[0], a.residual[1])


def test_patch_loss_falls_and_samples_in_range():
    m = tiny_model(patch=2)
    x, y = _data(b=2)
    losses = fit_fixed_batch(m, x, y, steps=30)  # same t and noise each step
    assert losses[-1] < 0.5 * losses[0], losses
    out = m.sample(x, members=2, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.forecast.shape == (2, 2, 10, 1, 8, 8) and out.forecast.min() >= 0 and out.forecast.max() <= 1


def test_patch_validation():
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="patch must be a positive integer"):
            tiny_model(patch=bad)
    # 12 is divisible by 2 ** (levels - 1) = 2 but not by 2 * patch 4 = 8
    with pytest.raises(ValueError, match="divisible by 8 .* and patch 4"):
        ResidualDiffusion(StubBackbone(5, 10, 1, 12, 12), 5, 10, 1, 12, 12, preset="tiny", patch=4)


def test_patch_model_file_round_trip(tmp_path):
    from diffcast.inference import Nowcaster
    from diffcast.models.factory import build_model
    from diffcast.training.model_io import save_model_file

    cfg = {
        "type": "diffcast", "t_in": 5, "t_out": 10, "channels": 1, "height": 16, "width": 16,
        "backbone": {"name": "persistence"},
        "diffusion": {"preset": "tiny", "dim": 8, "groups": 4, "dim_mults": [1, 2], "patch": 2, "sampling_steps": 2},
    }
    torch.manual_seed(0)
    m = build_model(cfg)
    assert m.patch == 2 and m.config["patch"] == 2
    path = save_model_file(tmp_path / "model.safetensors", m.state_dict(), {"model": cfg, "data": {"name": "radar"}})
    nc = Nowcaster.from_checkpoint(path)
    assert nc.model.patch == 2
    for a, b in zip(m.state_dict().values(), nc.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    x = torch.rand(1, 5, 1, 16, 16)
    torch.testing.assert_close(
        nc.model.sample(x, steps=2, generator=torch.Generator().manual_seed(1)).forecast,
        m.sample(x, steps=2, generator=torch.Generator().manual_seed(1)).forecast,
    )


def test_fixed_backbone_patch_model_on_larger_grid():
    torch.manual_seed(0)
    m = ResidualDiffusion(FixedBackbone(5, 5, 1, 32, 32), 5, 5, 1, 32, 32, preset="tiny", dim=8, groups=4, patch=2)
    out = m.sample(torch.rand(1, 5, 1, 32, 32), members=2, steps=2)
    assert out.forecast.shape == (2, 1, 5, 1, 32, 32)


@pytest.mark.parametrize("patch, window", [(1, 8), (2, 4)])
def test_larger_grid_attends_over_the_training_extent_in_blocks(tmp_path, patch, window):
    """Run on a larger grid than trained, the middle attention's window is the training extent
    at the middle level: 16 px / (2 ** 1 levels * patch) positions."""
    from diffcast.inference import Nowcaster
    from diffcast.models.diffusion.layers import Attention
    from diffcast.models.factory import build_model
    from diffcast.training.model_io import save_model_file

    cfg = {
        "type": "diffcast", "t_in": 5, "t_out": 10, "channels": 1, "height": 16, "width": 16,
        "backbone": {"name": "persistence"},
        "diffusion": {"preset": "tiny", "dim": 8, "groups": 4, "dim_mults": [1, 2], "patch": patch},
    }
    torch.manual_seed(0)
    path = save_model_file(tmp_path / "m.safetensors", build_model(cfg).state_dict(), {"model": cfg, "data": {"name": "radar"}})
    nc = Nowcaster.from_checkpoint(path, grid=(64, 48))
    windows = {m.window for m in nc.model.modules() if isinstance(m, Attention)}
    assert windows == {(window, window)}
