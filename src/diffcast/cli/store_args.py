"""Command-line options that point ``diffcast train`` and ``diffcast evaluate`` at an mlcast spec store.

``--data STORE --standard-name NAME --storage-option KEY=VALUE --train RANGE --val RANGE --test RANGE``
become the ``mlcast`` dataset's keyword arguments (:class:`diffcast.data.mlcast.dataset.StoreWindows`);
in a config file the same is ``data: {name: mlcast, kwargs: {store: ..., train: ..., val: ...}}``.
"""

from __future__ import annotations

import argparse
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

#: The dataset the options select.
STORE_DATASET = "mlcast"


def store_arguments(p: argparse.ArgumentParser, data: bool = True) -> None:
    """Add the spec-store options (``--data`` too unless the command already has one)."""
    if data:
        p.add_argument("--data", default=None, metavar="STORE",
                       help="train on an mlcast spec Zarr store (path or s3:// URL): replaces the config's data "
                       "source, keeping the crop options the mlcast dataset shares with it")
    p.add_argument("--standard-name", default=None, metavar="NAME",
                   help="spec store: the variable's standard_name when the store holds several")
    p.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="spec store: fsspec option of a remote store (repeatable), e.g. anon=true "
                   "endpoint_url=https://...")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}", default=None, metavar="RANGE", dest=f"{split}_range",
                       help=f"spec store: ISO time range(s) of the {split} split, e.g. 2001-01-01/2019-12-31, 2020 "
                       "or 2021-2023 (comma-separated for several)")


def _ranges(text: str) -> str | list[str]:
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    return parts[0] if len(parts) == 1 else parts


def store_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The dataset keyword arguments the store options give (only those set)."""
    from ..data.mlcast import parse_storage_options

    kw: dict[str, Any] = {}
    if getattr(args, "standard_name", None):
        kw["standard_name"] = args.standard_name
    if getattr(args, "storage_option", None):
        kw["storage_options"] = parse_storage_options(args.storage_option)
    for split in ("train", "val", "test"):
        value = getattr(args, f"{split}_range", None)
        if value is not None:
            kw[split] = _ranges(value)
    return kw


def with_store(cfg: Any, args: argparse.Namespace) -> Any:
    """``cfg`` with its data section pointed at ``--data STORE`` and the store options.

    A config whose data section is another dataset (``radar_windows``) keeps the options the
    ``mlcast`` dataset also takes (``t_in``, ``size``, ``backbone``, ``crops_per_window``,
    ...); the others (``root``, ``split_events``, ...) are dropped and logged.
    """
    from ..config import config_from_dict
    from ..data import DATASETS

    extra = store_kwargs(args)
    store = getattr(args, "data", None)
    if store is None and not extra:
        return cfg
    d = cfg.to_dict()
    data = d["data"]
    if store is None and data["name"] != STORE_DATASET:
        raise ValueError("--standard-name, --storage-option and --train/--val/--test apply to a spec store: "
                         "give --data STORE or a config with data.name: mlcast")
    kwargs = dict(data.get("kwargs") or {})
    if data["name"] != STORE_DATASET:
        accepted = set(inspect.signature(DATASETS.get(STORE_DATASET)).parameters)
        dropped = sorted(k for k in kwargs if k not in accepted)
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        if dropped:
            log.info("data section of %s: options %s do not apply to a spec store, dropped", data["name"],
                     ", ".join(dropped))
        data["name"] = STORE_DATASET
    if store is not None:
        kwargs["store"] = str(store)
    kwargs.update(extra)
    data["kwargs"] = kwargs
    return config_from_dict(d)
