"""diffcast's block-by-block semi-Lagrangian advection against pysteps' own scheme."""

import numpy as np
import pytest

pytest.importorskip("pysteps")

from pysteps import extrapolation  # noqa: E402

from diffcast.models.backbones.pysteps_methods import advect, inflow_mask  # noqa: E402


def _pysteps(field, uv, n, outval):
    return extrapolation.get_method("semilagrangian")(field, uv, n, outval=outval)


@pytest.mark.parametrize("shape", [(37, 53), (16, 90)])
@pytest.mark.parametrize("block_pixels", [1, 64, 200, 1 << 16])
@pytest.mark.parametrize("outval", [0.0, np.nan])
def test_advect_is_pysteps_bit_for_bit(shape, block_pixels, outval):
    rng = np.random.default_rng(sum(shape) + block_pixels)
    field = rng.gamma(0.5, 2.0, shape)
    uv = rng.normal(0.0, 2.5, (2,) + shape)  # rough motion: trajectories cross block borders and leave the grid
    ref = _pysteps(field, uv, 7, outval)
    got = advect(field, uv, 7, outval=outval, block_pixels=block_pixels)
    assert got.dtype == np.float64 and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    assert np.isnan(got).any() == np.isnan(outval)  # values came in from outside


def test_advect_region_out_and_transform():
    rng = np.random.default_rng(3)
    field = rng.random((30, 40))
    uv = np.stack([np.full((30, 40), 1.7), np.full((30, 40), -0.6)]) + rng.normal(0, 0.3, (2, 30, 40))
    ref = _pysteps(field, uv, 5, np.nan)
    out = np.zeros((5, 20, 25), np.float32)
    got = advect(field, uv, 5, outval=np.nan, out=out, region=(4, 24, 10, 35), block_pixels=77,
                 transform=lambda a: np.nan_to_num(a, nan=-1.0))
    assert got is out
    np.testing.assert_array_equal(out, np.nan_to_num(ref[:, 4:24, 10:35], nan=-1.0).astype(np.float32))


def test_advect_refuses_bad_arguments():
    field = np.zeros((8, 9))
    with pytest.raises(ValueError, match="uv"):
        advect(field, np.zeros((2, 8, 8)), 3)
    bad = np.zeros((2, 8, 9))
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        advect(field, bad, 3)
    with pytest.raises(ValueError, match="region"):
        advect(field, np.zeros((2, 8, 9)), 3, region=(0, 9, 0, 9))
    with pytest.raises(ValueError, match="out has shape"):
        advect(field, np.zeros((2, 8, 9)), 3, out=np.zeros((3, 8, 8)))


def test_inflow_mask_is_pysteps_advection_of_the_coverage():
    # the mask built block by block equals the one from pysteps' whole-grid advection of the padded coverage
    rng = np.random.default_rng(5)
    cov = np.ones((40, 50), bool)
    cov[:, :8] = False  # a radar edge
    cov[30:, 20:30] = False
    uv = np.stack([np.full((40, 50), 2.3), np.full((40, 50), 0.8)]) + rng.normal(0, 0.4, (2, 40, 50))
    field = np.pad(cov.astype(np.float64), 1, mode="edge")
    vel = np.pad(uv, ((0, 0), (1, 1), (1, 1)), mode="edge")
    ref = ~(np.nan_to_num(_pysteps(field, vel, 6, np.nan)[:, 1:-1, 1:-1], nan=0.0) >= 0.5)
    got = inflow_mask(cov, uv, 6)
    assert got.dtype == bool and got.shape == (6, 40, 50)
    np.testing.assert_array_equal(got, ref)
    assert ref[-1].sum() > ref[0].sum() > 0  # inflow grows with lead time
