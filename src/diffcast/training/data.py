"""Deterministic, resumable, sharded data order for training.

Batch ``b`` of epoch ``e`` on rank ``r`` is a pure function of ``(seed, e, b, r,
world_size)``, and every item is loaded under RNGs seeded from ``(seed, e,
index)``. Hence a run resumed from step ``s`` sees exactly the batches an
uninterrupted run would, whatever the number of DataLoader workers, and
dataset-side randomness (random crops, synthetic storms drawn on the fly) does
not depend on which worker loaded an item.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

_TRAIN_TAG = 1
_VAL_TAG = 2


def item_seed(seed: int, tag: int, *keys: int) -> int:
    """A 63-bit seed derived from integers (numpy ``SeedSequence``; stable across platforms)."""
    words = np.random.SeedSequence([int(seed) % 2**63, int(tag), *(int(k) for k in keys)]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) % 2**63


class SeededItems(Dataset):
    """Wrap a map-style dataset; ``self[(index, seed)]`` loads ``dataset[index]`` under seeded RNGs.

    The torch (CPU), numpy and python RNGs are seeded from ``seed`` for the call
    and restored afterwards, so loading in the main process does not disturb the
    training RNG stream.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        index, seed = key
        np_state = np.random.get_state()
        py_state = random.getstate()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                np.random.seed(seed % 2**32)
                random.seed(seed)
                item = self.dataset[index]
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        return torch.as_tensor(np.asarray(item) if not isinstance(item, torch.Tensor) else item).float()


class ShardedBatches:
    """Batches of ``(index, item_seed)`` for one rank, reproducible from ``(seed, epoch)``.

    Each epoch draws a permutation of ``range(n)`` from ``(seed, epoch)``, keeps
    the first ``batches_per_epoch * batch_size * world_size`` indices (the tail
    that does not fill a global batch is dropped, as ``drop_last`` would) and
    gives rank ``r`` every ``world_size``-th index starting at ``r``. Global batch
    ``b`` of a single process with ``batch_size * world_size`` therefore holds the
    same sequences as batch ``b`` of all ranks together.

    Parameters
    ----------
    n : int
        Dataset length.
    batch_size : int
        Sequences per batch on this rank.
    seed : int
        Run seed.
    rank, world_size : int
        This process and the number of processes.
    shuffle : bool
        Draw a permutation per epoch (else the natural order).
    group : int
        Items ``[g * group, (g + 1) * group)`` stay together, in order (a dataset that
        cuts several crops from one decompressed window, ``items_per_window``): the
        permutation is drawn over the groups, and whole groups are dealt to the ranks.
        With ``group > 1`` and several processes, global batch ``b`` is no longer the
        single-process batch ``b``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 group: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group = int(group)
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = shuffle
        self.batches_per_epoch = self.n // (self.batch_size * self.world_size)
        if self.group > 1:  # every rank gets the same number of whole groups
            self.batches_per_epoch = (self.n // self.group // self.world_size) * self.group // self.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"training set has {self.n} sequences, fewer than one global batch "
                f"(batch_size {self.batch_size} x {self.world_size} process(es)); lower train.batch_size "
                "or use more data"
            )

    def epoch_indices(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch`` in order (``batches_per_epoch * batch_size`` of them)."""
        g = self.group
        n_units = self.n // g if g > 1 else self.n
        if self.shuffle:
            gen = torch.Generator().manual_seed(item_seed(self.seed, _TRAIN_TAG, epoch, 0))
            perm = torch.randperm(n_units, generator=gen).tolist()
        else:
            perm = list(range(n_units))
        if g > 1:  # whole groups to each rank, each group's items in order
            mine = [u * g + k for u in perm[self.rank :: self.world_size] for k in range(g)]
            return mine[: self.batches_per_epoch * self.batch_size]
        used = perm[: self.batches_per_epoch * self.batch_size * self.world_size]
        return used[self.rank :: self.world_size]

    def batches(self, epoch: int, start: int = 0) -> list[list[tuple[int, int]]]:
        """Batches ``start, start + 1, ...`` of ``epoch`` as lists of ``(index, item_seed)``."""
        idx = self.epoch_indices(epoch)
        bs = self.batch_size
        return [
            [(i, item_seed(self.seed, _TRAIN_TAG, epoch, 1, i)) for i in idx[b * bs : (b + 1) * bs]]
            for b in range(start, self.batches_per_epoch)
        ]

    def position(self, micro_step: int) -> tuple[int, int]:
        """``(epoch, batch)`` of the ``micro_step``-th batch (0-based) on this rank."""
        return divmod(int(micro_step), self.batches_per_epoch)


def _worker_init(worker_id: int) -> None:
    # Items are seeded per index (SeededItems); this only keeps stray RNG use in
    # workers reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _collate(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items, 0)


def train_batches(
    dataset: Dataset,
    order: ShardedBatches,
    micro_step: int,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[torch.Tensor]:
    """Endless iterator of training batches ``(B, T, C, H, W)`` starting at ``micro_step``."""
    wrapped = SeededItems(dataset)
    epoch, start = order.position(micro_step)
    while True:
        batches = order.batches(epoch, start)
        gen = torch.Generator().manual_seed(item_seed(order.seed, _TRAIN_TAG, epoch, 2, order.rank))
        loader = DataLoader(
            wrapped,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=_collate,
            worker_init_fn=_worker_init if num_workers else None,
            generator=gen,
            pin_memory=pin_memory,
        )
        yield from loader
        epoch, start = epoch + 1, 0


def val_batches(dataset: Dataset, limit: int, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
    """The fixed validation subset: the first ``limit`` sequences, in order, seeded per index."""
    n = min(int(limit), len(dataset))  # type: ignore[arg-type]
    keys = [(i, item_seed(seed, _VAL_TAG, i)) for i in range(n)]
    batches = [keys[i : i + batch_size] for i in range(0, n, batch_size)]
    return DataLoader(
        SeededItems(dataset),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers else None,
        generator=torch.Generator().manual_seed(item_seed(seed, _VAL_TAG, -1 % 2**32)),
    )


def build_dataset(cfg: Any, split: str) -> Dataset:
    """Build the dataset named in ``cfg.data`` for ``split`` (``RunConfig`` in, torch Dataset out)."""
    from ..data import DATASETS

    try:
        ds = DATASETS.build(cfg.data.name, split=split, seq_len=cfg.seq_len, **dict(cfg.data.kwargs))
    except TypeError as exc:  # missing/unknown keyword: say where to set it
        raise ValueError(
            f"cannot build dataset {cfg.data.name!r} ({exc}); set its arguments with "
            "--set data.kwargs.NAME=VALUE"
        ) from None
    if len(ds) == 0:
        raise ValueError(getattr(ds, "empty_reason", None) or f"dataset {cfg.data.name!r} split {split!r} is empty")
    return ds


def residual_rms(dataset: Dataset, t_in: int, t_out: int, max_items: int = 2048) -> list[float]:
    """RMS per forecast frame of the residual ``2 (y - mu)`` (the ``[-1, 1]``-space residual
    DiffCast's diffusion learns) over a backbone cache: items of ``t_in + 2 t_out`` frames,
    the last ``t_out`` the backbone's ``mu``. At most ``max_items`` items, evenly spaced;
    NaN (no data) left out. Resolves ``model.diffusion.residual_scale: auto``."""
    n = len(dataset)
    if n == 0:
        raise ValueError("residual_scale: auto needs training data, and the training split is empty")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_items)).round().astype(int))
    total = torch.zeros(t_out, dtype=torch.float64)
    count = torch.zeros(t_out, dtype=torch.float64)
    for i in idx.tolist():
        item = dataset[i]
        if item.shape[0] != t_in + 2 * t_out:
            raise ValueError(
                "residual_scale: auto needs the backbone's mu with every training item (a backbone cache: "
                f"t_in + 2 t_out = {t_in + 2 * t_out} frames, e.g. data radar_windows with a parameter-free "
                f"backbone); these items have {item.shape[0]} frames. Give the scale as numbers instead"
            )
        r = 2.0 * (item[t_in : t_in + t_out].double() - item[t_in + t_out :].double())
        ok = torch.isfinite(r)
        total += torch.where(ok, r * r, 0.0).flatten(1).sum(1)
        count += ok.flatten(1).sum(1)
    if bool((count == 0).any()):
        raise ValueError("residual_scale: auto found a forecast frame with no valid data in the training items")
    rms = (total / count).sqrt()
    if bool((rms <= 0).any()):
        raise ValueError("residual_scale: auto found a zero residual (the backbone is exact on the training data)")
    return [round(float(v), 5) for v in rms]
