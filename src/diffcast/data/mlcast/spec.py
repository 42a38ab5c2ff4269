"""What diffcast relies on in the mlcast ``source_data/radar_precipitation`` spec (0.3.0).

The spec (checked by the ``mlcast-dataset-validator`` package, whose own text is
the reference) asks for one data variable ``(time, y, x)`` found by its CF
``standard_name``, with ``units``; this module maps each allowed standard name and
unit to the quantity diffcast works in (mm/h for rain, dBZ for reflectivity) and
says how to convert. Nothing here opens a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Version of the spec this reader follows.
SPEC_VERSION = "0.3.0"


@dataclass(frozen=True)
class Quantity:
    """How a spec variable becomes diffcast's quantity.

    Attributes
    ----------
    kind : {"rate", "amount", "reflectivity"}
        Rain rate, accumulation over the time step, or reflectivity.
    quantity : {"mm/h", "dBZ"}
        What diffcast gives back (outputs, metrics).
    factor : float
        Multiplier to mm/h (rates), mm (amounts) or dBZ (1.0).
    """

    kind: str
    quantity: str
    factor: float

    def convert(self, values: Any, hours: Any = None, copy: bool = True) -> np.ndarray:
        """``(T, ...)`` values of the variable in :attr:`quantity` (float32, NaN kept).

        Multiplies by :attr:`factor`; amounts are then divided by ``hours``, the
        interval each frame accumulates over (a scalar or one value per frame along
        axis 0), which they need. Used by the store reader and by
        ``diffcast.nowcast`` on an ``xarray.DataArray``, so both convert alike.
        ``copy=False``: a float32 ``values`` that the caller owns is converted in place
        (the store reader's freshly decompressed frames: no second frame-sized copy).
        """
        out = np.array(values, dtype=np.float32, copy=True if copy else None)
        if self.factor != 1.0:
            out *= np.float32(self.factor)
        if self.kind == "amount":
            if hours is None:
                raise ValueError("an accumulation (precipitation_amount) needs the hours it covers to become mm/h")
            h = np.asarray(hours, dtype=np.float32)
            out /= h.reshape(h.shape + (1,) * (out.ndim - h.ndim)) if h.ndim else h
        return out


#: Allowed standard names -> kind.
STANDARD_NAMES = {
    "rainfall_flux": "rate",
    "precipitation_flux": "rate",
    "precipitation_amount": "amount",
    "rainfall_amount": "amount",
    "equivalent_reflectivity_factor": "reflectivity",
}

#: Accepted units per kind (normalised: lower case, no spaces around ``/``) -> factor.
_UNITS = {
    "rate": {
        "kg m-2 h-1": 1.0, "mm h-1": 1.0, "mm/h": 1.0, "mm hr-1": 1.0, "mm/hr": 1.0,
        "kg m-2 s-1": 3600.0, "mm s-1": 3600.0, "mm/s": 3600.0,
    },
    "amount": {"kg m-2": 1.0, "mm": 1.0, "m": 1000.0},
    "reflectivity": {"dbz": 1.0},
}


def _norm_units(units: str) -> str:
    u = " ".join(str(units).strip().lower().replace("**", "").replace("^", "").split())
    return u.replace(" / ", "/").replace("kg/m2/h", "kg m-2 h-1").replace("kg/m2", "kg m-2")


def quantity_of(standard_name: str, units: str) -> Quantity:
    """The :class:`Quantity` of a variable from its ``standard_name`` and ``units``.

    Raises
    ------
    ValueError
        Unknown standard name or units not allowed for it (the message lists the choices).
    """
    kind = STANDARD_NAMES.get(str(standard_name))
    if kind is None:
        raise ValueError(
            f"standard_name {standard_name!r} is not one of the spec's: {', '.join(STANDARD_NAMES)}"
        )
    table = _UNITS[kind]
    factor = table.get(_norm_units(units))
    if factor is None:
        raise ValueError(
            f"units {units!r} of a {standard_name} variable are not understood; "
            f"expected one of: {', '.join(sorted(set(table)))}"
        )
    return Quantity(kind, "dBZ" if kind == "reflectivity" else "mm/h", factor)


#: Length units of projected coordinates -> metres.
LENGTH_UNITS = {"m": 1.0, "metre": 1.0, "meter": 1.0, "metres": 1.0, "meters": 1.0,
                "km": 1000.0, "kilometre": 1000.0, "kilometer": 1000.0, "kilometres": 1000.0,
                "kilometers": 1000.0}
