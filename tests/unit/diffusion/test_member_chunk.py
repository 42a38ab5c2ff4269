"""Sampling members in chunks (bounded memory) gives the same ensemble as all at once."""

from __future__ import annotations

import pytest
import torch
from diffusion_stubs import tiny_model


def _x(b=2, seed=0):
    return torch.rand(b, 5, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("patch", [1, 2])
def test_chunked_equals_unchunked_for_deterministic_samplers(patch):
    m = tiny_model(patch=patch)
    x = _x()
    ref = m.sample(x, members=5, steps=3, generator=torch.Generator().manual_seed(3))
    for chunk in (1, 2, 3, 5, 9):
        out = m.sample(x, members=5, steps=3, generator=torch.Generator().manual_seed(3), member_chunk=chunk)
        torch.testing.assert_close(out.forecast, ref.forecast, rtol=1e-5, atol=1e-5)
    ddim = m.sample(x, members=5, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(3))
    ddim2 = m.sample(x, members=5, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(3), member_chunk=2)
    torch.testing.assert_close(ddim2.forecast, ddim.forecast, rtol=1e-5, atol=1e-5)


def test_chunked_explicit_noise():
    m = tiny_model()
    x = _x()
    noise = torch.randn(2, 4, 2, 5, 1, 8, 8)
    ref = m.sample(x, members=4, steps=2, noise=noise)
    out = m.sample(x, members=4, steps=2, noise=noise, member_chunk=3)
    torch.testing.assert_close(out.forecast, ref.forecast, rtol=1e-5, atol=1e-5)


def test_more_members_keep_the_first_ones():
    """Member j's noise depends only on the seed and j: asking for more members adds members."""
    m = tiny_model()
    x = _x(b=1)
    three = m.sample(x, members=3, steps=2, generator=torch.Generator().manual_seed(7))
    five = m.sample(x, members=5, steps=2, generator=torch.Generator().manual_seed(7), member_chunk=2)
    torch.testing.assert_close(five.forecast[:3], three.forecast, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(five.forecast[3], five.forecast[4])


def test_ancestral_sampler_runs_chunked_and_bad_chunk():
    m = tiny_model()
    out = m.sample(_x(), members=3, sampler="ddim", eta=1.0, steps=3, member_chunk=2,
                   generator=torch.Generator().manual_seed(0))
    assert out.forecast.shape == (3, 2, 10, 1, 8, 8) and torch.isfinite(out.forecast).all()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="member_chunk must be a positive integer"):
            m.sample(_x(), members=2, steps=2, member_chunk=bad)
