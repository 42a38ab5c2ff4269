"""Helpers for the published-layout tests: read the reference tensor listings."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"
PREFIX = "backbone_net."


def listing(name: str) -> list[dict]:
    """Backbone entries of ``official_state_dict_diffcast_<name>.json`` (skips when absent)."""
    path = REFERENCE / f"official_state_dict_diffcast_{name}.json"
    if not path.is_file():
        pytest.skip(f"reference listing {path} not found")
    return [e for e in json.loads(path.read_text()) if e["key"].startswith(PREFIX)]


def random_state_dict(entries: list[dict], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the listed names (prefix stripped), shapes and dtypes.

    Aliased entries get the same tensor as the entry they alias, as in the
    published file.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for e in entries:
        if e["alias_of"] is None:
            dtype = getattr(torch, e["dtype"])
            out[e["key"][len(PREFIX):]] = torch.randn(e["shape"], generator=gen, dtype=torch.float64).to(dtype)
    for e in entries:
        if e["alias_of"] is not None:
            out[e["key"][len(PREFIX):]] = out[e["alias_of"][len(PREFIX):]]
    return out


def listed_parameter_count(entries: list[dict]) -> int:
    """Sum of the sizes of the non-alias parameter entries."""
    return sum(math.prod(e["shape"]) for e in entries if e["kind"] == "param" and e["alias_of"] is None)
