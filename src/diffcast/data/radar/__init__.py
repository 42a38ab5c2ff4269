"""Real radar archives read with the pysteps importers.

One concern per module; imports point one way (each module uses only those above it):

- :mod:`.importers`: the pysteps importers of the DWD (HDF5, RADOLAN), MeteoSwiss
  HDF5 and METRANET, NWC SAF CRR, FMI GeoTIFF and MRMS GRIB2 formats, and the
  optional libraries some need (:func:`require_library`);
- :mod:`.formats`: the supported file formats, one per pysteps importer (MeteoSwiss
  GIF, FMI PGM, BoM NetCDF, ODIM and OPERA HDF5, KNMI HDF5 and those above), time
  stamps from the file names (ODIM: the ``/what`` attributes), :func:`detect_format`;
- :mod:`.frames`: one file as a ``[0, 1]`` frame (dBZ / 90; rain rates by
  Marshall-Palmer), north-up, cropped or regridded (:func:`read_frame`), and the
  metadata of frames (:class:`RadarFrames`, :func:`radar_quantity`);
- :mod:`.files`: the radar files of a folder sorted by time
  (:func:`list_radar_files`, :func:`select_files`) and the time-stamp checks;
- :mod:`.series`: files of one series indexed by time and decoded lazily
  (:class:`RadarSeries`, :class:`LazyFrames`), :func:`read_radar_files`;
- :mod:`.events`: events (runs of frames without a gap longer than an hour) and
  their splits (:func:`find_events`, :func:`assign_events`);
- :mod:`.archive`: :class:`RadarArchive`, the training dataset ``"radar"``, split
  by event, never by frame.

Time series are never bridged across gaps: a sequence only contains frames
exactly one time step apart. Every name is importable from here.
"""

from .archive import RadarArchive
from .events import (
    EVENT_GAP_MIN,
    RADAR_SPLITS,
    RadarEvent,
    assign_events,
    contiguous_runs,
    find_events,
)
from .files import list_radar_files, select_files
from .formats import (
    ODIM_QUANTITIES,
    RADAR_FORMATS,
    RadarFormat,
    detect_format,
    odim_quantities,
)
from .frames import (
    DBZ_SCALE,
    RadarFrames,
    frame_header,
    radar_quantity,
    read_frame,
    regrid,
    source_metadata,
    to_unit_interval,
)
from .importers import OPTIONAL_LIBRARIES, require_library
from .series import LazyFrames, RadarSeries, read_radar_files

__all__ = [
    "DBZ_SCALE",
    "EVENT_GAP_MIN",
    "LazyFrames",
    "ODIM_QUANTITIES",
    "OPTIONAL_LIBRARIES",
    "RADAR_FORMATS",
    "RADAR_SPLITS",
    "RadarArchive",
    "RadarEvent",
    "RadarFormat",
    "RadarFrames",
    "RadarSeries",
    "assign_events",
    "contiguous_runs",
    "detect_format",
    "find_events",
    "list_radar_files",
    "odim_quantities",
    "radar_quantity",
    "frame_header",
    "read_frame",
    "read_radar_files",
    "regrid",
    "require_library",
    "select_files",
    "source_metadata",
    "to_unit_interval",
]
