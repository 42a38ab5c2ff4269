"""``diffcast convert-official``: the authors' published checkpoint -> our model file.

Examples
--------
diffcast convert-official diffcast_phydnet_sevir128.pt diffcast_phydnet_sevir128.safetensors
diffcast convert-official diffcast_phydnet_sevir128.pt ema.safetensors --weights ema
diffcast nowcast diffcast_phydnet_sevir128.safetensors ...
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-official",
        help="convert the published DiffCast checkpoint (diffcast_phydnet_sevir128.pt) to a model file",
        description=(
            "Read the authors' torch.save checkpoint with weights_only=True, check every tensor name and "
            "shape against our paper-preset DiffCast-PhyDNet, and write one .safetensors model file "
            "(config and SEVIR metadata inside) that `diffcast nowcast` / `evaluate` accept."
        ),
    )
    p.add_argument("src", metavar="SRC.pt", help="the published checkpoint")
    p.add_argument("out", metavar="OUT.safetensors", help="output model file (written atomically)")
    p.add_argument(
        "--weights",
        choices=("model", "ema"),
        default="model",
        help="which weights to convert (default: model, as in the published evaluation)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.diffusion.convert import convert_official

    out = convert_official(args.src, args.out, weights=args.weights)
    print(f"wrote {out} ({args.weights} weights)")
    return 0
