"""Optimiser, LR schedule, EMA, deterministic data order and checkpoint folders."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from diffcast.training import checkpoint as ck
from diffcast.training.data import (
    SeededItems,
    ShardedBatches,
    item_seed,
    train_batches,
    val_batches,
)
from diffcast.training.ema import EMA
from diffcast.training.optim import WarmupCosine, build_optimizer, build_scheduler


# ------------------------------------------------------------------ schedule / optimiser
def test_warmup_cosine_matches_closed_form():
    lr, min_lr, warm, total = 1e-3, 1e-5, 10, 110
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, lr=lr)
    sched = build_scheduler(opt, warm, total, lr, min_lr)
    seen = []
    for _ in range(total + 5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(lr / warm)  # linear warm-up starts at lr / warmup
    assert seen[warm - 1] == pytest.approx(lr)
    assert seen[warm] == pytest.approx(lr)  # cosine starts at the peak
    mid = warm + (total - warm) // 2
    assert seen[mid] == pytest.approx(min_lr + (lr - min_lr) * 0.5)  # half way: mean of peak and floor
    s = warm + 25
    expect = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * 25 / (total - warm)))
    assert seen[s] == pytest.approx(expect)
    assert seen[total] == pytest.approx(min_lr) and seen[-1] == pytest.approx(min_lr)
    assert all(a >= b - 1e-15 for a, b in zip(seen[warm:], seen[warm + 1 :]))  # monotone decay


def test_warmup_cosine_without_warmup():
    f = WarmupCosine(0, 100, 0.0)
    assert f(0) == pytest.approx(1.0) and f(100) == pytest.approx(0.0) and f(50) == pytest.approx(0.5)


def test_optimizer_decays_only_matrices():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    opt = build_optimizer(model, lr=1e-3, betas=(0.8, 0.9), weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 1 and decayed[0] is model[0].weight
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.Identity())


# ------------------------------------------------------------------ EMA
def test_ema_closed_form():
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(1.0)
    ema = EMA(model, decay=0.9, start=2)
    values = [2.0, 3.0, 5.0, 7.0]
    for v in values:
        model.weight.data.fill_(v)
        ema.update(model)
    # updates 1-2 copy (3.0), then 0.9 * prev + 0.1 * w
    expect = 3.0
    for v in values[2:]:
        expect = 0.9 * expect + 0.1 * v
    assert float(ema.module.weight) == pytest.approx(expect)
    assert ema.num_updates == 4
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_every_and_integer_buffers():
    model = nn.BatchNorm1d(2)
    ema = EMA(model, decay=0.5, start=0, every=2)
    model.weight.data.fill_(4.0)
    model.num_batches_tracked.fill_(7)
    ema.update(model)  # update 1: skipped (every 2)
    assert float(ema.module.weight[0]) == 1.0
    ema.update(model)  # update 2: averaged
    assert float(ema.module.weight[0]) == pytest.approx(2.5)
    assert int(ema.module.num_batches_tracked) == 7  # integer buffers are copied
    clone = EMA(model, decay=0.5)
    clone.load_state_dict(ema.state_dict(), ema.num_updates)
    assert torch.equal(clone.module.weight, ema.module.weight) and clone.num_updates == 2
    with pytest.raises(ValueError):
        EMA(model, decay=1.0)


# ------------------------------------------------------------------ data order
def test_shards_are_disjoint_and_match_the_single_process_batches():
    n, bs, world = 23, 2, 3
    single = ShardedBatches(n, bs * world, seed=5)
    ranks = [ShardedBatches(n, bs, seed=5, rank=r, world_size=world) for r in range(world)]
    assert single.batches_per_epoch == ranks[0].batches_per_epoch == n // (bs * world)
    for epoch in (0, 1):
        shards = [set(r.epoch_indices(epoch)) for r in ranks]
        assert all(not (a & b) for i, a in enumerate(shards) for b in shards[i + 1 :])
        for b in range(single.batches_per_epoch):
            together = sorted(i for r in ranks for i, _ in r.batches(epoch)[b])
            assert together == sorted(i for i, _ in single.batches(epoch)[b])
    assert ranks[0].epoch_indices(0) != ranks[0].epoch_indices(1)  # reshuffled per epoch
    assert ShardedBatches(n, bs, seed=6).epoch_indices(0) != ShardedBatches(n, bs, seed=5).epoch_indices(0)


def test_resume_position_gives_the_remaining_batches():
    order = ShardedBatches(10, 3, seed=1)
    assert order.position(7) == (2, 1)
    assert order.batches(2, 1) == order.batches(2)[1:]
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedBatches(3, 2, seed=0, world_size=2)


class NoisyItems(torch.utils.data.Dataset):
    def __len__(self):
        return 9

    def __getitem__(self, i):
        return torch.full((2, 1, 2, 2), float(i)) + torch.rand(2, 1, 2, 2) + float(np.random.rand()) + random.random()


@pytest.mark.parametrize("workers", [0, 2])
def test_train_batches_resume_exactly_and_do_not_touch_global_rng(workers):
    ds = NoisyItems()
    order = ShardedBatches(len(ds), 2, seed=3)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    full = train_batches(ds, order, 0, num_workers=workers)
    seqs = [next(full) for _ in range(9)]  # crosses two epoch boundaries (4 batches per epoch)
    assert torch.equal(torch.get_rng_state(), before)
    resumed = train_batches(ds, order, 5, num_workers=0)
    for k in range(5, 9):
        assert torch.equal(next(resumed), seqs[k])
    assert not torch.equal(seqs[0], seqs[4])  # epoch 1 differs from epoch 0


def test_val_batches_are_fixed():
    ds = NoisyItems()
    a = torch.cat(list(val_batches(ds, limit=5, batch_size=2, seed=0)))
    b = torch.cat(list(val_batches(ds, limit=5, batch_size=2, seed=0)))
    assert a.shape[0] == 5 and torch.equal(a, b)
    first = a[:, 0, 0, 0, 0]  # item i holds i + three uniform draws: in order, in [i, i + 3)
    assert bool((first >= torch.arange(5.0)).all()) and bool((first < torch.arange(5.0) + 3).all())


def test_seeded_items_and_item_seed():
    ds = SeededItems(NoisyItems())
    assert torch.equal(ds[(3, 11)], ds[(3, 11)])
    assert not torch.equal(ds[(3, 11)], ds[(3, 12)])
    assert item_seed(0, 1, 2) == item_seed(0, 1, 2) != item_seed(0, 1, 3)
    assert 0 <= item_seed(2**70, 1) < 2**63


# ------------------------------------------------------------------ checkpoint folders
def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pt"
    ck.save_torch(ck.rng_state(), path)
    expect = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    ck.set_rng_state(torch.load(path, weights_only=True))
    got = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    assert got[2] == expect[2] and got[3] == expect[3]


def test_commit_prune_and_cleanup(tmp_path):
    for step in (1, 2, 3):
        tmp = ck.begin(tmp_path, ck.step_dir_name(step))
        ck.write_state(tmp, {"step": step})
        ck.commit(tmp, tmp_path / ck.CHECKPOINTS / ck.step_dir_name(step))
    leftover = ck.begin(tmp_path, ck.step_dir_name(4))  # a killed run's half-written folder
    (leftover / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ck.CHECKPOINTS / "step_00000009").mkdir()  # no trainer_state.json: incomplete
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [1, 2, 3]
    assert ck.latest_checkpoint(tmp_path).name == "step_00000003"
    assert ck.read_state(ck.latest_checkpoint(tmp_path))["step"] == 3
    ck.cleanup_temp(tmp_path)
    assert not leftover.exists()
    deleted = ck.prune(tmp_path, keep_last=2)
    assert [d.name for d in deleted] == ["step_00000001"]
    # re-committing an existing step replaces it
    tmp = ck.begin(tmp_path, ck.step_dir_name(3))
    ck.write_state(tmp, {"step": 3, "again": True})
    ck.commit(tmp, tmp_path / ck.CHECKPOINTS / ck.step_dir_name(3))
    assert ck.read_state(ck.latest_checkpoint(tmp_path))["again"] is True
    with pytest.raises(FileNotFoundError):
        ck.read_state(tmp_path)
