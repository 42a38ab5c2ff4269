"""No seams on large grids (issue 16): the shipped model runs fully convolutionally, and its middle
attention works on windows of its training extent there; window borders must not show in the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcast.inference import Nowcaster
from diffcast.models.diffusion.layers import Attention
from diffcast.shipped import DEFAULT_SHIPPED, shipped_file

pytestmark = pytest.mark.usefixtures("one_thread")
pytest.importorskip("pysteps")


def edge_ratio(field: np.ndarray, tile: int, phase: int) -> tuple[float, float]:
    """Mean |gradient| across window borders (every ``tile`` pixels) over that at the other
    positions of the same phase modulo ``phase`` (the network's downsampling, whose own
    pattern would otherwise bias the comparison); x and y."""
    gx = np.abs(np.diff(field, axis=-1))
    gy = np.abs(np.diff(field, axis=-2))
    n = gx.shape[-1]
    edge = [j for j in range(n) if (j + 1) % tile == 0]
    other = [j for j in range(n) if (j + 1) % phase == 0 and (j + 1) % tile]
    return (float(gx[..., edge].mean() / gx[..., other].mean()),
            float(gy[..., edge, :].mean() / gy[..., other, :].mean()))


@pytest.mark.skipif(shipped_file(DEFAULT_SHIPPED) is None, reason="the shipped radar model is not installed")
def test_windowed_attention_leaves_no_seam():
    nc = Nowcaster.from_checkpoint(DEFAULT_SHIPPED, grid=(288, 288))
    m = nc.model
    windows = {a.window for a in m.modules() if isinstance(a, Attention)}
    trained = Nowcaster.from_checkpoint(DEFAULT_SHIPPED).height  # the training grid (96)
    f = m.model.downsample_factor * m.patch  # pixels per position at the middle block
    assert windows == {(trained // f, trained // f)}  # 288 > 96: windows are on
    yy, xx = np.mgrid[0:288, 0:288]
    smooth = 0.3 + 0.2 * np.sin(xx / 40.0) * np.cos(yy / 50.0)  # a broad rain field, nothing at 96 px
    x = torch.from_numpy(np.stack([smooth] * m.t_in).astype(np.float32))[None, :, None]
    with torch.inference_mode():
        mu = m._backbone_mu(x)
        _, local_ctx = m.context(x, mu)
        r = m.to_blocks(mu[:, : m.segment] * 2 - 1)
        t = torch.full((1,), 500, dtype=torch.long)
        idx = torch.zeros(1, dtype=torch.long)
        windowed = m.from_blocks(m.model(r, t, None, local_ctx, idx)).numpy()
        for a in m.modules():
            if isinstance(a, Attention):
                a.window = None
        full = m.from_blocks(m.model(r, t, None, local_ctx, idx)).numpy()
    ratio_w = edge_ratio(windowed, trained, f)
    ratio_f = edge_ratio(full, trained, f)
    # borders of the attention windows are no steeper than elsewhere, and than without windows
    assert max(ratio_w) < 1.25, ratio_w
    assert np.allclose(ratio_w, ratio_f, atol=0.05), (ratio_w, ratio_f)
    # and the denoiser's output barely changes at all (radar_diffcast_extrapolation: 0.17 % on average, 2.2 % at most;
    # radar_diffcast_sprog_halfscale: under 0.01 % on average, 0.08 % at most; radar_diffcast_sprog_s075: 0.01 %, 0.27 %)
    diff = np.abs(windowed - full)
    scale = np.abs(full).mean()
    print(f"windowed vs full attention: mean {diff.mean() / scale:.2%}, max {diff.max() / scale:.2%} of mean |output|")
    assert diff.mean() < 0.01 * scale and diff.max() < 0.05 * scale
