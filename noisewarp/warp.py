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
from noisewarp.cpu.diagnostics import Conditional, ConditionalSums
from noisewarp.deform import Deformation

__all__ = [
    "Conditional",
    "ConditionalSums",
    "Diagnostics",
    "Geometry",
    "Method",
    "METHODS",
    "register_method",
    "register_backend",
    "resolve_backend",
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
        if _is_device(deformation):  # a map already on the GPU (CUDA backend only)
            from noisewarp.cuda.arrays import check_device_array

            return cls(check_device_array(deformation, (height, width, 2), np.float64, "map"))
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
    model, when ``conditional`` is true. ``kernel`` is the CPU kernel; ``kernels`` maps
    each backend the method has (``"cpu"``, ``"cuda"``) to its kernel. A CPU kernel with
    the attribute ``conditional_sums = True`` also takes ``conditional="sums"`` and then
    returns a ``ConditionalSums`` instead of the arrays."""

    name: str
    kernel: Kernel
    description: str
    options: dict = field(default_factory=dict)
    kernels: dict = field(default_factory=dict)

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.kernels)


METHODS: dict[str, Method] = {}


def register_method(name: str, description: str, **options) -> Callable[[Kernel], Kernel]:
    """Register a kernel under ``name``; ``options`` are its defaults (e.g. ``n=8``)."""

    def decorate(kernel: Kernel) -> Kernel:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered")
        METHODS[name] = Method(name, kernel, description, dict(options), {"cpu": kernel})
        return kernel

    return decorate


def register_backend(name: str, backend: str) -> Callable[[Kernel], Kernel]:
    """Register a registered method's kernel for another backend (``"cuda"``).

    A CUDA kernel takes the same arguments with the frame and the map as device arrays,
    ``conditional`` None or flat device buffers, and ``out`` a device frame to fill or
    None; it returns ``(frame, stats)`` on the device (``noisewarp.cuda.adapter``).
    """

    def decorate(kernel: Kernel) -> Kernel:
        spec = _method(name)
        if backend not in _BACKENDS[1:] or backend in spec.kernels:
            raise ValueError(f"cannot register backend {backend!r} for method {name!r}")
        spec.kernels[backend] = kernel
        return kernel

    return decorate


def _method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


_BACKENDS = ("auto", "cpu", "cuda")


def resolve_backend(backend: str, method: str = "particle") -> str:
    """The backend that runs ``method``: ``"cpu"`` or ``"cuda"``.

    ``"auto"`` picks CUDA when the method has a CUDA kernel and a GPU is really usable
    (numba.cuda opens it), else the CPU. ``"cuda"`` without a usable GPU, or for a
    method without a CUDA kernel, is an error that says why; it never falls back.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {', '.join(_BACKENDS)}")
    spec = _method(method)
    if backend == "cpu":
        return "cpu"
    has_cuda = "cuda" in spec.kernels
    if backend == "auto":
        if not has_cuda:
            return "cpu"
        from noisewarp.cuda import usable

        return "cuda" if usable() else "cpu"
    if not has_cuda:
        with_cuda = ", ".join(m.name for m in METHODS.values() if "cuda" in m.kernels)
        raise ValueError(
            f"method {method!r} has no CUDA kernel (methods with one: {with_cuda}); "
            "use backend='cpu' or 'auto'"
        )
    from noisewarp.cuda import unusable_reason

    reason = unusable_reason()
    if reason is not None:
        raise RuntimeError(f"backend='cuda' was asked for, but {reason}; use backend='cpu'")
    return "cuda"


def _is_device(array) -> bool:
    """Whether ``array`` lives on a GPU (or in numba's CUDA simulator, for the tests)."""
    return hasattr(array, "__cuda_array_interface__") or type(array).__module__.startswith(
        "numba.cuda.simulator"
    )


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
    noise : ndarray [H, W, C], float32 or float64, or a CUDA array
        Source frame, i.i.d. N(0, 1). Returned frames are float32, where ``noise``
        lives: a float32 CUDA array (a torch CUDA tensor, a numba device array) is warped
        in place on the GPU and the result is a device array (``torch.as_tensor(out,
        device="cuda")`` takes it without a copy).
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
        ``auto`` runs the CUDA kernel when the method has one and a GPU is usable;
        ``cuda`` without one is an error (``resolve_backend``).
    return_diagnostics : bool
        Also return a ``Diagnostics``.
    return_conditional : bool or "sums"
        Also return a ``Conditional``: E[Y | X] under this method's own model
        (``mean`` [H, W, C]) and the fraction of each pixel's variance that ``noise``
        explains (``carried`` [H, W]), computed by the kernel from its own areas.
        ``"sums"``: only the sums the temporal metrics need (``ConditionalSums``),
        which a kernel can keep without writing the arrays.
    **options
        Method options (for example ``n`` for hiwyn).

    Returns
    -------
    ndarray [H, W, C] float32, followed by the Diagnostics and the Conditional when asked
    """
    if return_conditional not in (False, True, "sums"):
        raise ValueError(
            f"return_conditional must be False, True or 'sums', got {return_conditional!r}"
        )
    resolved = resolve_backend(backend, method)
    noise = _as_frame(noise, resolved)
    height, width, _ = noise.shape
    key = Key.coerce(key)
    # A time-varying Deformation is evaluated at the source frame of this step.
    geometry = Geometry.from_input(deformation, height, width, max(key.frame - 1, 0))
    out, diagnostics, conditional = _warp_validated(
        noise, geometry, method, key, resolved, return_conditional, options
    )
    extra = (diagnostics,) if return_diagnostics else ()
    extra += (conditional,) if return_conditional else ()
    return (out, *extra) if extra else out


def _as_frame(noise, backend: str, what: str = "noise"):
    """A validated noise frame: float32 [H, W, C] on the host, or checked in place on the
    GPU (a torch CUDA tensor, a numba device array) for the CUDA backend."""
    if not _is_device(noise):
        return as_noise_frame(noise, what)
    if backend != "cuda":
        raise TypeError(
            f"{what} is on the GPU but the {backend} backend runs on the host: use "
            "backend='cuda' (or 'auto'), or copy it to the host (tensor.cpu().numpy())"
        )
    from noisewarp.cuda.arrays import check_device_array

    return check_device_array(noise, (None, None, None), np.float32, what)


def _warp_validated(noise, geometry, method, key, backend, conditional, options, out=None):
    """Run the kernel of a resolved ``backend``; return ``(frame, Diagnostics,
    Conditional or None)``. ``out`` is a device frame to fill (CUDA only)."""
    spec = _method(method)
    unknown = set(options) - set(spec.options)
    if unknown:
        valid = ", ".join(spec.options) or "none"
        raise TypeError(
            f"method {method!r} got unknown option(s) {sorted(unknown)}; valid: {valid}"
        )
    merged = {**spec.options, **options}
    if conditional == "sums":
        if _native_sums(method, backend):
            out, stats, sums = spec.kernel(noise, geometry, key, merged, "sums")
            return out, Diagnostics(**_split_stats(stats)), sums
        # Kernels without their own sums: the arrays, reduced (on the host).
        out, diagnostics, moments = _warp_validated(
            noise, geometry, method, key, backend, True, options, out
        )
        return out, diagnostics, _sums_of(out, moments)
    if backend == "cuda":
        from noisewarp.cuda.adapter import warp_on_device

        kernel = spec.kernels["cuda"]

        def driver(frame, centres, key_, out_, buffers):
            # Exact corners (host) travel with the centres, now on the device.
            return kernel(frame, Geometry(centres, geometry.corners), key_, merged, buffers, out_)

        out, stats, moments = warp_on_device(driver, noise, geometry.centres, key, conditional, out)
        return out, Diagnostics(**_split_stats(stats)), moments
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


def _native_sums(method: str, backend: str) -> bool:
    """Whether ``method``'s kernel on ``backend`` keeps ``ConditionalSums`` itself."""
    return backend == "cpu" and getattr(_method(method).kernel, "conditional_sums", False)


def _sums_of(frame, moments: Conditional) -> ConditionalSums:
    """``ConditionalSums`` of a frame and its ``Conditional`` (host or device arrays)."""
    if _is_device(frame):
        frame = frame.copy_to_host() if hasattr(frame, "copy_to_host") else np.asarray(frame)
        moments = Conditional(*(m.copy_to_host() for m in moments))
    return ConditionalSums.of(frame, moments)


def _host_conditional(pixels: int, channels: int) -> Conditional:
    return Conditional(
        np.empty((pixels, channels), dtype=np.float32), np.empty(pixels, dtype=np.float32)
    )


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
        key = Key.coerce((seed, frame))  # checked: integers in [0, 2**64)
        self.method = method
        self.seed = key.seed
        self.backend = resolve_backend(backend, method)  # "cpu" or "cuda"
        self.options = options
        self.frame = key.frame
        if noise is None:
            noise = initial_noise(height, width, channels, seed, frame)
        noise = _as_frame(noise, self.backend, "initial noise")
        if tuple(noise.shape) != (height, width, channels):
            raise ValueError(
                f"initial noise has shape {tuple(noise.shape)}, expected "
                f"{(height, width, channels)}"
            )
        # Frames come back where the initial noise lives: on the host, or on the GPU
        # (device arrays that torch takes without a copy) when it was given there.
        self.on_device = _is_device(noise)
        self._set_noise(noise)
        self.diagnostics: Diagnostics | None = None
        self.conditional: Conditional | None = None
        # Two sets of E[Y | X] buffers, used in turn: a step's moments stay valid while
        # the next step warps (a consumer may overlap them), without fresh pages each step.
        self._buffers: list[Conditional | None] = [None, None]
        # CUDA: the device E[Y | X] buffers, kept on the GPU across frames.
        self._device_buffers: list[Conditional | None] = [None, None]

    @property
    def noise(self):
        """The current frame (on the host, or on the GPU for a warper started there)."""
        return self._noise

    @noise.setter
    def noise(self, value) -> None:
        """Replace the current frame (checked: float32-able, finite, this warper's shape)."""
        value = _as_frame(value, self.backend, "noise")
        if tuple(value.shape) != self.shape:
            raise ValueError(f"noise has shape {tuple(value.shape)}, expected {self.shape}")
        self._set_noise(value)

    def _set_noise(self, value) -> None:
        """Set the current frame without checks (the warper's own output)."""
        self._noise = value
        self._current = value if _is_device(value) else None  # its device copy, if any

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.noise.shape)

    def _buffers_for(self, store: list, turn: int, pixels: int, channels: int, make):
        held = store[turn]
        if held is None or held.mean.shape != (pixels, channels):
            held = store[turn] = make(pixels, channels)
        return held

    def step(self, deformation: np.ndarray | Deformation, conditional: bool | str = False):
        """Warp the current frame along ``deformation``; return and keep the new frame.

        ``diagnostics`` then describes this step; with ``conditional=True``,
        ``conditional`` holds E[Y | X] of the new frame given the previous one (else None).
        Its arrays are the warper's own, reused two steps later: copy them to keep them.
        ``conditional="sums"`` keeps only their ``ConditionalSums``.
        """
        if conditional not in (False, True, "sums"):
            raise ValueError(f"conditional must be False, True or 'sums', got {conditional!r}")
        height, width, channels = self.shape
        key = Key(self.seed, self.frame + 1)
        geometry = Geometry.from_input(deformation, height, width, self.frame)
        turn = self.frame % 2
        # What the kernel fills: its own sums, buffers for E[Y | X] (the sums are then
        # taken from them), or nothing.
        sums = conditional == "sums"
        native = sums and _native_sums(self.method, self.backend)
        if conditional and not native:
            conditional = self._buffers_for(
                self._buffers, turn, height * width, channels, _host_conditional
            )
        if self.backend == "cuda":
            out = self._step_device(geometry, key, conditional, turn)
        else:
            out, self.diagnostics, self.conditional = _warp_validated(
                self.noise, geometry, self.method, key, self.backend, conditional, self.options
            )
            self._set_noise(out)
        if sums and not native:
            self.conditional = _sums_of(out, self.conditional)
        self.frame += 1
        return out

    def _step_device(self, geometry, key, conditional, turn):
        """One step on the GPU: the frame stays there; the host gets a copy unless the
        warper was started on the device."""
        from numba import cuda

        from noisewarp.cuda.adapter import device_conditional
        from noisewarp.cuda.arrays import as_device

        height, width, channels = self.shape
        source = (
            self._current
            if self._current is not None
            else as_device(self.noise, np.float32, "noise")
        )
        # A new frame each step: the frames returned earlier (and torch views of them) stay
        # valid, and the target can never alias the source, whatever wraps it.
        target = cuda.device_array((height, width, channels), np.float32)
        buffers = None
        if conditional:
            buffers = self._buffers_for(
                self._device_buffers, turn, height * width, channels, device_conditional
            )
        out, self.diagnostics, moments = _warp_validated(
            source, geometry, self.method, key, "cuda", buffers, self.options, out=target
        )
        if self.on_device:
            self._set_noise(out)
            self.conditional = moments
            return out
        host = out.copy_to_host()
        self._set_noise(host)
        self._current = out
        self.conditional = None
        if conditional:
            conditional.mean.reshape(height, width, channels)[...] = moments.mean.copy_to_host()
            conditional.carried.reshape(height, width)[...] = moments.carried.copy_to_host()
            self.conditional = conditional.frame(height, width)
        return host

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
