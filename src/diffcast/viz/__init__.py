"""Visualisation: colour maps, previews, animations and reports.

Submodules import matplotlib lazily so that importing :mod:`diffcast.viz` stays cheap.
"""

from .colormaps import colorize, colorize_vil, dbz_cmap, vil_cmap, vil_lut

__all__ = ["colorize", "colorize_vil", "dbz_cmap", "vil_cmap", "vil_lut"]
