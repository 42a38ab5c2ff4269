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
diffcast data info radklim.zarr
diffcast data info s3://bucket/archive.zarr --storage-option anon=true --json
diffcast data preview radklim.zarr --out radklim.png --seq-len 12
diffcast data check radklim.zarr
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
        "data", help="inspect, preview and check data sources (synthetic, SEVIR, h5, radar, images, Zarr stores)"
    )
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "source",
            metavar="SOURCE",
            help="'synthetic', a SEVIR CATALOG.csv, an .h5 file, an image-sequence folder, a radar folder, "
            "or a radar archive in the mlcast Zarr spec (a store folder or URL)",
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
        store_options(q)

    pv = dsub.add_parser(
        "preview", help="draw a few sequences to a PNG (SEVIR VIL colour map for VIL data)"
    )
    common(pv)
    pv.add_argument("--out", required=True, metavar="FILE", help="output .png")
    pv.add_argument("--n", type=int, default=3, help="number of sequences (default 3)")
    pv.add_argument(
        "--frames", type=int, default=8, help="frames drawn per sequence, evenly spaced (default 8)"
    )
    pv.add_argument("--split", choices=(*SPLITS, "all"), default=None,
                    help="split to draw from (default train; 'all': every event of a radar archive; "
                    "a Zarr store has no splits: its windows come from the whole store)")
    pv.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic: generator seed; others: which sequences are drawn",
    )
    pv.set_defaults(func=run_preview)

    pi = dsub.add_parser(
        "info",
        help="sequences per split, item shape and metadata; Zarr stores: variable, units, grid, CRS, times, "
        "gaps (metadata only, no pixels read)",
    )
    common(pi)
    pi.add_argument("--json", action="store_true", help="print JSON")
    pi.set_defaults(func=run_info)

    pc = dsub.add_parser(
        "check",
        help="run the mlcast spec validator on a Zarr store (needs pip install 'diffcast[mlcast]')",
        description="Check a Zarr store against the EUMETNET mlcast source_data/radar_precipitation spec with "
        "the mlcast-dataset-validator package and print its report. Exit status 0 when nothing fails, 1 when "
        "a check fails, 2 when the validator is not installed or the store cannot be opened.",
    )
    pc.add_argument("source", metavar="STORE", help="Zarr store folder or URL")
    store_options(pc)
    pc.set_defaults(func=run_check)


def store_options(q: argparse.ArgumentParser) -> None:
    """``--standard-name`` and ``--storage-option`` (Zarr stores)."""
    q.add_argument("--standard-name", default=None, metavar="NAME",
                   help="Zarr stores: the variable's CF standard_name when the store holds several")
    q.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="Zarr stores at a URL: fsspec storage option, repeatable (e.g. anon=true)")


def _store(args: argparse.Namespace) -> Any:
    """The :class:`~diffcast.data.mlcast.SpecStore` of ``args.source``, or ``None`` when it is no Zarr store."""
    from ..data.mlcast import SpecStore, is_zarr_store, parse_storage_options

    options = parse_storage_options(args.storage_option)
    if not is_zarr_store(args.source):
        if str(args.source).rstrip("/").lower().endswith(".zarr") and not Path(args.source).exists():
            raise FileNotFoundError(f"Zarr store {args.source} does not exist")
        for name, given in (("--standard-name", args.standard_name), ("--storage-option", options)):
            if given:
                raise ValueError(f"{name} applies to Zarr stores only; {args.source} is not one")
        return None
    for name in ("kind", "size", "set"):
        if getattr(args, name, None) is not None:
            raise ValueError(f"--{name} applies to dataset sources, not to the Zarr store {args.source}")
    return SpecStore(args.source, standard_name=args.standard_name, storage_options=options)


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
    store = _store(args)
    if store is not None:
        if args.split not in (None, "all"):
            raise ValueError(f"--split {args.split} does not apply to a Zarr store: its splits are the time ranges "
                             "given to train/evaluate (--train/--val/--test); preview draws from the whole store")
        return _preview_store(store, args, out)
    args.split = args.split or "train"
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


def _preview_store(store: Any, args: argparse.Namespace, out: Path) -> int:
    """``data preview STORE``: ``--n`` gap-free windows of ``--seq-len`` frames (default ``--frames``) from the whole store."""
    from ..data.mlcast import regular_runs, window_starts
    from ..data.radar.frames import _radar_meta
    from ..viz.preview import plot_sequences

    seq_len = args.seq_len or args.frames
    starts = window_starts(regular_runs(store.times, store.timestep_min, store.consistent_start), seq_len)
    if starts.size == 0:
        raise ValueError(
            f"{store.url}: no gap-free run of {seq_len} frames {store.timestep_min:g} min apart; ask for fewer with --seq-len"
        )
    n = min(args.n, int(starts.size))
    pick = sorted(np.random.default_rng(args.seed).choice(starts, size=n, replace=False).tolist())
    seqs = [np.stack([store.frame(i)[0] for i in range(s, s + seq_len)])[:, None] for s in pick]
    meta = _radar_meta(store.timestep_min, store.pixel_km, f"mlcast Zarr store ({store.standard_name})", "none", None)
    titles = [str(store.times[s].astype("datetime64[m]")) for s in pick]
    plot_sequences(seqs, out, meta, frames=args.frames, titles=titles)
    print(f"wrote {out} ({n} window(s) of {seq_len} frames from {store.url}, {store.standard_name} in {store.quantity})")
    return 0


def _short_time(text: Any) -> Any:
    return text if text is None else str(np.datetime64(text, "s"))


def describe_store(store: Any, seq_len: int | None = None) -> dict[str, Any]:
    """``data info STORE``: :meth:`SpecStore.describe` with the CRS code and, with ``seq_len``, the window count."""
    from ..data.mlcast import regular_runs, window_starts

    info = store.describe()
    info["time_range"] = [_short_time(t) for t in info["time_range"]]
    info["consistent_timestep_start"] = _short_time(info["consistent_timestep_start"])
    info["missing_times"] = [_short_time(t) for t in store.missing_times[:20]]
    epsg = store.grid.crs.to_epsg()
    info["crs_code"] = f"EPSG:{epsg}" if epsg else None
    info["pixel_km"] = store.pixel_km
    info["shape"] = [len(store), *store.grid_shape]
    if seq_len is not None:
        runs = regular_runs(store.times, store.timestep_min, store.consistent_start)
        info["seq_len"] = seq_len
        info["windows"] = int(window_starts(runs, seq_len).size)
    return info


def _print_store_info(info: dict[str, Any]) -> None:
    q = "rain rate (mm/h)" if info["quantity"] == "mm/h" else "reflectivity (dBZ)"
    how = {"amount": ", accumulations divided by their interval", "rate": "", "reflectivity": ""}[info["kind"]]
    print(f"store: {info['store']} (mlcast Zarr spec)")
    print(f"  variable: {info['variable']} (standard_name {info['standard_name']}, units {info['units']}) -> {q}{how}")
    print(f"  grid: {info['grid']}, y {info['y_order']}")
    print(f"  CRS: {info['crs']}" + (f" ({info['crs_code']})" if info.get("crs_code") else ""))
    t0, t1 = info["time_range"]
    print(f"  time: {t0} .. {t1}, {info['frames']} frame(s)")
    steps = ", ".join(f"{k} min x {v}" for k, v in info["time_steps_min"].items()) or "none"
    start = info["consistent_timestep_start"]
    print(f"  time steps: {steps}; regular step {info['timestep_min']:g} min"
          + (f" from consistent_timestep_start {start}" if start else ""))
    missing = info["missing_frames"]
    listed = ", ".join(info["missing_times"][:5]) + (", ..." if missing > 5 else "")
    print(f"  gaps: {info['gaps']} (spacings other than {info['timestep_min']:g} min); missing frames: {missing}" + (f" ({listed})" if missing else "")
          + f"; {info['gap_free_runs']} gap-free run(s), the longest {info['longest_run_frames']} frames")
    if "windows" in info:
        print(f"  windows of {info['seq_len']} frames: {info['windows']}")
    ds = " ".join(str(v) for v in (info["dataset"], info["dataset_version"]) if v) or "not given"
    print(f"  dataset: {ds}; license: {info['license'] or 'not given'}")
    for w in info["warnings"]:
        print(f"  warning: {w}")


def run_check(args: argparse.Namespace) -> int:
    """``data check STORE``: the mlcast-dataset-validator's report (exit 1 when a check fails)."""
    from ..data.mlcast import is_zarr_store, parse_storage_options

    if not is_zarr_store(args.source):
        if not Path(args.source).exists():
            raise FileNotFoundError(f"Zarr store {args.source} does not exist")
        raise ValueError(f"{args.source} is not a Zarr store; data check validates mlcast spec Zarr stores")
    try:
        from mlcast_dataset_validator.specs.source_data import radar_precipitation as spec
    except ImportError as exc:
        raise ValueError(
            f"the mlcast spec validator is not installed ({exc}); install it with: pip install 'diffcast[mlcast]'"
        ) from None
    import xarray as xr

    options = parse_storage_options(args.storage_option)
    try:  # opened as the validator's own command line does
        ds = xr.open_zarr(args.source, storage_options=options or None)
    except Exception as exc:  # zarr/xarray errors vary by version: one line naming the store
        raise ValueError(f"{args.source}: cannot be opened as a Zarr store ({type(exc).__name__}: {exc})") from None
    if options:
        ds.encoding.setdefault("storage_options", options)
    out = spec.validate_dataset(ds=ds)
    report = out[0] if isinstance(out, tuple) else out
    if hasattr(report, "console_print"):
        report.console_print()
    else:  # pragma: no cover - older validators
        print(report)
    failed = bool(report.has_fails()) if hasattr(report, "has_fails") else False
    print(f"{args.source}: {'does not follow' if failed else 'follows'} the mlcast radar_precipitation spec"
          + (f" {getattr(spec, 'VERSION', '')}" if getattr(spec, "VERSION", None) else ""))
    return 1 if failed else 0


def run_info(args: argparse.Namespace) -> int:
    store = _store(args)
    if store is not None:
        info = describe_store(store, args.seq_len)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            _print_store_info(info)
        return 0
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
