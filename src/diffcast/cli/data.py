"""``diffcast data``: inspect and preview data sources.

Examples
--------
diffcast data info synthetic
diffcast data preview synthetic --out preview.png --n 3 --frames 6
diffcast data preview ../shared/data/sevir_demo --out demo.png
diffcast data preview ../shared/data/radar/mch --out mch.png --split test
diffcast data info /data/sevir/CATALOG.csv --set preset=earthformer --set stride=5
diffcast data info ../shared/data/radar/mch --seq-len 25
diffcast data info ../shared/data/radar/bom/prcp-c10 --set 'split_events={"test": ["2020-10-31"]}'
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _parse_value(value)
    return out


def _h5_kind(path: str) -> str:
    """Guess the dataset kind of an HDF5 file from its layout."""
    import h5py

    from ..data.sevir import _open_binary

    with _open_binary(path, None) as raw:
        try:
            with h5py.File(raw, "r") as fh:
                keys = set(fh.keys())
                if "vil" in keys:
                    return "sevir-file"
                if "valid" in keys and "train" in keys:
                    return "cikm"
                if {"train", "test"} <= keys:
                    log.info(
                        "%s: train/test layout; assuming Shanghai (pass --kind meteonet for MeteoNet)",
                        path,
                    )
                    return "shanghai"
                raise ValueError(
                    f"{path}: unknown HDF5 layout (top-level keys: {', '.join(sorted(keys)) or 'none'}); "
                    "expected SEVIR ('vil'), CIKM (train/valid/test) or Shanghai/MeteoNet (train/test)"
                )
        except OSError as exc:
            raise ValueError(f"cannot open HDF5 file {path}: {exc}") from exc


def resolve_source(source: str, kind: str | None = None) -> tuple[str, dict[str, Any]]:
    """Map a SOURCE string to ``(dataset kind, constructor kwargs)``.

    ``synthetic`` (or any registered name that needs no path), a SEVIR catalog
    (``.csv``, local or URL), an HDF5 file (SEVIR events, CIKM, Shanghai/MeteoNet),
    a folder of image sequences, or a folder of radar files.
    """
    from ..data import DATASETS
    from ..data.images import INPUT_DIRS, _find_sub, is_sequence_folder
    from ..data.radar import RADAR_FORMATS
    from ..data.sevir import _is_url

    if kind is not None and kind not in DATASETS and kind != "sevir-file":
        DATASETS.get(kind)  # raises a ValueError listing the choices
    if source in DATASETS and not Path(source).exists():
        return source, {}
    lower = source.lower()
    if lower.endswith(".csv"):
        return kind or "sevir", {"catalog": source}
    if lower.endswith((".h5", ".hdf5", ".hdf")) and (_is_url(source) or Path(source).is_file()):
        kind = kind or _h5_kind(source)
        if kind == "sevir":
            kind = "sevir-file"
        if kind not in ("sevir-file", "cikm", "shanghai", "meteonet"):
            raise ValueError(
                f"--kind {kind} cannot read the HDF5 file {source}; use sevir, cikm, shanghai or meteonet"
            )
        return kind, {"path": source}
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"data source {source!r} not found: give 'synthetic', a SEVIR CATALOG.csv, an .h5 file, "
            "a folder of image sequences or a folder of radar files"
        )
    if path.is_dir():
        if kind in ("images", "radar"):
            return kind, {"root": source}
        children = [p for p in path.iterdir() if p.is_dir()]
        if _find_sub(path, INPUT_DIRS) is not None or any(
            _find_sub(c, INPUT_DIRS) for c in children
        ):
            return "images", {"root": source}
        # radar composites (.gif, .pgm, .nc, .h5) before plain image frames: MeteoSwiss
        # files are GIFs
        if any(
            any(f.match(p) for f in RADAR_FORMATS.values()) for p in path.rglob("*") if p.is_file()
        ):
            return "radar", {"root": source}
        if is_sequence_folder(path) or any(is_sequence_folder(c) for c in children):
            return "images", {"root": source}
        return "radar", {"root": source}
    raise ValueError(f"cannot tell what kind of data {source} is; pass --kind")


def open_source(source: str, split: str = "test", *, kind: str | None = None, **kwargs: Any) -> Any:
    """Build the dataset for ``source`` (see :func:`resolve_source`) for one split."""
    from ..data import DATASETS
    from ..data.sevir import SEVIRDataset

    kind, base = resolve_source(source, kind)
    base.update({k: v for k, v in kwargs.items() if v is not None})
    if kind == "sevir-file":
        base.pop("split", None)
        return SEVIRDataset.from_file(base.pop("path"), **base)
    return DATASETS.build(kind, split=split, **base)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="inspect and preview data sources (synthetic, SEVIR, h5, radar, images)"
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "source",
            metavar="SOURCE",
            help="'synthetic', a SEVIR CATALOG.csv, an .h5 file, an image-sequence folder or a radar folder",
        )
        q.add_argument(
            "--kind", metavar="NAME", help="force the dataset kind (a registered dataset name)"
        )
        q.add_argument(
            "--seq-len",
            type=int,
            default=None,
            help="frames per sequence (dataset default if omitted)",
        )
        q.add_argument(
            "--size",
            type=int,
            default=None,
            help="frame size in pixels (dataset default if omitted)",
        )
        q.add_argument(
            "--set",
            action="append",
            metavar="KEY=VALUE",
            help="extra dataset argument (JSON value), repeatable",
        )

    pv = dsub.add_parser(
        "preview", help="draw a few sequences to a PNG (SEVIR VIL colour map for VIL data)"
    )
    common(pv)
    pv.add_argument("--out", required=True, metavar="FILE", help="output .png")
    pv.add_argument("--n", type=int, default=3, help="number of sequences (default 3)")
    pv.add_argument(
        "--frames", type=int, default=8, help="frames drawn per sequence, evenly spaced (default 8)"
    )
    pv.add_argument("--split", choices=(*SPLITS, "all"), default="train",
                    help="split to draw from (default train; 'all': every event of a radar archive)")
    pv.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic: generator seed; others: which sequences are drawn",
    )
    pv.set_defaults(func=run_preview)

    pi = dsub.add_parser("info", help="sequences per split, item shape and metadata")
    common(pi)
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.set_defaults(func=run_info)


def _dataset_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw = _parse_sets(args.set)
    if args.seq_len is not None:
        kw["seq_len"] = args.seq_len
    if args.size is not None:
        kw["size"] = args.size
    return kw


def run_preview(args: argparse.Namespace) -> int:
    from ..viz.preview import plot_sequences

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {out}")
    if not out.parent.exists():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    kw = _dataset_kwargs(args)
    kind, _ = resolve_source(args.source, args.kind)
    if kind == "synthetic":
        kw.setdefault("seed", args.seed)
    ds = open_source(args.source, args.split, kind=args.kind, **kw)
    if len(ds) == 0:
        raise ValueError(getattr(ds, "empty_reason", None) or f"split {args.split!r} of {args.source} has no sequences")
    n = min(args.n, len(ds))
    if kind == "synthetic":
        idx = list(range(n))
    else:
        idx = sorted(
            np.random.default_rng(args.seed).choice(len(ds), size=n, replace=False).tolist()
        )
    seqs = [ds[i].numpy() for i in idx]
    plot_sequences(
        seqs,
        out,
        ds.meta,
        frames=args.frames,
        titles=[f"{getattr(ds, 'split', args.split)}[{i}]" for i in idx],
    )
    print(f"wrote {out} ({n} sequence(s) of {len(seqs[0])} frames, {kind})")
    return 0


def describe(source: str, kind: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """Sequences per split, item shape and metadata of a source (``diffcast data info``).

    Radar archives also list their events (``events``: date, split, frames) and,
    per split, the number of events and, when it has no window, why
    (``split_details``).
    """
    kind_, _ = resolve_source(source, kind)
    splits = ("all",) if kind_ == "sevir-file" else SPLITS
    info: dict[str, Any] = {"source": source, "kind": kind_, "splits": {}}
    meta = None
    shape = None
    for split in splits:
        ds = open_source(source, split, kind=kind, **kwargs)
        info["splits"][split] = len(ds)
        meta = ds.meta
        if shape is None and len(ds):
            shape = list(ds[0].shape)
        if hasattr(ds, "describe_events"):
            info["events"] = ds.describe_events()
            info.setdefault("split_details", {})[split] = {
                "events": sorted({e["event"] for e in info["events"] if e["split"] == split}),
                "windows": len(ds),
                "why_empty": getattr(ds, "why_empty", None),
            }
            info["quantity"] = getattr(ds, "quantity", None)
    info["item_shape"] = shape
    info["meta"] = meta.as_dict() if meta is not None else None
    return info


def run_info(args: argparse.Namespace) -> int:
    info = describe(args.source, args.kind, **_dataset_kwargs(args))
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"source: {info['source']} ({info['kind']})")
    details = info.get("split_details")
    if details is not None:
        events = info["events"]
        print(f"  {len(events)} event(s) (runs of frames without a gap of more than an hour, by UTC date):")
        for e in events:
            print(f"    {e['event']}  {e['split']:5s}  {e['frames']:4d} frames  {e['first']} .. {e['last']}")
    for split, n in info["splits"].items():
        if details is None:
            print(f"  {split:5s}: {n} sequence(s)")
            continue
        d = details[split]
        k = len(d["events"])
        line = f"  {split:5s}: {n} window(s) from {k} event(s)"
        if n == 0:
            line = f"  {split:5s}: 0 windows ({d['why_empty']})"
        print(line)
    print(f"item shape (T, C, H, W): {info['item_shape']}")
    if info.get("quantity"):
        print(f"  files hold: {'rain rate (mm/h)' if info['quantity'] == 'mm/h' else 'reflectivity (dBZ)'}")
    for key, value in (info["meta"] or {}).items():
        print(f"  {key}: {value}")
    return 0
