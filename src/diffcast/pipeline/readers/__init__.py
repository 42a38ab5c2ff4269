"""Nowcast input readers, one module per input kind, each returning a :class:`RawInput`.

- :mod:`.images`: folders of numbered images (SEVIR demo folders included);
- :mod:`.arrays`: ``.npy`` and HDF5 arrays (SEVIR files included);
- :mod:`.radar`: radar files indexed by time, decoded lazily by the pysteps importers;
- :mod:`.zarr`: radar archives in the mlcast Zarr spec (a folder or a URL), read lazily.

They decode files through the data layer (:mod:`diffcast.data.images`,
:mod:`diffcast.data.radar`) that the training datasets share;
:func:`diffcast.pipeline.inputs.read_input` picks the reader.
"""

from .base import INPUT_KINDS, RawInput

__all__ = ["INPUT_KINDS", "RawInput"]
