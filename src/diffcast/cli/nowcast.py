"""``diffcast nowcast``: forecast from files with a checkpoint or a baseline.

Examples
--------
diffcast nowcast --baseline extrapolation --input ../shared/data/sevir_demo/demo_0 --out nc_out
diffcast nowcast --checkpoint runs/diffcast --input frames.npy --members 8 --seed 1 --out nc_out
diffcast nowcast --checkpoint persistence --input radar_folder/ --size 128 128 --crop center --out nc_out
diffcast nowcast --checkpoint runs/diffcast --input SEVIR_VIL_STORMEVENTS_2019_0701_1231.h5 --sample-index 3 --out nc_out
diffcast nowcast --baseline extrapolation --watch /data/radar/incoming --poll-seconds 10 --out nowcasts
diffcast nowcast --checkpoint runs/diffcast --input radklim.zarr --start-frame 1200 --format zarr --out nc_out
diffcast nowcast --baseline steps --input s3://bucket/archive.zarr --storage-option anon=true --out nc_out
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ..data.radar import RADAR_FORMATS
from ..inference import BASELINES
from ..pipeline import ARRAY_LAYOUTS, INPUT_KINDS, OUTPUT_UNITS
from ..pipeline.run import OUTPUT_FORMATS
from ..sampling import SPACINGS

#: Default of --poll-seconds and --retries.
POLL_SECONDS = 10.0
RETRIES = 3


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "nowcast",
        help="forecast from image/radar/array files; writes forecast.nc, forecast.gif, panel.png, forecast.html, run.json",
        description=(
            "Forecast from observed frames with a trained checkpoint or a baseline and write a CF-1.8 "
            "NetCDF file (members, ensemble mean, exceedance probabilities), an animated GIF, a PNG "
            "panel, a self-contained HTML page that plays the nowcast (forecast.html) and run.json into "
            "--out. Inputs: a folder of numbered PNG frames (a sevir_demo "
            "demo_N folder uses its preds/), radar files or a folder of them (pysteps importers; "
            "times from the files), a .npy array (T,H,W) or (T,1,H,W): float in [0,1] or uint8 codes "
            "(divided by 255), or an HDF5 file (--h5-key), including SEVIR files (vil (N, H, W, T), time "
            "last; pick the event with --sample-index), or a radar archive in the mlcast Zarr spec (a store "
            "folder or URL; --standard-name, --storage-option; only the frames used are read; forecast.nc "
            "records the store, its variable, dataset identifier and version and the input frame times). The last t_in frames are used (SEVIR: the first "
            "t_in; see --start-frame); frames are area-averaged onto the model grid when the aspect ratio "
            "matches. forecast.nc of radar files carries their map projection (CF grid mapping, lat/lon), "
            "is NaN outside radar coverage (coverage variable) and is in the files' quantity: rain rate "
            "(mm/h) for rain-rate and accumulation products, reflectivity (dBZ) otherwise (see --units). "
            "Only the radar files used are read. With --watch DIR instead of --input, radar files arriving in DIR "
            "are nowcast as they come: one output folder per analysis time (OUT/20160711T1200Z/, written "
            "atomically; existing ones are not recomputed), OUT/latest naming the newest, one log line per cycle; "
            "a missing or unreadable file skips the cycle (see README, Streaming)."
        ),
    )
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help=f"model file, checkpoint folder or run folder; or a baseline name ({', '.join(BASELINES)})",
    )
    model.add_argument("--baseline", choices=BASELINES, help="use a parameter-free baseline instead of a checkpoint")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH", help="input folder or files")
    source.add_argument(
        "--watch", metavar="DIR",
        help="streaming: poll DIR for radar files and nowcast each new analysis time into OUT/<YYYYmmddTHHMMZ>/ "
        "(with --pattern, --radar-format; until Ctrl-C/SIGTERM, --max-cycles or --once)",
    )
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created); with --watch, one subfolder per analysis time")
    p.add_argument("--poll-seconds", type=float, default=None, metavar="S",
                   help=f"--watch: seconds between looks at the folder (default {POLL_SECONDS:g})")
    p.add_argument("--max-cycles", type=int, default=None, metavar="N",
                   help="--watch: stop after N cycles (a cycle: a nowcast written, or one skipped and why)")
    p.add_argument("--once", action="store_true", help="--watch: look at the folder once, nowcast what is new, exit")
    p.add_argument("--catch-up", action="store_true",
                   help="--watch: nowcast every analysis time in order, not only the newest (reprocess an archive, "
                   "fill the gap after a restart: starts after the newest output in OUT); with --once, work off "
                   "the backlog and exit")
    p.add_argument("--keep", type=int, default=None, metavar="N",
                   help="--watch: keep only the N newest output folders (older ones are removed after each nowcast)")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help=f"--watch: tries again of an unreadable file that does not change (default {RETRIES})")
    p.add_argument("--members", type=int, default=1, help="ensemble members (probabilistic models; default 1)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random, recorded in run.json)")
    p.add_argument(
        "--prob-threshold",
        type=float,
        nargs="+",
        default=None,
        metavar="X",
        help="thresholds of the probability panels, also added to forecast.nc, in the output units (mm/h for rain "
        "rate, dBZ, VIL code); one or more: forecast.html shows each, forecast.gif and panel.png the first; "
        "default: 1 mm/h for rain rate, else the middle paper threshold (30 dBZ, VIL 133)",
    )
    p.add_argument("--no-html", action="store_true", help="do not write forecast.html")
    p.add_argument(
        "--units",
        choices=OUTPUT_UNITS,
        default="auto",
        help="quantity of forecast.nc, thresholds and pictures: auto (default) = the input's (rain-rate/"
        "accumulation radar files: mm/h, reflectivity files: dBZ; other inputs: the model's units), mm/h or dBZ "
        "(reflectivity models; Marshall-Palmer Z = 200 R^1.6, rain below 0 dBZ = 0.036 mm/h is 0)",
    )
    p.add_argument("--input-kind", choices=INPUT_KINDS, default=None, help="override input detection")
    p.add_argument("--standard-name", default=None, metavar="NAME",
                   help="Zarr stores: the variable's CF standard_name when the store holds several radar "
                   "variables (rainfall_flux, precipitation_flux, precipitation_amount, rainfall_amount, "
                   "equivalent_reflectivity_factor)")
    p.add_argument("--storage-option", action="append", default=None, metavar="KEY=VALUE",
                   help="Zarr stores at a URL: fsspec storage option, repeatable (e.g. anon=true, "
                   "client_kwargs.endpoint_url=https://...)")
    p.add_argument("--format", dest="output_format", choices=sorted(OUTPUT_FORMATS), default="netcdf",
                   help="forecast file: netcdf (forecast.nc, default) or zarr (forecast.zarr, the same content as a "
                   "Zarr store: members, leads, CRS variable, lat/lon)"),
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
    p.add_argument("--member-chunk", type=int, default=None, metavar="K",
                   help="diffusion models: run the denoiser on at most K members at a time (less memory, same "
                        "members with the default samplers; default: all at once)")
    p.add_argument("--max-memory", default=None, metavar="SIZE",
                   help="memory cap of a DiffCast nowcast, e.g. 4G or 800M: members are sampled in turns to stay "
                   "under it, and a forecast that cannot fit even one member at a time stops before any work "
                   "(default: 90%% of the memory available at start; small forecasts are not checked)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="diffusion models: the denoiser's arithmetic, fp32 (default) or bfloat16 autocast (faster on "
                        "CPUs with AMX or AVX512-BF16 and on GPUs, much slower on CPUs without; members differ from "
                        "fp32 ones by bf16 round-off)")
    p.add_argument("--mask-method", choices=("incremental", "none"), default="incremental",
                   help="radar diffusion ensembles: STEPS' incremental precipitation mask before the matching, lead by "
                        "lead (no member grows rain out of a dry area; default incremental, none = off)")
    p.add_argument("--prob-matching", choices=("cdf", "none"), default="cdf",
                   help="diffusion ensembles: give each member, lead by lead, the intensity distribution of the "
                        "last observed frame, as STEPS does (default cdf; none = the model's values)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import nowcast_to_files

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.watch is not None:
        return watch(args)
    used = [f"--{k.replace('_', '-')}" for k in ("poll_seconds", "max_cycles", "retries", "keep")
            if getattr(args, k) is not None]
    used += ["--once"] * args.once + ["--catch-up"] * args.catch_up
    if used:
        raise ValueError(f"{', '.join(used)} applies to --watch DIR only")
    if args.members < 1:
        raise ValueError(f"--members must be >= 1, got {args.members}")
    from ..data.mlcast import parse_storage_options

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
        sample_kwargs=_sample_kwargs(args),
        progress=not args.no_progress and sys.stderr.isatty(),
        command=_command(),
        units=args.units,
        html=not args.no_html,
        standard_name=args.standard_name,
        storage_options=parse_storage_options(args.storage_option),
        output_format=args.output_format,
    )
    print(
        f"wrote {args.out}/{', '.join(info['outputs'])} "
        f"({info['members']} member(s) x {len(info['valid_times'])} leads, {info['elapsed_s']['total']:.1f} s)"
    )
    return 0


def _command() -> list[str] | None:
    """The command line for run.json, when run as ``diffcast`` (not from Python)."""
    return ["diffcast", *sys.argv[1:]] if sys.argv and sys.argv[0].endswith("diffcast") else None


def _sample_kwargs(args: argparse.Namespace) -> dict:
    out = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps),
                             ("timestep_spacing", args.timestep_spacing)) if v is not None}
    out["prob_matching"] = None if args.prob_matching == "none" else args.prob_matching
    out["mask_method"] = None if args.mask_method == "none" else args.mask_method
    if args.precision == "bf16":
        out["autocast_dtype"] = "bf16"
    if args.member_chunk is not None:
        out["member_chunk"] = args.member_chunk
    if args.max_memory is not None:
        from ..memory import parse_size

        out["max_memory"] = parse_size(args.max_memory)  # a bad size fails here, before any reading
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def watch(args: argparse.Namespace) -> int:
    """``--watch DIR``: nowcast radar files as they arrive (:class:`diffcast.streaming.FolderWatcher`)."""
    from ..streaming import FolderWatcher

    ignored = {"--input-kind": args.input_kind not in (None, "radar"), "--h5-key": args.h5_key is not None,
               "--sample-index": args.sample_index is not None, "--layout": args.layout != "auto",
               "--start-frame": args.start_frame is not None, "--analysis-time": args.analysis_time is not None,
               "--standard-name": args.standard_name is not None, "--storage-option": bool(args.storage_option)}
    bad = [k for k, v in ignored.items() if v]
    if bad:
        raise ValueError(f"--watch reads radar files and nowcasts the newest frames; {', '.join(bad)} does not apply")
    watcher = FolderWatcher(
        args.baseline or args.checkpoint, args.watch, args.out,
        radar_format=args.radar_format, radar_pattern=args.pattern,
        retries=RETRIES if args.retries is None else args.retries, catch_up=args.catch_up, keep=args.keep,
        crop=args.crop, size=tuple(args.size) if args.size else None, t_in=args.t_in, t_out=args.t_out,
        data_meta=args.data_meta, members=args.members, seed=args.seed, prob_threshold=args.prob_threshold,
        sample_kwargs=_sample_kwargs(args), units=args.units, html=not args.no_html,
        command=_command(), output_format=args.output_format,
    )
    # One log line per cycle: the per-step INFO lines of reading and writing only with -v.
    levels = {} if args.verbose else {"diffcast": logging.WARNING,
                                      "diffcast.streaming": logging.WARNING if args.quiet else logging.INFO}
    saved = {name: logging.getLogger(name).level for name in levels}
    # SIGTERM (service managers, kill) stops like Ctrl-C: the current cycle is abandoned, no partial output.
    main_thread = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        poll = POLL_SECONDS if args.poll_seconds is None else args.poll_seconds
        cycles = watcher.run(poll, max_cycles=args.max_cycles, once=args.once)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old_term is None else old_term)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    written = sum(c.status == "written" for c in cycles)
    skipped = sum(c.status not in ("written", "exists") for c in cycles)
    print(f"watched {args.watch}: {len(cycles)} cycle(s), {written} nowcast(s) written to {args.out}, {skipped} skipped")
    return 0
