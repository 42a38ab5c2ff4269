"""Deterministic backbones, one file each, selected by name from :data:`BACKBONES`.

``BACKBONES.build(name, t_in=5, t_out=20, channels=1, height=128, width=128, **kwargs)``
"""

from ...registry import Registry
from .base import Backbone

BACKBONES = Registry("backbone")

from . import convgru, earthformer, extrapolation, persistence, phydnet, pysteps_methods, simvp  # noqa: E402,F401

__all__ = ["BACKBONES", "Backbone"]
