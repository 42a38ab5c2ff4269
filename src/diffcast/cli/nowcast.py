"""``diffcast nowcast``: forecast from files with a checkpoint or a baseline.

Examples
--------
diffcast nowcast --baseline extrapolation --input ../shared/data/sevir_demo/demo_0 --out nc_out
diffcast nowcast --checkpoint runs/diffcast --input frames.npy --members 8 --seed 1 --out nc_out
diffcast nowcast --checkpoint persistence --input radar_folder/ --size 128 128 --crop center --out nc_out
diffcast nowcast --checkpoint runs/diffcast --input SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5 --sample-index 3 --out nc_out
"""

from __future__ import annotations

import argparse
import sys

from ..data.radar import RADAR_FORMATS
from ..inference import BASELINES
from ..nowcasting import ARRAY_LAYOUTS, OUTPUT_UNITS
from ..sampling import SPACINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nowcast",
        help="forecast from image/radar/array files; writes forecast.nc, forecast.gif, panel.png, run.json",
        description=(
            "Forecast from observed frames with a trained checkpoint or a baseline and write a CF-1.8 "
            "NetCDF file (members, ensemble mean, exceedance probabilities), an animated GIF, a PNG "
            "panel and run.json into --out. Inputs: a folder of numbered PNG frames (a sevir_demo "
            "demo_N folder uses its preds/), radar files or a folder of them (pysteps importers; "
            "times from the files), a .npy array (T,H,W) or (T,1,H,W): float in [0,1] or uint8 codes "
            "(divided by 255), or an HDF5 file (--h5-key), including SEVIR files (vil (N, H, W, T), time "
            "last; pick the event with --sample-index). The last t_in frames are used (SEVIR: the first "
            "t_in; see --start-frame); frames are area-averaged onto the model grid when the aspect ratio "
            "matches. forecast.nc of radar files carries their map projection (CF grid mapping, lat/lon), "
            "is NaN outside radar coverage (coverage variable) and is in the files' quantity: rain rate "
            "(mm/h) for rain-rate and accumulation products, reflectivity (dBZ) otherwise (see --units). "
            "Only the radar files used are read."
        ),
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help=f"model file, checkpoint folder or run folder; or a baseline name ({', '.join(BASELINES)})",
    )
    model.add_argument("--baseline", choices=BASELINES, help="use a parameter-free baseline instead of a checkpoint")
    p.add_argument("--input", nargs="+", required=True, metavar="PATH", help="input folder or files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--members", type=int, default=1, help="ensemble members (probabilistic models; default 1)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, recorded in run.json)")
    p.add_argument(
        "--prob-threshold",
        type=float,
        default=None,
        metavar="X",
        help="threshold of the probability panels, also added to forecast.nc, in the output units (mm/h for rain "
        "rate, dBZ, VIL code); default: 1 mm/h for rain rate, else the middle paper threshold (30 dBZ, VIL 133)",
    )
    p.add_argument(
        "--units",
        choices=OUTPUT_UNITS,
        default="auto",
        help="quantity of forecast.nc, thresholds and pictures: auto (default) = the input's (rain-rate/"
        "accumulation radar files: mm/h, reflectivity files: dBZ; other inputs: the model's units), mm/h or dBZ "
        "(reflectivity models; Marshall-Palmer Z = 200 R^1.6, rain below 0 dBZ = 0.036 mm/h is 0)",
    )
    p.add_argument("--input-kind", choices=("images", "radar", "npy", "h5"), default=None, help="override input detection")
    p.add_argument("--h5-key", default=None, metavar="PATH", help="dataset path inside an HDF5 input")
    p.add_argument(
        "--sample-index", type=int, default=None, metavar="I",
        help="sequence (SEVIR: event) index for (N, T, ...) and (N, H, W, T) arrays",
    )
    p.add_argument(
        "--layout",
        choices=ARRAY_LAYOUTS,
        default="auto",
        help="axis order of .npy/HDF5 arrays: time-first (T,H,W)/(N,T,H,W), time-last (H,W,T)/(N,H,W,T) as in "
        "SEVIR; auto (default) reads time first except SEVIR vil files",
    )
    p.add_argument(
        "--start-frame",
        type=int,
        default=None,
        metavar="S",
        help="first input frame (0-based): t_in frames from S are the input and the frames after them the "
        "observed future shown beside the forecast; default: the last t_in frames (SEVIR files: 0)",
    )
    p.add_argument("--pattern", default=None, metavar="GLOB",
                   help="radar folders: only files whose names match this shell pattern (one product of several, "
                   "e.g. 'RAD_NL25_RAP_*')")
    p.add_argument(
        "--radar-format", default=None, choices=sorted(RADAR_FORMATS),
        help="radar file format (pysteps importer; default: guessed from the file names; 'opera' reads ODIM "
        "composites with pysteps' import_opera_hdf5)",
    )
    p.add_argument("--crop", choices=("none", "center"), default="none", help="centre-crop when the aspect ratio differs from the model grid")
    p.add_argument("--analysis-time", default=None, metavar="ISO", help="valid time of the last frame for inputs without timestamps")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="baseline grid (default: the input's)")
    p.add_argument("--t-in", type=int, default=None, help="baseline input frames (default 5)")
    p.add_argument("--t-out", type=int, default=None, help="baseline forecast frames (default 20)")
    p.add_argument("--data-meta", default=None, metavar="NAME", help="units of image/array input for baselines (default sevir)")
    p.add_argument("--sampler", default=None, help="diffusion sampler name (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="diffusion sampling steps (default: the model's)")
    p.add_argument("--timestep-spacing", default=None, choices=SPACINGS,
                   help="timestep spacing of the diffusion sampler (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..nowcasting import nowcast_to_files

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.members < 1:
        raise ValueError(f"--members must be >= 1, got {args.members}")
    info = nowcast_to_files(
        args.baseline or args.checkpoint,
        args.input,
        args.out,
        members=args.members,
        seed=args.seed,
        prob_threshold=args.prob_threshold,
        input_kind=args.input_kind,
        h5_key=args.h5_key,
        sample_index=args.sample_index,
        radar_format=args.radar_format,
        radar_pattern=args.pattern,
        layout=args.layout,
        start_frame=args.start_frame,
        crop=args.crop,
        analysis_time=args.analysis_time,
        size=tuple(args.size) if args.size else None,
        t_in=args.t_in,
        t_out=args.t_out,
        data_meta=args.data_meta,
        sample_kwargs={k: v for k, v in (("sampler", args.sampler), ("steps", args.steps),
                                                 ("timestep_spacing", args.timestep_spacing)) if v is not None},
        progress=not args.no_progress and sys.stderr.isatty(),
        command=["diffcast", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("diffcast") else None,
        units=args.units,
    )
    print(
        f"wrote {args.out}/forecast.nc, forecast.gif, panel.png, run.json "
        f"({info['members']} member(s) x {len(info['valid_times'])} leads, {info['elapsed_s']['total']:.1f} s)"
    )
    return 0
