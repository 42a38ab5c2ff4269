"""Test-only backbone and dataset for the training tests, registered under ``test_*`` names.

Imported by configs through ``imports: [train_plugins]`` (the test folder is put on
``sys.path`` by pytest, and on ``PYTHONPATH`` for subprocesses).
"""

from __future__ import annotations

import os
import signal
import time

import torch
from torch import nn
from torch.utils.data import Dataset

from diffcast.data import DATASETS
from diffcast.data.transforms import SYNTHETIC_META
from diffcast.models.backbones import BACKBONES, Backbone


class TinyConv(Backbone):
    """Two 3x3 convolutions from the stacked input frames to the stacked output frames."""

    PRESETS = {"tiny": {"hidden": 8}}

    def __init__(self, t_in, t_out, channels=1, height=32, width=32, hidden=8, preset=None):
        super().__init__(t_in, t_out, channels, height, width)
        self.net = nn.Sequential(
            nn.Conv2d(t_in * channels, hidden, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(hidden, t_out * channels, 3, padding=1),
        )

    def forward(self, x_in):
        b = x_in.shape[0]
        out = self.net(x_in.reshape(b, self.t_in * self.channels, self.height, self.width))
        return torch.sigmoid(out).reshape(b, self.t_out, self.channels, self.height, self.width)


class Blobs(Dataset):
    """A bright square moving one pixel per frame plus uniform noise drawn from torch's global RNG.

    Options for fault tests: ``poison_index`` (that item is all NaN), ``delay`` (seconds of
    sleep per item), ``signal_at`` (sending SIGTERM to this process when that item is loaded).
    """

    def __init__(self, split="train", seq_len=7, size=32, num_sequences=16, noise=0.1,
                 poison_index=None, delay=0.0, signal_at=None):
        self.split, self.seq_len, self.size, self.n = split, seq_len, size, num_sequences
        self.noise, self.poison_index, self.delay, self.signal_at = noise, poison_index, delay, signal_at
        self.meta = SYNTHETIC_META

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self.delay:
            time.sleep(self.delay)
        if self.signal_at is not None and i == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        x = torch.rand(self.seq_len, 1, self.size, self.size) * self.noise
        off = 0 if self.split == "train" else 3
        for t in range(self.seq_len):
            r = (i * 3 + off + t) % (self.size - 6)
            x[t, 0, r : r + 6, r : r + 6] = 0.9
        if self.poison_index is not None and i == self.poison_index:
            x[:] = float("nan")
        return x


if "test_tiny" not in BACKBONES:
    BACKBONES.register("test_tiny")(TinyConv)
if "test_blobs" not in DATASETS:
    DATASETS.register("test_blobs")(Blobs)


def tiny_config(**sections):
    """A small run config dict (32x32, 3 -> 4 frames, batch 2); ``sections`` update it per section."""
    cfg = {
        "name": "tiny_test",
        "seed": 0,
        "imports": ["train_plugins"],
        "model": {"type": "backbone", "t_in": 3, "t_out": 4, "channels": 1, "height": 32, "width": 32,
                  "backbone": {"name": "test_tiny"}},
        "data": {"name": "test_blobs", "kwargs": {"size": 32, "num_sequences": 16}, "val_limit": 4},
        "train": {"batch_size": 2, "max_steps": 4, "warmup_steps": 1, "ema_start": 1, "ema_decay": 0.9,
                  "log_every": 1, "val_every": 2, "ckpt_every": 2, "best_metric": "mse01",
                  "best_mode": "min", "val_batch_size": 4, "lr": 1e-2},
        "logging": {"csv": True, "tensorboard": False},
    }
    for key, val in sections.items():
        if isinstance(val, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **val}
        else:
            cfg[key] = val
    return cfg
