"""``diffcast evaluate``: score models on a dataset split with the DiffCast protocol.

Examples::

    diffcast evaluate --model persistence --model extrapolation --data synthetic --limit 16 --out eval/
    diffcast evaluate --model runs/dc/checkpoints/best --model persistence --members 8 \\
        --data images --data-root ../shared/data/sevir_demo --out eval_demo/
    diffcast evaluate --model radar_diffcast_extrapolation --model extrapolation --data /data/radklim.zarr \\
        --test 2021-2023 --limit 64 --out eval_radklim/      # an mlcast spec Zarr store
    accelerate launch --num_processes 4 "$(which diffcast)" evaluate --model runs/sevir --data sevir \\
        --data-root /data/sevir/CATALOG.csv --out eval_sevir/

Outputs in ``--out``: ``metrics.json`` (all scores), ``per_lead.csv`` (scores per lead, with the share of pixels that had data), ``table.md`` (models side
by side in the paper's layout) and plots (CSI/HSS vs lead time; rank histogram and
reliability diagram for ensembles).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from ..sampling import SPACINGS
from .store_args import STORE_DATASET, store_arguments, store_kwargs

log = logging.getLogger(__name__)

LPIPS_ENV = "DIFFCAST_LPIPS_WEIGHTS"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    from ..data import DATASETS

    p = sub.add_parser(
        "evaluate",
        help="score models (checkpoints or baselines) on a dataset split",
        description=(
            "Evaluate one or more models with the DiffCast protocol (CSI/HSS per threshold, pooled CSI, "
            "MSE/MAE/PSNR/SSIM, LPIPS if weights are given) plus CRPS, FSS and, for ensembles, Brier, "
            "reliability, rank histogram and spread-skill. Works under `accelerate launch`."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples::", 1)[1].split("Outputs", 1)[0],
    )
    p.add_argument("--model", "-m", action="append", required=True, metavar="SPEC",
                   help="baseline name (persistence, extrapolation) or model file / checkpoint / run folder; repeatable")
    p.add_argument("--data", required=True, metavar="DATASET|STORE",
                   help=f"registered dataset ({', '.join(DATASETS.names())}) or an mlcast spec Zarr store "
                   "(path or s3:// URL; scored on its --test range, see --split)")
    p.add_argument("--data-root", default=None, metavar="PATH", help="dataset location (folder, file or catalog)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", dest="data_set",
                   help="extra dataset constructor option (JSON value), e.g. --set num_sequences=64 or, for radar, "
                   "--set 'split_events={\"test\": [\"2016-07-11\"]}'")
    store_arguments(p, data=False)
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="dataset split (default test; 'all': every event of a radar archive)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N sequences only")
    p.add_argument("--members", type=int, default=1, metavar="N", help="ensemble size for probabilistic models")
    p.add_argument("--batch-size", type=int, default=4, metavar="B")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t-in", type=int, default=5, help="input frames for baselines (checkpoints fix their own)")
    p.add_argument("--t-out", type=int, default=20, help="forecast frames for baselines")
    p.add_argument("--size", type=int, default=None, metavar="PX",
                   help="frame size for baselines/datasets that resize (default: checkpoint's or data's own; radar: a "
                   f"{RADAR_CROP} x {RADAR_CROP} centre crop at native resolution)")
    p.add_argument("--thresholds", type=_float_list, default=None, metavar="T1,T2,...",
                   help="event thresholds in threshold space (default: the dataset's)")
    p.add_argument("--fss-scales", type=_int_list, default=None, metavar="S1,S2,...",
                   help="FSS neighbourhood sizes in pixels (empty string to skip; default 4,16, radar: see --fss-km)")
    p.add_argument("--fss-km", type=_float_list, default=None, metavar="K1,K2,...",
                   help="FSS neighbourhood sizes in km, converted with the data's pixel size (default for radar "
                   "data: 4,16,64)")
    p.add_argument("--units", choices=("mm/h", "dBZ"), default="mm/h",
                   help="radar data only: score in rain rate (mm/h, default; thresholds 0.5,1,5,10 mm/h) or "
                   "reflectivity (dBZ); models see their own encoding either way")
    p.add_argument("--sampler", default=None, help="sampler for diffusion models (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps for diffusion models")
    p.add_argument("--timestep-spacing", default=None, choices=SPACINGS,
                   help="timestep spacing of the diffusion sampler (default: the model's)")
    p.add_argument("--lpips-weights", default=None, metavar="PATH",
                   help=f"local LPIPS AlexNet weights (.safetensors or torch state dict); default ${LPIPS_ENV}")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


#: Side of the centre crop radar archives are evaluated on (pixels at native resolution).
RADAR_CROP = 256
#: FSS neighbourhoods of radar evaluations in km.
RADAR_FSS_KM = (4.0, 16.0, 64.0)


def _fss_pixels(args: argparse.Namespace, meta: Any, radar: bool) -> list[int]:
    """FSS neighbourhood sizes in pixels from ``--fss-km`` / ``--fss-scales`` (radar default: 4, 16, 64 km)."""
    km = args.fss_km if args.fss_km is not None else (RADAR_FSS_KM if radar and args.fss_scales is None else None)
    if km is not None:
        if any(not k > 0 for k in km):
            raise ValueError(f"--fss-km values must be positive, got {km}")
        return sorted({max(1, int(round(float(k) / float(meta.pixel_km)))) for k in km})
    return list(args.fss_scales) if args.fss_scales is not None else [4, 16]


def _data_source(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(dataset name, data root)`` of ``--data``/``--data-root``: a registered name, or a spec store."""
    from ..data import DATASETS
    from ..data.mlcast import is_zarr_store

    if args.data in DATASETS.names():
        name, root = args.data, args.data_root
    elif is_zarr_store(args.data):
        if args.data_root is not None:
            raise ValueError(f"--data {args.data} is a Zarr store; drop --data-root {args.data_root}")
        name, root = STORE_DATASET, args.data
    else:
        raise ValueError(f"--data {args.data!r} is neither a registered dataset ({', '.join(DATASETS.names())}) "
                         "nor a Zarr store (a folder with .zmetadata/.zgroup/zarr.json, or an s3:// URL)")
    if name != STORE_DATASET and store_kwargs(args):
        raise ValueError("--standard-name, --storage-option and --train/--val/--test apply to a spec store "
                         "(--data STORE)")
    return name, root


def _store_crop(url: str, args: argparse.Namespace) -> int:
    """Default crop side on a spec store: :data:`RADAR_CROP`, or the largest multiple of 32 that fits its frames."""
    from ..data.mlcast import SpecStore, parse_storage_options

    h, w = SpecStore(url, standard_name=args.standard_name,
                     storage_options=parse_storage_options(args.storage_option)).grid_shape
    return RADAR_CROP if min(h, w) >= RADAR_CROP else max(32, min(h, w) // 32 * 32)


def _accelerator() -> Any:
    """An Accelerator when launched with several processes or a GPU is present, else None."""
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or torch.cuda.is_available():
        from accelerate import Accelerator

        return Accelerator()
    return None


def run(args: argparse.Namespace) -> int:
    from ..evaluation import build_dataset, evaluate, lpips_from_path, markdown_table, write_outputs
    from ..inference import BASELINES, GridMismatchError, Nowcaster
    from ..utils.io import ensure_writable_dir

    if args.members < 1 or args.batch_size < 1:
        raise ValueError("--members and --batch-size must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}")
    accelerator = _accelerator()
    is_main = accelerator is None or accelerator.is_main_process
    if is_main:
        ensure_writable_dir(args.out)  # fail before any work
    device = accelerator.device if accelerator is not None else "cpu"

    data_name, data_root = _data_source(args)
    store = data_name == STORE_DATASET
    crop = args.size or (_store_crop(data_root, args) if store else RADAR_CROP)
    # checkpoints first: they fix the frame counts and size the baselines must match
    loaded: dict[int, Any] = {}
    radar = data_name == "radar"
    for i, spec in enumerate(args.model):
        if spec not in BASELINES:
            # radar: fully convolutional models are rebuilt for the evaluation grid (native-resolution crop)
            grid = (crop,) * 2 if radar or store else None
            try:
                loaded[i] = Nowcaster.from_checkpoint(spec, map_location=device, grid=grid)
            except GridMismatchError as exc:
                log.warning("%s; evaluating it on its own grid (area-averaged radar frames)", exc)
                loaded[i] = Nowcaster.from_checkpoint(spec, map_location=device)
    ref = next(iter(loaded.values()), None)
    t_in, t_out = (ref.t_in, ref.t_out) if ref is not None else (args.t_in, args.t_out)
    size = (ref.height, ref.width) if ref is not None else ((args.size, args.size) if args.size else None)
    sets = _parse_sets(args.data_set)
    if store:
        # Native-resolution crops (fully covered unless --set eval_min_coverage=F), scored in the chosen units (rain rate by default).
        sets.update(store_kwargs(args))
        sets.setdefault("units", args.units)
        if size is None and "size" not in sets:
            size = (crop, crop)
    if radar:
        # Native resolution, a fixed centre crop, scored in the chosen units (rain rate by default).
        sets.setdefault("units", args.units)
        sets.setdefault("resample", "crop")
        if size is None and "size" not in sets:
            size = (RADAR_CROP, RADAR_CROP)
    if "size" in sets:
        extra = sets.pop("size")
        extra = (extra, extra) if isinstance(extra, int) else tuple(extra)
        if size is not None and tuple(size) != extra:
            raise ValueError(f"--set size={extra} conflicts with the model/--size grid {tuple(size)}")
        size = extra
    dataset = build_dataset(
        data_name, split=args.split, seq_len=t_in + t_out, data_root=data_root, size=size,
        **sets,
    )
    meta = dataset.meta
    item = dataset[0]
    channels, height, width = int(item.shape[-3]), int(item.shape[-2]), int(item.shape[-1])
    if size is not None and (height, width) != tuple(size):
        raise ValueError(
            f"dataset frames are {height}x{width} but the model expects {size[0]}x{size[1]}; "
            "use a dataset that can resize (size option) or a matching model"
        )
    nowcasters = []
    for i, spec in enumerate(args.model):
        nc = loaded.get(i) or Nowcaster.from_spec(
            spec, t_in=t_in, t_out=t_out, channels=channels, height=height, width=width,
            meta=getattr(dataset, "model_meta", meta),  # baselines work in the models' encoding (radar: dBZ)
        )
        if nc.meta.name != getattr(dataset, "model_meta", meta).name:
            log.warning("%s was trained on %r data, evaluated on %r", nc.name, nc.meta.name, meta.name)
        nowcasters.append(nc)
    seen: dict[str, int] = {}
    for nc in nowcasters:  # unique labels (two checkpoints may share a folder name)
        seen[nc.name] = seen.get(nc.name, 0) + 1
        if seen[nc.name] > 1:
            nc.name = f"{nc.name}-{seen[nc.name]}"
    lpips_path = args.lpips_weights or os.environ.get(LPIPS_ENV) or None
    lpips, lpips_why = lpips_from_path(lpips_path, device=device)
    sample_kwargs = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps),
                                                 ("timestep_spacing", args.timestep_spacing)) if v is not None}
    results = evaluate(
        nowcasters,
        dataset,
        meta=meta,
        members=args.members,
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        lpips=lpips,
        lpips_skipped=lpips_why,
        fss_scales=_fss_pixels(args, meta, radar or store),
        thresholds=args.thresholds,
        accelerator=accelerator,
        progress=not args.no_progress,
        sample_kwargs=sample_kwargs,
    )
    if not is_main:
        return 0
    run_info = {
        "command": "diffcast evaluate",
        "models": list(args.model),
        "data": data_name,
        "data_root": data_root,
        "split": args.split,
        "limit": args.limit,
        "members": args.members,
        "seed": args.seed,
        "t_in": t_in,
        "t_out": t_out,
        "size": [height, width],
        "processes": accelerator.num_processes if accelerator is not None else 1,
        "lpips_weights": str(lpips_path) if lpips is not None else None,
    }
    if callable(getattr(dataset, "provenance", None)):  # a spec store: identifier, version, variable, ranges
        run_info["data_provenance"] = dataset.provenance()
    files = write_outputs(results, args.out, meta=meta, run_info=run_info, plots=not args.no_plots)
    sys.stdout.write(markdown_table(results, meta))
    for kind, path in files.items():
        log.info("wrote %s: %s", kind, path)
    return 0
