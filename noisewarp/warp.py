"""Public warping API: validation at the boundary, a registry of methods, streaming.

>>> import numpy as np, noisewarp as nw
>>> noise = nw.initial_noise(64, 64, 4, seed=0)
>>> shift = nw.deform.Translate(rows=0.5, cols=1.25)
>>> warped = nw.warp(noise, shift.map(64, 64), method="particle", key=nw.Key(seed=0, frame=1))
>>> warped.shape, warped.dtype
((64, 64, 4), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from noisewarp.core.checks import as_map, as_noise_frame
from noisewarp.core.rng import Key, Purpose, normals
from noisewarp.cpu.diagnostics import Conditional
from noisewarp.deform import Deformation

__all__ = [
    "Conditional",
    "Diagnostics",
    "Geometry",
    "Method",
    "METHODS",
    "register_method",
    "warp",
    "initial_noise",
    "NoiseWarper",
]


@dataclass(frozen=True)
class Geometry:
    """The deformation of one frame step as the kernels see it.

    ``centres`` is T at pixel centres [H, W, 2] (float64, validated). ``corners``
    is T at pixel corners [H+1, W+1, 2] when known exactly (analytic
    deformations); otherwise methods that need corners derive them from the
    centres (``noisewarp.flow.corner_map_from_centres``).
    """

    centres: np.ndarray
    corners: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.centres.shape[:2]

    def corner_map(self) -> np.ndarray:
        """T at the (H+1) x (W+1) pixel corners: exact if known, else interpolated."""
        if self.corners is not None:
            return self.corners
        from noisewarp.flow import corner_map_from_centres

        return corner_map_from_centres(self.centres)

    @classmethod
    def from_input(cls, deformation, height: int, width: int, frame: int = 0) -> Geometry:
        """Build from a map array [H, W, 2] or a ``Deformation``; validates either."""
        if isinstance(deformation, Geometry):
            return deformation
        if isinstance(deformation, Deformation):
            centres = as_map(deformation.map(height, width, frame), height, width, "map", frame)
            corners = deformation.corner_map(height, width, frame)
            return cls(centres, np.ascontiguousarray(corners, dtype=np.float64))
        return cls(as_map(deformation, height, width, "map", frame))


@dataclass(frozen=True)
class Diagnostics:
    """What happened in one warp (docs/methods.md).

    fresh_pixels
        Targets filled entirely with fresh noise (nothing of frame t reaches them).
    overclaimed_sources
        Sources whose pieces were claimed more than once (S_q > 1: fold-over).
    unclaimed_sources
        Sources no target draws from (their noise leaves the video).
    area_min, area_mean, area_max
        Statistics of A_p, the area each target draws (NaN where a method has none).
    extra
        Method-specific figures.
    """

    fresh_pixels: int
    overclaimed_sources: int = 0
    unclaimed_sources: int = 0
    area_min: float = float("nan")
    area_mean: float = float("nan")
    area_max: float = float("nan")
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


Kernel = Callable[..., tuple]


@dataclass(frozen=True)
class Method:
    """A warping method: ``kernel(noise, geometry, key, options, conditional) -> (frame,
    stats)``, plus a third element, the ``Conditional`` E[Y | X] of the method's own
    model, when ``conditional`` is true."""

    name: str
    kernel: Kernel
    description: str
    options: dict = field(default_factory=dict)


METHODS: dict[str, Method] = {}


def register_method(name: str, description: str, **options) -> Callable[[Kernel], Kernel]:
    """Register a kernel under ``name``; ``options`` are its defaults (e.g. ``n=8``)."""

    def decorate(kernel: Kernel) -> Kernel:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        METHODS[name] = Method(name, kernel, description, dict(options))
        return kernel

    return decorate


def _method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


_BACKENDS = ("auto", "cpu", "cuda")


def _resolve_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(_BACKENDS)}")
    if backend == "cuda":
        raise RuntimeError(
            "backend='cuda' is not available in this build: the numba.cuda kernels are not "
            "implemented yet; use backend='cpu' (or 'auto')"
        )
    return "cpu"


def warp(
    noise: np.ndarray,
    deformation: np.ndarray | Deformation,
    *,
    method: str = "particle",
    key: Key | int | tuple[int, int] = 0,
    backend: str = "auto",
    return_diagnostics: bool = False,
    return_conditional: bool = False,
    **options,
):
    """Warp one noise frame along a deformation.

    Parameters
    ----------
    noise : ndarray [H, W, C], float32 or float64
        Source frame, i.i.d. N(0, 1). Returned frames are float32.
    deformation : ndarray [H, W, 2] or Deformation
        Backward map T in (row, col) pixel units: target pixel centre p of the
        new frame came from T(p) in ``noise`` (docs/conventions.md). Use
        ``noisewarp.flow`` to turn optical flow into a map. Positions outside
        the frame are valid: that content gets fresh noise.
    method : str
        A name in ``noisewarp.METHODS`` (``"particle"``, ...).
    key : Key, int or (seed, frame)
        All randomness is a pure function of the key: the same inputs and key
        give bit-identical output on any number of threads.
    backend : {"auto", "cpu", "cuda"}
    return_diagnostics : bool
        Also return a ``Diagnostics``.
    return_conditional : bool
        Also return a ``Conditional``: E[Y | X] under this method's own model
        (``mean`` [H, W, C]) and the fraction of each pixel's variance that ``noise``
        explains (``carried`` [H, W]), computed by the kernel from its own areas.
    **options
        Method options (for example ``n`` for hiwyn).

    Returns
    -------
    ndarray [H, W, C] float32, followed by the Diagnostics and the Conditional when asked
    """
    noise = as_noise_frame(noise)
    height, width, _ = noise.shape
    key = Key.coerce(key)
    # A time-varying Deformation is evaluated at the source frame of this step.
    geometry = Geometry.from_input(deformation, height, width, max(key.frame - 1, 0))
    out, diagnostics, conditional = _warp_validated(
        noise, geometry, method, key, backend, return_conditional, options
    )
    extra = (diagnostics,) if return_diagnostics else ()
    extra += (conditional,) if return_conditional else ()
    return (out, *extra) if extra else out


def _warp_validated(noise, geometry, method, key, backend, conditional, options):
    """Run the kernel; return ``(frame, Diagnostics, Conditional or None)``."""
    spec = _method(method)
    _resolve_backend(backend)
    unknown = set(options) - set(spec.options)
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise TypeError(
            f"method {method!r} got unknown option(s) {sorted(unknown)}; valid: {valid}"
        )
    merged = {**spec.options, **options}
    if conditional:  # True, or buffers to fill (NoiseWarper)
        out, stats, moments = spec.kernel(noise, geometry, key, merged, conditional)
    else:
        (out, stats), moments = spec.kernel(noise, geometry, key, merged, False), None
    return out, Diagnostics(**_split_stats(stats)), moments


_CORE_FIELDS = (
    "fresh_pixels",
    "overclaimed_sources",
    "unclaimed_sources",
    "area_min",
    "area_mean",
    "area_max",
)


def _split_stats(stats: dict) -> dict:
    core = {k: stats[k] for k in _CORE_FIELDS if k in stats}
    core["extra"] = {k: v for k, v in stats.items() if k not in _CORE_FIELDS}
    return core


def initial_noise(
    height: int, width: int, channels: int = 4, seed: int = 0, frame: int = 0
) -> np.ndarray:
    """The first frame of a sequence: i.i.d. N(0, 1) float32 [H, W, C], pure in (seed, frame)."""
    for name, value in (("height", height), ("width", width), ("channels", channels)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return normals((height, width, channels), Key(seed, frame), Purpose.INIT, dtype=np.float32)


class NoiseWarper:
    """Stateful warper: keeps the current frame and warps it along each new deformation.

    Frame ``t`` (``t >= 1``) is produced with ``Key(seed, t)``, so a warper built
    with ``noise=frame_k, frame=k`` continues exactly where the uninterrupted
    run was at frame ``k``.

    >>> import noisewarp as nw
    >>> warper = nw.NoiseWarper(32, 32, 4, method="particle", seed=7)
    >>> shift = nw.deform.Translate(cols=0.5)
    >>> frames = [f for f in warper.warp_maps(shift.map(32, 32) for _ in range(3))]
    >>> warper.frame, len(frames)
    (3, 3)
    """

    def __init__(
        self,
        height: int,
        width: int,
        channels: int = 4,
        *,
        method: str = "particle",
        seed: int = 0,
        noise: np.ndarray | None = None,
        frame: int = 0,
        backend: str = "auto",
        **options,
    ) -> None:
        _method(method)
        _resolve_backend(backend)
        self.method = method
        self.seed = int(seed)
        self.backend = backend
        self.options = options
        self.frame = int(frame)
        if noise is None:
            noise = initial_noise(height, width, channels, seed, frame)
        noise = as_noise_frame(noise, "initial noise")
        if noise.shape != (height, width, channels):
            raise ValueError(
                f"initial noise has shape {noise.shape}, expected {(height, width, channels)}"
            )
        self.noise = noise
        self.diagnostics: Diagnostics | None = None
        self.conditional: Conditional | None = None
        # Two sets of E[Y | X] buffers, used in turn: a step's moments stay valid while
        # the next step warps (a consumer may overlap them), without fresh pages each step.
        self._buffers: list[Conditional | None] = [None, None]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.noise.shape

    def step(self, deformation: np.ndarray | Deformation, conditional: bool = False) -> np.ndarray:
        """Warp the current frame along ``deformation``; return and keep the new frame.

        ``diagnostics`` then describes this step; with ``conditional=True``,
        ``conditional`` holds E[Y | X] of the new frame given the previous one (else None).
        Its arrays are the warper's own, reused two steps later: copy them to keep them.
        """
        height, width, channels = self.noise.shape
        key = Key(self.seed, self.frame + 1)
        geometry = Geometry.from_input(deformation, height, width, self.frame)
        if conditional:
            turn = self.frame % 2
            buffers = self._buffers[turn]
            if buffers is None or buffers.mean.shape != (height * width, channels):
                buffers = self._buffers[turn] = Conditional(
                    np.empty((height * width, channels), dtype=np.float32),
                    np.empty(height * width, dtype=np.float32),
                )
            conditional = buffers
        out, self.diagnostics, self.conditional = _warp_validated(
            self.noise, geometry, self.method, key, self.backend, conditional, self.options
        )
        self.noise = out
        self.frame += 1
        return out

    def warp_maps(self, maps: Iterable[np.ndarray | Deformation]) -> Iterator[np.ndarray]:
        """Yield one new frame per map (or Deformation); consumes ``maps`` lazily."""
        for deformation in maps:
            yield self.step(deformation)

    def warp_flows(
        self, flows: Iterable[np.ndarray], *, direction: str = "backward", order: str = "xy"
    ) -> Iterator[np.ndarray]:
        """Yield one new frame per optical-flow field [H, W, 2].

        ``direction="backward"`` flows point from frame t+1 to frame t;
        ``"forward"`` flows (t to t+1) are inverted by fixed-point iteration.
        ``order`` is ``"xy"`` (dx, dy; OpenCV/RAFT) or ``"rc"``.
        """
        from noisewarp.flow import map_from_flow

        for flow in flows:
            yield self.step(map_from_flow(flow, direction=direction, order=order, frame=self.frame))
