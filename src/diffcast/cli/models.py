"""``diffcast models``: the models that ship with the package, and the baselines."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the shipped trained models and the baselines (names usable as --checkpoint / -m / model=)",
        description="List the trained models that ship inside the package (no download) and the baselines. "
        "Each name works as `diffcast nowcast --checkpoint NAME`, `diffcast evaluate -m NAME` and "
        "`diffcast.nowcast(..., model=NAME)`.",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def collect() -> dict:
    from ..inference import BASELINES
    from ..shipped import default_model, shipped_models
    from ..training.model_io import load_model_file

    models = []
    for name, m in shipped_models().items():
        state, config, metadata = load_model_file(m.file)
        mcfg = config.get("model", {})
        models.append({
            "name": name,
            "file": str(m.file),
            "card": str(m.card) if m.card.is_file() else None,
            "size_mb": round(m.file.stat().st_size / 1e6, 2),
            "parameters": int(sum(v.numel() for v in state.values())),
            "type": mcfg.get("type"),
            "backbone": (mcfg.get("backbone") or {}).get("name"),
            "t_in": mcfg.get("t_in"),
            "t_out": mcfg.get("t_out"),
            "summary": m.summary,
        })
    return {"shipped": models, "baselines": list(BASELINES), "default": default_model()}


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if info["shipped"]:
        print("shipped models:")
        for m in info["shipped"]:
            default = "  (default)" if m["name"] == info["default"] else ""
            print(f"  {m['name']}{default}: {m['type']} on {m['backbone']}, {m['t_in']} -> {m['t_out']} frames, "
                  f"{m['parameters']:,} parameters, {m['size_mb']} MB")
            if m["summary"]:
                print(f"      {m['summary']}")
            if m["card"]:
                print(f"      model card: {m['card']}")
    else:
        print("shipped models: none installed")
    print(f"baselines: {', '.join(info['baselines'])}")
    print(f"default for diffcast.nowcast: {info['default']}")
    return 0
