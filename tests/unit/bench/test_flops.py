"""The FLOP counter of the benchmarks, checked against hand-computed counts."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

_PATH = Path(__file__).resolve().parents[3] / "benchmarks" / "flops.py"


@pytest.fixture(scope="module")
def flops():
    spec = importlib.util.spec_from_file_location("diffcast_bench_flops", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Toy(nn.Module):
    """Plain, strided+grouped, dilated and 1-d convolutions, a linear layer and an einsum."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)  # (2, 3, 16, 16) -> (2, 8, 16, 16)
        self.c2 = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=4)  # -> (2, 8, 8, 8)
        self.c3 = nn.Conv2d(8, 4, 3, dilation=2)  # no padding: 8 - 2*2 = 4 -> (2, 4, 4, 4)
        self.c4 = nn.Conv1d(4, 6, 3)  # on (2, 4, 16) -> (2, 6, 14)
        self.fc = nn.Linear(6 * 14, 10, bias=False)  # (2, 84) -> (2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c3(self.c2(self.c1(x)))
        y = self.fc(self.c4(x.flatten(2)).flatten(1))
        q = y.reshape(2, 2, 5)
        return torch.einsum("bij,bkj->bik", q, q)  # (2, 2, 5) @ (2, 5, 2): not a module


# Written out by hand: 2 * B * C_out * C_in/groups * kernel * output positions.
HAND = {
    "c1": 2 * 2 * 8 * 3 * 9 * 16 * 16,  # 221_184
    "c2": 2 * 2 * 8 * 2 * 25 * 8 * 8,  # 102_400 (8 in / 4 groups = 2 per group)
    "c3": 2 * 2 * 4 * 8 * 9 * 4 * 4,  # 18_432
    "c4": 2 * 2 * 6 * 4 * 3 * 14,  # 4_032
    "fc": 2 * 2 * 84 * 10,  # 3_360
}
EINSUM = 2 * 2 * 2 * 5 * 2  # batch 2 of (2 x 5) @ (5 x 2): 80


def test_hand_numbers_are_what_we_think():
    assert HAND == {"c1": 221_184, "c2": 102_400, "c3": 18_432, "c4": 4_032, "fc": 3_360}


def test_formulas(flops):
    assert flops.conv_flops(2, 8, 8, (5, 5), (8, 8), groups=4) == HAND["c2"]
    assert flops.linear_flops(2, 84, 10) == HAND["fc"]
    assert flops.matmul_flops(2, 5, 2, batch=2) == EINSUM
    with pytest.raises(ValueError, match="groups"):
        flops.conv_flops(1, 6, 8, (3, 3), (4, 4), groups=4)


def test_hook_counter_matches_hand_count(flops):
    torch.manual_seed(0)
    toy = Toy()
    x = torch.randn(2, 3, 16, 16)
    with flops.HookFlopCounter(toy) as counter:
        out = toy(x)
    assert out.shape == (2, 2, 2)
    assert dict(counter.by_module) == HAND
    assert counter.total == sum(HAND.values())
    # hooks are removed on exit: a second call adds nothing
    toy(x)
    assert counter.total == sum(HAND.values())


def test_flop_counter_mode_matches_hand_count(flops):
    torch.manual_seed(0)
    toy = Toy()
    count, out = flops.count_flops(toy, torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 2, 2)
    # FlopCounterMode also sees the einsum (a bmm) that module hooks cannot
    assert count.total == sum(HAND.values()) + EINSUM
    assert count.by_key["aten.convolution"] == HAND["c1"] + HAND["c2"] + HAND["c3"] + HAND["c4"]
    assert count.by_key["aten.mm"] == HAND["fc"]
    assert count.by_key["aten.bmm"] == EINSUM


def test_counters_agree_on_a_batch_of_eight(flops):
    # FLOPs scale linearly with the batch; both counters must follow
    toy = Toy()
    x = torch.randn(8, 3, 16, 16)
    with flops.HookFlopCounter(toy) as counter:
        toy.c1(x)
    count, _ = flops.count_flops(toy.c1, x)
    assert counter.total == count.total == 4 * HAND["c1"]


def test_measure_gemm(flops):
    res = flops.measure_gemm(n=64, repeats=2)
    assert res["gemm_n"] == 64
    assert math.isfinite(res["gemm_gflops"]) and res["gemm_gflops"] > 0
    assert res["gemm_gflops"] >= res["gemm_gflops_median"]
    assert res["gemm_seconds"] == pytest.approx(2 * 64**3 / res["gemm_gflops"] / 1e9)
    with pytest.raises(ValueError):
        flops.measure_gemm(n=0)
