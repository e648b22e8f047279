"""A run's configuration: validation of the composed Hydra config into a :class:`RunSpec`.

Every value is checked before anything runs, with errors that name the key and list the
valid choices (:class:`ConfigError`). ``noisewarp.experiment`` runs the spec.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from noisewarp.motion import FlowMotion, SyntheticMotion, VideoMotion

__all__ = [
    "ConfigError",
    "OutputSpec",
    "RunSpec",
    "build_spec",
    "method_label",
    "deform_label",
]

log = logging.getLogger(__name__)

_BACKENDS = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """The config asks for something that does not exist or is out of range."""


def _register_resolvers() -> None:
    """Resolvers ``conf/config.yaml`` names Hydra's run directory with: ``output.dir`` when
    set (so ``run.log`` and ``.hydra`` stay with the results), and the overrides as one
    folder name (:func:`run_dirname`: a ``deform.path`` makes one folder, not nested ones)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "nw_first_set", lambda *values: next((v for v in values if v is not None), None),
        replace=True,
    )  # fmt: skip
    OmegaConf.register_new_resolver("nw_dirname", run_dirname, replace=True)


def run_dirname(overrides) -> str:
    """Hydra's ``override_dirname`` as one folder name: ``%`` and ``/`` escaped (``%25``,
    ``%2F``), so different overrides never share a folder; past 200 bytes (the file system
    allows 255), a prefix and a hash of the whole."""
    import hashlib

    name = str(overrides).replace("%", "%25").replace("/", "%2F")
    data = name.encode()
    if len(data) <= 200:
        return name
    digest = hashlib.sha256(data).hexdigest()[:16]
    return data[:180].decode(errors="ignore") + "..." + digest


_register_resolvers()  # before Hydra resolves a run directory in this process


def _plain(value):
    """OmegaConf containers and YAML lists to plain Python (lists become tuples)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _label(name: str, values: Mapping, defaults: Mapping) -> str:
    changed = [
        f"{key}={_plain(value)}"
        for key, value in values.items()
        if key not in defaults or _plain(defaults[key]) != _plain(value)
    ]
    return f"{name}({','.join(changed)})" if changed else name


def method_label(name: str, options: Mapping) -> str:
    """``name``, plus the options that differ from the method's defaults: ``hiwyn(n=16)``."""
    from noisewarp.warp import METHODS

    return _label(name, options, METHODS[name].options if name in METHODS else {})


def deform_label(name: str, params: Mapping) -> str:
    """``name``, plus the parameters that differ from its defaults: ``rotate(degrees=5.0)``."""
    from noisewarp.deform import DEFORMATIONS

    defaults = {}
    if name in DEFORMATIONS and dataclasses.is_dataclass(DEFORMATIONS[name]):
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(DEFORMATIONS[name])
            if f.default is not dataclasses.MISSING
        }
    return _label(name, params, defaults)


@dataclass(frozen=True)
class OutputSpec:
    dir: Path
    stack: Path | None
    metrics: Path | None
    store_maps: bool
    metrics_every: int
    previews: bool
    preview_size: int
    preview_frames: int
    progress: bool
    overwrite: bool
    overlap: bool


@dataclass(frozen=True)
class RunSpec:
    """A validated run: everything :func:`run` needs, in plain Python."""

    method: str
    options: dict
    motion: SyntheticMotion | FlowMotion | VideoMotion
    height: int
    width: int
    frames: int
    channels: int
    seed: int
    backend: str
    threads: int | None
    output: OutputSpec
    config_yaml: str
    blend: float = 0.0
    warnings: tuple[str, ...] = ()  # kept in the log, summary.json and metrics.nc

    @property
    def method_label(self) -> str:
        return method_label(self.method, self.options)

    @property
    def res(self) -> int:
        return max(self.height, self.width)

    def identity(self) -> dict:
        """Everything the frames depend on; a resumed stack must match it exactly."""
        from noisewarp import __version__

        return {
            "method": self.method,
            "options": self.options,
            "motion": self.motion.identity(),
            "height": self.height,
            "width": self.width,
            "frames": self.frames,
            "channels": self.channels,
            "seed": self.seed,
            **({"blend": self.blend} if self.blend else {}),
            "noisewarp_version": __version__,
        }


def _integer(cfg, key: str, minimum: int = 1) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _section(cfg, key: str):
    section = cfg.get(key)
    if section is None or not hasattr(section, "get"):
        raise ConfigError(f"the config has no '{key}' group (got {section!r})")
    return section


def _output(cfg) -> OutputSpec:
    out = _section(cfg, "output")
    directory = out.get("dir")
    if directory is None:  # Hydra's run directory
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            raise ConfigError("output.dir is not set; outside a Hydra app pass output.dir=PATH")
        directory = HydraConfig.get().runtime.output_dir
    directory = Path(directory)
    every = out.get("metrics_every", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"output.metrics_every must be an integer >= 1, got {every!r}")
    for key in ("preview_size", "preview_frames"):
        value = out.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"output.{key} must be an integer >= 1, got {value!r}")
    flags = {}
    for key, default in (("store_maps", False), ("previews", True), ("progress", True),
                         ("overwrite", False), ("overlap", False)):  # fmt: skip
        flags[key] = out.get(key, default)
        if not isinstance(flags[key], bool):  # "no" would be a true string
            raise ConfigError(f"output.{key} must be true or false, got {flags[key]!r}")
    return OutputSpec(
        dir=directory,
        stack=directory / out.stack if out.get("stack") else None,
        metrics=directory / out.metrics if out.get("metrics") else None,
        metrics_every=every,
        preview_size=out.preview_size,
        preview_frames=out.preview_frames,
        **flags,
    )


def _video_motion(deform_cfg, res: int, frames: int, directory: Path):
    from noisewarp.motion import BUNDLED_CLIPS, VideoMotion, bundled_clip, default_cache
    from noisewarp.opticalflow import METHODS as ESTIMATORS

    clip = deform_cfg.get("clip")
    if clip is not None and clip not in BUNDLED_CLIPS:
        raise ConfigError(
            f"deform.clip={clip} is not a bundled clip; bundled: {', '.join(BUNDLED_CLIPS)}"
        )
    path = deform_cfg.get("path") or bundled_clip(clip)
    estimator = deform_cfg.get("estimator", "dis")
    if estimator not in ESTIMATORS:
        raise ConfigError(
            f"deform.estimator={estimator} is not a flow estimator; valid: {', '.join(ESTIMATORS)}"
        )
    factor = deform_cfg.get("latent_factor")
    if factor is not None and (
        isinstance(factor, bool) or not isinstance(factor, int) or factor < 1
    ):
        raise ConfigError(f"deform.latent_factor must be null or an integer >= 1, got {factor!r}")
    settings = _plain(deform_cfg.get("settings") or {})
    if not isinstance(settings, dict):
        raise ConfigError(
            f"deform.settings must be a mapping such as {{preset: fast}}, got {settings!r}"
        )
    cache = deform_cfg.get("cache", "auto")
    if cache == "auto":
        cache = default_cache(directory)
    try:
        return VideoMotion(
            path,
            res=res,
            latent_factor=factor,
            start=deform_cfg.get("start", 0),
            stride=deform_cfg.get("stride", 1),
            frames=frames,
            size=_plain(deform_cfg.get("size")),
            estimator=estimator,
            settings=settings,
            cache=cache,
        )
    except (OSError, ValueError, TypeError, ImportError) as error:
        raise ConfigError(f"deform=video: {error}") from None


# The keys each kind of deform config reads (conf/deform/*.yaml); any other is an error, not
# a setting silently ignored (``+deform.degrees=45`` instead of ``deform.params.degrees``).
_DEFORM_KEYS = {
    "video": {"name", "path", "clip", "start", "stride", "size", "latent_factor", "estimator",
              "settings", "cache"},
    "flow": {"name", "path", "dataset", "direction", "order"},
}  # fmt: skip


def _check_deform_keys(deform_cfg, name) -> None:
    allowed = _DEFORM_KEYS.get(name, {"name", "params"})
    unknown = sorted(set(deform_cfg) - allowed)
    if unknown:
        hint = "" if name in _DEFORM_KEYS else " (its parameters go under deform.params)"
        raise ConfigError(
            f"deform={name} has no setting {', '.join(unknown)}; its settings: "
            f"{', '.join(sorted(allowed))}{hint}"
        )


def _motion(deform_cfg, res: int, frames: int, directory: Path):
    """The motion source the config names, the number of frames it allows, and the
    warnings about it."""
    from omegaconf import OmegaConf

    from noisewarp.motion import FlowMotion, SyntheticMotion

    name = deform_cfg.get("name")
    if name == "video":
        _check_deform_keys(deform_cfg, name)
        return _video_motion(deform_cfg, res, frames, directory), frames, ()
    if name == "flow":
        _check_deform_keys(deform_cfg, name)
        direction, order = deform_cfg.get("direction"), deform_cfg.get("order")
        if direction not in ("backward", "forward"):
            raise ConfigError(f"deform.direction must be backward or forward, got {direction!r}")
        if order not in ("xy", "rc"):
            raise ConfigError(f"deform.order must be xy or rc, got {order!r}")
        if OmegaConf.is_missing(deform_cfg, "path") or not deform_cfg.get("path"):
            raise ConfigError("deform=flow needs a file: deform.path=/path/to/flow.npy (or .flo)")
        try:
            motion = FlowMotion(
                str(deform_cfg.path), direction, order, deform_cfg.get("dataset", "flow")
            )
        except (OSError, ValueError) as error:
            raise ConfigError(f"deform=flow: {error}") from None
        notes = []
        if motion.max_frames is not None and frames > motion.max_frames:
            notes.append(
                f"frames={frames} asked, but {motion.path} holds {motion.max_frames - 1} flow "
                f"fields: the run has {motion.max_frames} frames"
            )
            frames = motion.max_frames
        if direction == "backward" and any(f.suffix.lower() == ".flo" for f in motion.fields.files):
            notes.append(
                f"{motion.path.name} is read as a backward flow (frame t+1 to t); a .flo from a "
                "flow estimator is usually forward: say deform.direction=forward if it is"
            )
        for note in notes:
            log.warning("%s", note)
        return motion, frames, tuple(notes)
    from noisewarp.deform import DEFORMATIONS, get_deformation

    if name not in DEFORMATIONS:
        valid = ", ".join(sorted([*DEFORMATIONS, "flow", "video"]))
        raise ConfigError(f"deform={name} is not a known deformation; valid: {valid}")
    _check_deform_keys(deform_cfg, name)
    params = _plain(deform_cfg.get("params") or {})
    try:
        deformation = get_deformation(name, **params)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"deform={name}: {error}") from None
    return SyntheticMotion(deformation, res, res, deform_label(name, params), params), frames, ()


def build_spec(cfg) -> RunSpec:
    """Validate a resolved config and turn it into a :class:`RunSpec`.

    Raises
    ------
    ConfigError
        With a message naming the key and listing the valid values.
    """
    from omegaconf import OmegaConf

    from noisewarp.warp import METHODS

    method_cfg = _section(cfg, "method")
    method = method_cfg.get("name")
    if method not in METHODS:
        raise ConfigError(
            f"method={method} is not a registered method; valid: {', '.join(sorted(METHODS))}"
        )
    options = _plain(method_cfg.get("options") or {})
    if not isinstance(options, dict):
        raise ConfigError(f"method.options must be a mapping such as {{n: 4}}, got {options!r}")
    unknown = sorted(set(options) - set(METHODS[method].options))
    if unknown:
        valid = ", ".join(METHODS[method].options) or "none"
        raise ConfigError(f"method={method} has no option(s) {unknown}; valid options: {valid}")
    check = getattr(METHODS[method].kernel, "check_options", None)
    if check is not None:
        try:
            check({**METHODS[method].options, **options})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"method={method}: {error}") from None

    res = _integer(cfg, "res")
    frames = _integer(cfg, "frames", 1)
    channels = _integer(cfg, "channels")
    seed = _integer(cfg, "seed", 0)
    if seed >= 2**64:
        raise ConfigError(f"seed must be below 2**64 (a uint64 key), got {seed}")
    blend = (cfg.get("noise") or {}).get("blend", 0.0)
    if isinstance(blend, bool) or not isinstance(blend, (int, float)) or not 0 <= blend <= 1:
        raise ConfigError(f"noise.blend must be a number in [0, 1], got {blend!r}")

    backend_cfg = _section(cfg, "backend")
    backend = backend_cfg.get("name")
    if backend not in _BACKENDS:
        raise ConfigError(f"backend={backend} is not a backend; valid: {', '.join(_BACKENDS)}")
    # Resolved now, so that backend=cuda without a GPU fails before any output is written.
    from noisewarp.warp import resolve_backend

    try:
        backend = resolve_backend(backend, method)
    except (ValueError, RuntimeError) as exc:
        raise ConfigError(f"backend={backend}: {exc}") from None

    output = _output(cfg)
    motion, frames, notes = _motion(_section(cfg, "deform"), res, frames, output.dir)

    threads = backend_cfg.get("threads")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ConfigError(f"backend.threads must be null or an integer >= 1, got {threads!r}")

    return RunSpec(
        method=method,
        options=options,
        motion=motion,
        height=motion.height,
        width=motion.width,
        frames=frames,
        channels=channels,
        seed=seed,
        backend=backend,
        threads=threads,
        output=output,
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        blend=float(blend),
        warnings=notes,
    )
