"""Per-frame metric records (:func:`frame_metrics`) and their ``xarray.Dataset``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Number

import numpy as np

from noisewarp.metrics._common import DATASET_NAMES, DESCRIPTIONS
from noisewarp.metrics.spatial import gaussianity_and_sums
from noisewarp.metrics.temporal import carried_metrics, temporal_metrics

__all__ = ["frame_metrics", "metrics_dataset"]


# ---------------------------------------------------------------------- collections


def frame_metrics(
    frame: np.ndarray,
    prev: np.ndarray | None = None,
    tmap: np.ndarray | None = None,
    *,
    conditional=None,
    method: str = "particle",
) -> dict[str, float]:
    """All metrics of one frame: :func:`gaussianity`, plus the temporal ones.

    The temporal metrics come from ``conditional`` (the ``Conditional`` the kernel
    reported for this frame: :func:`carried_metrics`), or are computed under
    ``method``'s model from ``prev`` (frame t) and ``tmap`` (the backward map from
    ``frame`` to ``prev``): :func:`temporal_metrics`.
    """
    if (prev is None) != (tmap is None):
        raise ValueError("temporal metrics need both prev and tmap (or neither)")
    out, frame_sums = gaussianity_and_sums(frame)
    if conditional is not None:
        out.update(carried_metrics(frame, conditional, frame_sums=frame_sums))
    elif prev is not None:
        out.update(temporal_metrics(prev, frame, tmap, method))
    return out


def _attr_value(value):
    """netCDF attributes hold strings and numbers; anything else is written as text."""
    if isinstance(value, (str, int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    ):
        return value
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    return str(value)


def metrics_dataset(
    records: Sequence[Mapping],
    dims: Sequence[str] = ("frame",),
    attrs: Mapping | None = None,
):
    """Collect per-frame metric dictionaries into an ``xarray.Dataset``.

    Parameters
    ----------
    records : sequence of mapping
        One dict per frame (e.g. from :func:`frame_metrics`), statistic -> scalar.
        Keys named in ``dims`` give the coordinates; for a single dimension
        absent from the records, the coordinate is 0, 1, 2, ...
    dims : sequence of str
        Dimension names, e.g. ``("frame",)`` or ``("method", "frame")``;
        several dims form the full product grid, missing cells are nan.
    attrs : mapping, optional
        Extra dataset attributes (non-numeric values are stored as text).

    Returns
    -------
    xarray.Dataset
        One variable per statistic (the union over records; missing values are
        nan), each with a ``long_name`` where known; ``mean`` and ``std`` are named
        ``noise_mean`` and ``noise_std`` (``DATASET_NAMES``). Save with
        ``ds.to_netcdf(path, engine="h5netcdf")``.
    """
    import pandas as pd
    import xarray as xr

    from noisewarp import __version__

    dims = tuple(dims)
    rows = [dict(record) for record in records]
    if len(dims) == 1 and not any(dims[0] in row for row in rows):
        for index, row in enumerate(rows):
            row[dims[0]] = index
    missing = [dim for dim in dims if not all(dim in row for row in rows)]
    if missing:
        raise ValueError(f"every record needs the dimension keys {dims}; missing {missing}")
    for row in rows:
        for key, value in row.items():
            if key in dims:
                continue
            if isinstance(value, (bool, np.bool_)):
                row[key] = int(value)
            elif value is None:
                row[key] = math.nan
            elif not isinstance(value, (Number, str, np.generic)):
                raise TypeError(f"metric {key!r} must be a scalar, got {type(value).__name__}")
    table = pd.DataFrame(rows)
    if table.duplicated(subset=list(dims)).any():
        raise ValueError(f"records repeat a coordinate of {dims}")
    dataset = xr.Dataset.from_dataframe(table.set_index(list(dims)))
    for name, variable in dataset.data_vars.items():
        if name in DESCRIPTIONS:
            variable.attrs.update(long_name=DESCRIPTIONS[name], units="1")
    # ds.mean and ds.std are Dataset methods: the statistics get names that cannot shadow.
    dataset = dataset.rename({k: v for k, v in DATASET_NAMES.items() if k in dataset})
    dataset.attrs.update(
        {
            "title": "noisewarp noise metrics",
            "null_hypothesis": "every element i.i.d. N(0, 1)",
            "temporal_model": "E[Y | X] of each method's own model, from its kernel",
            "noisewarp_version": __version__,
        }
    )
    for key, value in (attrs or {}).items():
        dataset.attrs[str(key)] = _attr_value(value)
    return dataset
