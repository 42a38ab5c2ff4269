"""The record every nowcast input reader returns: :class:`RawInput`.

Each input kind has its reader module beside this one (:mod:`.images`,
:mod:`.arrays` for ``.npy`` and HDF5 arrays, :mod:`.radar`, :mod:`.zarr` for
mlcast spec stores); they decode files
through the data layer (:mod:`diffcast.data.images`, :mod:`diffcast.data.radar`)
that the training datasets use too, and return frames, grid, mask and units in
this one record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...data.contract import DatasetMeta
from ...geo import ProjectedGrid

#: Input kinds understood by :func:`read_input`.
INPUT_KINDS = ("images", "radar", "npy", "h5", "zarr")


@dataclass
class RawInput:
    """Frames as read from the user's files, before fitting them to a model.

    Attributes
    ----------
    frames : ndarray
        ``(T, H, W)`` float32 in ``[0, 1]`` in the encoding of :attr:`meta`
        (or of the model's metadata when :attr:`meta` is ``None``).
    kind : str
        One of :data:`INPUT_KINDS`.
    sources : list of str
        Files read, in time order (one per frame for images and radar files).
    meta : DatasetMeta or None
        Metadata of the values when the files declare it (radar); ``None`` when
        the values are taken to be in the model's encoding (images, arrays).
    times : list of datetime or None
        Valid time of each frame when the files carry timestamps.
    timestep_min : float or None
        Minutes between frames when known.
    y_true : ndarray or None
        ``(T_out, H, W)`` observed future when the input provides it (demo folders).
    pixel_km : float or None
        Grid spacing of the frames when known.
    notes : list of str
        Things done to the data worth recording (missing values filled, ...).
    grid : ProjectedGrid or None
        Map projection of the ``(H, W)`` frames (radar files with pysteps
        georeferencing); ``None`` when the input has none.
    start_frame : int or None
        First input frame the input kind suggests (0 for SEVIR events); ``None``:
        the last frames.
    mask : ndarray or None
        ``(T, H, W)`` bool, True where a frame has no data (outside radar
        coverage); ``None``: every pixel is covered (images, arrays).
    quantity : str or None
        What the files hold when they say (radar: ``"mm/h"`` for rain rates and
        accumulations, ``"dBZ"`` for reflectivity); outputs are given in it by default.
    latlon : (ndarray, ndarray) or None
        The input's own ``(lat, lon)`` of the ``(H, W)`` pixel centres in degrees
        (Zarr spec stores), written to the outputs instead of values computed from
        :attr:`grid` when the forecast is on the input's grid.
    attrs : dict
        What the outputs record about the input as global attributes (a store's
        URL, variable, dataset identifier and version).

    Notes
    -----
    Radar frames and Zarr store frames (and their masks) are array-likes that decode a file the first
    time its frame is indexed (:class:`diffcast.data.radar.LazyFrames`), so
    :func:`prepare_input` reads only the frames it uses.
    """

    frames: Any
    kind: str
    sources: list[str]
    meta: DatasetMeta | None = None
    times: list[dt.datetime] | None = None
    timestep_min: float | None = None
    y_true: np.ndarray | None = None
    pixel_km: float | None = None
    notes: list[str] = field(default_factory=list)
    grid: ProjectedGrid | None = None
    start_frame: int | None = None
    mask: Any = None
    quantity: str | None = None
    latlon: tuple[np.ndarray, np.ndarray] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
