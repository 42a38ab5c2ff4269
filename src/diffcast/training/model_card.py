"""``RUN/MODEL_CARD.md``: what a training run made, from what data, how long it took.

Written by the trainer at the end of every run (and rewritten when a run is
resumed), beside ``summary.json``; the data section comes from the dataset's
``provenance()`` when it has one (an mlcast spec store: identifier, version, URL,
variable, units, split ranges), so a model file handed on keeps its origin in
words as well as in its safetensors metadata (``diffcast_data``). Shipped models
have hand-written cards with scores (``src/diffcast/weights/NAME/MODEL_CARD.md``);
this is the card of any run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Provenance keys shown first, in this order, with their labels; any others follow as they come.
_DATA_KEYS = {
    "mlcast_dataset_identifier": "dataset",
    "mlcast_dataset_version": "dataset version",
    "store": "store",
    "variable": "variable",
    "standard_name": "standard name",
    "units": "units",
    "quantity": "read as",
    "timestep_min": "time step (min)",
    "license": "licence",
}


def _value(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        return f"`{json.dumps(v, sort_keys=True, default=str)}`"
    return f"`{v}`"


def model_card(config: dict[str, Any], summary: dict[str, Any], provenance: dict[str, Any] | None) -> str:
    """The card's Markdown text from the run's resolved ``config``, its ``summary.json`` and the data provenance."""
    model, data, train = config.get("model", {}), config.get("data", {}), config.get("train", {})
    backbone = (model.get("backbone") or {}).get("name", "-")
    lines = [
        f"# {config.get('name', 'diffcast run')}",
        "",
        "Written by `diffcast train` at the end of the run (`summary.json`, `config.yaml` and, for data",
        "that say where they come from, `data.json` beside it).",
        "",
        "## Model",
        "",
        f"- type `{model.get('type', '-')}`, backbone `{backbone}`, {model.get('t_in', '?')} -> {model.get('t_out', '?')}"
        f" frames of {model.get('height', '?')} x {model.get('width', '?')}, {model.get('channels', 1)} channel(s)",
        "",
        "## Data",
        "",
        f"- dataset `{data.get('name', '-')}`, splits `{data.get('train_split', '-')}` / `{data.get('val_split', '-')}`",
    ]
    if provenance:
        shown = [k for k in _DATA_KEYS if k in provenance] + [k for k in provenance if k not in _DATA_KEYS and k != "splits"]
        lines += [f"- {_DATA_KEYS.get(k, k)}: {_value(provenance[k])}" for k in shown]
        for split, ranges in (provenance.get("splits") or {}).items():
            lines.append(f"- {split} time ranges: {', '.join(f'`{r}`' for r in ranges) or '-'}")
    else:
        lines.append("- no provenance beyond the config (the dataset does not record one)")
    wall = float(summary.get("wall_s") or 0.0)
    lines += [
        "",
        "## Training",
        "",
        f"- {summary.get('steps', '?')} of {summary.get('max_steps', '?')} updates"
        f" ({summary.get('samples_seen', '?')} samples), batch {train.get('batch_size', '?')},"
        f" learning rate {train.get('lr', '?')}, {summary.get('num_processes', 1)} process(es)",
        f"- wall time of the last session: {wall / 60:.1f} min"
        + (" (interrupted)" if summary.get("interrupted") else ""),
        f"- final training loss {summary.get('final_loss', '-')}; best {summary.get('best_metric', '-')}:"
        f" {summary.get('best_score', '-')} at step {summary.get('best_step', '-')}",
    ]
    if (train.get("distill") or {}).get("teacher"):
        d = train["distill"]
        lines.append(f"- distilled from `{d['teacher']}`: {d.get('steps')} step(s), {d.get('substeps')} teacher sub-steps each")
    lines += ["", "## Files", "",
              f"- last checkpoint: `{summary.get('last_checkpoint') or '-'}`",
              f"- best checkpoint: `{summary.get('best_checkpoint') or '-'}`", ""]
    return "\n".join(lines)


def write_model_card(run_dir: str | Path, config: dict[str, Any], summary: dict[str, Any],
                     provenance: dict[str, Any] | None) -> Path:
    """Write :func:`model_card` to ``RUN/MODEL_CARD.md`` (atomically) and return its path."""
    from ..utils.io import atomic_write_text

    path = Path(run_dir) / "MODEL_CARD.md"
    atomic_write_text(path, model_card(config, summary, provenance))
    return path
