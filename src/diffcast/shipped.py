"""Models that ship with the package (``src/diffcast/weights/NAME/``): no download, ever.

Each shipped model is a folder ``weights/NAME/`` with ``model.safetensors`` (weights,
resolved config and dataset metadata, as written by ``diffcast train``),
``MODEL_CARD.md`` (data, config, steps, wall time, scores, limits) and the
``config.yaml`` that reproduces it with one ``diffcast train`` command. A shipped
name is accepted wherever a model path is (``--checkpoint NAME``, ``-m NAME``,
``diffcast.nowcast(model=NAME)``) through
:func:`diffcast.training.model_io.resolve_model_file`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Folder of the shipped models (inside the installed package).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: The model ``diffcast.nowcast`` and ``diffcast nowcast`` use when none is named, if it ships.
DEFAULT_SHIPPED = "radar_diffcast_sprog_s075"


@dataclass(frozen=True)
class ShippedModel:
    """A model folder under :data:`WEIGHTS_DIR`."""

    name: str
    folder: Path

    @property
    def file(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def card(self) -> Path:
        return self.folder / "MODEL_CARD.md"

    @property
    def summary(self) -> str:
        """First non-heading line of the model card."""
        if self.card.is_file():
            for line in self.card.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.startswith("#"):
                    return line.strip()
        return ""


def shipped_models() -> dict[str, ShippedModel]:
    """Shipped models by name (folders holding a ``model.safetensors``)."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {
        d.name: ShippedModel(d.name, d)
        for d in sorted(WEIGHTS_DIR.iterdir())
        if d.is_dir() and (d / "model.safetensors").is_file()
    }


def shipped_file(name: str) -> Path | None:
    """The weights file of shipped model ``name``, or ``None``."""
    m = shipped_models().get(str(name))
    return m.file if m is not None else None


def default_model(fallback: str = "steps") -> str:
    """:data:`DEFAULT_SHIPPED` when it ships, else ``fallback`` (a baseline)."""
    return DEFAULT_SHIPPED if DEFAULT_SHIPPED in shipped_models() else fallback
