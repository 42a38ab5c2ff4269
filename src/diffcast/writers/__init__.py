"""Writers of nowcast outputs: NetCDF, pictures, HTML, and the staging that publishes them together.

- :mod:`diffcast.writers.netcdf`: ``forecast.nc`` (CF-1.8: members, ensemble mean,
  exceedance probabilities, observations, coverage, grid mapping), written lead by lead;
- :mod:`diffcast.writers.cf_layout`: what both forecast files hold besides the
  gridded arrays (coordinates, grid mapping, attributes, encodings);
- :mod:`diffcast.writers.zarr`: ``forecast.zarr`` (``--format zarr``), the same
  content as a Zarr store;
- :mod:`diffcast.viz.animate`: ``forecast.gif`` and ``panel.png``;
- :mod:`diffcast.viz.forecast_page`: ``forecast.html``, one self-contained page;
- :mod:`diffcast.writers.staging`: the temporary folder they write into, renamed
  to the output folder only when every file is written.

The picture and page writers live in :mod:`diffcast.viz` beside the colour maps
they share and are re-exported here. Writers never import the forecast pipeline
(:mod:`diffcast.pipeline`) or the readers; the georeferencing they share with the
readers is :class:`diffcast.geo.ProjectedGrid`. This package replaces
``diffcast.io_netcdf``, which remains as a deprecated alias.
"""

from ..viz.animate import save_forecast_gif, save_forecast_panel
from ..viz.forecast_page import write_forecast_page
from .netcdf import build_forecast_dataset, exceedance_probability, write_forecast_netcdf
from .staging import staged_output
from .zarr import write_forecast_zarr

__all__ = [
    "build_forecast_dataset",
    "exceedance_probability",
    "save_forecast_gif",
    "save_forecast_panel",
    "staged_output",
    "write_forecast_netcdf",
    "write_forecast_page",
    "write_forecast_zarr",
]
