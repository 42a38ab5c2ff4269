"""Training logs: ``RUN/log.csv`` (one row per logged step), ``RUN/val.csv``, TensorBoard and optional wandb."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from ..utils.io import atomic_write_text

log = logging.getLogger(__name__)


class CsvLog:
    """Append rows to a CSV file with a header fixed by the first row.

    On resume (``resume_step`` given) rows logged after that step by the
    interrupted run are dropped, so the file reads as one continuous run.
    Keys missing from a row are left empty; keys not in the header are ignored.
    """

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields: list[str] | None = None
        if self.path.is_file() and resume_step is not None:
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                self.fields = list(reader.fieldnames or []) or None
                rows = [r for r in reader if _as_int(r.get("step")) <= resume_step]
            if self.fields:
                buf = io.StringIO()
                writer = csv.DictWriter(buf, fieldnames=self.fields, lineterminator="\n")
                writer.writeheader()
                writer.writerows(rows)
                atomic_write_text(self.path, buf.getvalue())
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with open(self.path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(v) for k, v in row.items()})


def _as_int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return -1


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


class RunLoggers:
    """Fan out scalars to the enabled sinks (main process only)."""

    def __init__(self, run_dir: Path, csv_on: bool, tb_on: bool, wandb_on: bool, wandb_project: str,
                 config: dict[str, Any], resume_step: int | None) -> None:
        self.train_csv = CsvLog(run_dir / "log.csv", resume_step) if csv_on else None
        self.val_csv = CsvLog(run_dir / "val.csv", resume_step) if csv_on else None
        self.tb = None
        if tb_on:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is a dependency, but never required to train
                log.warning("TensorBoard logging disabled: %s", exc)
            else:
                purge = resume_step + 1 if resume_step else None
                self.tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=purge)
        self.wandb = None
        if wandb_on:
            try:
                import wandb  # optional; only imported when enabled
            except ImportError:
                raise ValueError("logging.wandb is true but wandb is not installed; pip install wandb "
                                 "or set logging.wandb=false") from None
            self.wandb = wandb.init(project=wandb_project, config=config, dir=str(run_dir),
                                    resume="allow" if resume_step else None)

    def train(self, step: int, scalars: dict[str, float]) -> None:
        if self.train_csv:
            self.train_csv.write({"step": step, **scalars})
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb:
            self.wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=step)

    def val(self, step: int, scalars: dict[str, float]) -> None:
        if self.val_csv:
            self.val_csv.write({"step": step, **scalars})
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(f"val/{k}", v, step)
        if self.wandb:
            self.wandb.log({f"val/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()
