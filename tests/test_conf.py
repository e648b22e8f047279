"""Every config group option composes and validates; bad values are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

import noisewarp as nw
from noisewarp.collect import run_coords
from noisewarp.cuda import usable as cuda_usable
from noisewarp.experiment import ConfigError, build_spec
from noisewarp.motion import BUNDLED_CLIP

CONF = Path(__file__).resolve().parents[1] / "noisewarp" / "conf"
GROUPS = ("method", "deform", "backend", "output")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


@pytest.fixture
def flow_file(tmp_path):
    path = tmp_path / "flow.npy"
    flow = np.zeros((3, 16, 24, 2), np.float32)
    flow[..., 0] = 0.5  # backward flow, dx = +0.5: T(p) = p + (0, 0.5)
    np.save(path, flow)
    return path


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), f"conf/{group}/ is empty"
    assert options("experiment")


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_option_composes_and_validates(compose, flow_file, group, option):
    overrides = [f"{group}={option}", "res=32"]
    if (group, option) == ("deform", "flow"):
        overrides.append(f"deform.path={flow_file}")
    cfg = compose(*overrides)
    name = cfg[group].get("name")
    if group == "method" and name not in nw.METHODS:
        pytest.skip(
            f"conf/method/{option}.yaml: method {name!r} is not registered in "
            f"noisewarp.METHODS yet (registered: {', '.join(nw.METHODS)})"
        )
    if (group, option) == ("backend", "cuda") and not cuda_usable():
        # Without a GPU, asking for CUDA fails at config time and says why.
        with pytest.raises(ConfigError, match="no usable CUDA GPU|cannot be"):
            build_spec(cfg)
        return
    spec = build_spec(cfg)
    if group == "backend":
        assert spec.backend == ("cpu" if option == "cpu" else nw.resolve_backend(option))
    if group == "method":
        assert spec.method == option
        # The conf's options are all valid options of the method.
        assert set(spec.options) <= set(nw.METHODS[option].options)
    if group == "deform" and option in ("video", "cockatoo"):  # bundled 640 x 360 clips
        assert spec.motion.name == "video" and (spec.height, spec.width) == (18, 32)
        clip = "bigbuckbunny" if option == "video" else "cockatoo"
        assert spec.motion.label == f"video:{clip}"
        assert next(spec.motion.steps()).geometry.centres.shape == (18, 32, 2)
    elif group == "deform" and option != "flow":
        assert spec.motion.name == option
        assert spec.motion.geometry(0).centres.shape == (32, 32, 2)
    if (group, option) == ("deform", "flow"):
        assert (spec.height, spec.width) == (16, 24)
        assert spec.frames == min(cfg.frames, 4)  # 3 flow fields: 4 frames at most
        np.testing.assert_allclose(spec.motion.geometry(0).centres[0, 0], [0.5, 1.0])


def test_every_registered_method_and_deformation_has_a_conf():
    assert set(nw.METHODS) <= set(options("method"))
    assert set(nw.deform.DEFORMATIONS) <= set(options("deform"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_presets_compose(compose, experiment):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(
            "config", overrides=[f"experiment={experiment}"], return_hydra_config=True
        )
    # Every swept value names an existing option of its group (or is a plain value).
    for key, values in (cfg.hydra.sweeper.params or {}).items():
        if key in GROUPS:
            for value in str(values).split(","):
                assert value in options(key), f"{experiment}: {key}={value} has no conf file"
    cfg = compose(f"experiment={experiment}", "res=32")
    if cfg.method.name in nw.METHODS:
        build_spec(cfg)


def test_defaults_need_no_input_file(compose):
    cfg = compose()
    spec = build_spec(cfg)
    assert spec.method == "particle"
    # The bundled clip, shipped in noisewarp/data/: no input file needed.
    assert spec.motion.name == "video" and spec.motion.path == BUNDLED_CLIP
    assert BUNDLED_CLIP.is_file() and BUNDLED_CLIP.stat().st_size < 4 * 2**20
    assert cfg.output.stack and cfg.output.metrics


def test_estimator_settings_as_the_readme_gives_them(compose):
    """``deform.settings={...}`` replaces the (empty) settings whole: struct mode must not
    refuse the estimator's keys; an unknown key is the estimator's clear error."""
    spec = build_spec(compose("deform.settings={preset: fast}"))
    assert spec.motion.settings == {"preset": "fast"}
    cfg = compose("deform.estimator=raft", "deform.settings={weights: /x/raft.pth, model: small}")
    settings = OmegaConf.to_container(cfg.deform.settings)
    assert settings == {"weights": "/x/raft.pth", "model": "small"}
    with pytest.raises(ConfigError, match="presett"):
        build_spec(compose("deform.settings={presett: fast}"))


def test_unknown_group_option_lists_the_valid_ones(compose):
    with pytest.raises(MissingConfigException) as error:
        compose("method=bogus")
    message = str(error.value)
    assert "method/bogus" in message
    for option in options("method"):
        assert option in message
    with pytest.raises(MissingConfigException, match="swirl"):
        compose("deform=bogus")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("res=0", "res must be an integer >= 1, got 0"),
        ("res=-3", "res must be an integer >= 1"),
        ("res=big", "res must be an integer >= 1, got 'big'"),
        ("frames=0", "frames must be an integer >= 1"),
        ("channels=1.5", "channels must be an integer >= 1"),
        ("seed=-1", "seed must be an integer >= 0"),
        ("backend.name=tpu", "valid: auto, cpu, cuda"),
        ("backend.threads=0", "backend.threads must be null or an integer >= 1"),
        ("backend.name=cuda method=nearest", "nearest.*has no CUDA kernel"),
        ("output.metrics_every=0", "output.metrics_every must be an integer >= 1"),
        ("method.name=bogus", "valid: .*particle"),
        ("+method.options.bogus=1", r"no option\(s\) \['bogus'\]"),
        ("deform.name=bogus", "valid: .*flow.*swirl"),
        ("+deform.params.bogus=1", "valid parameters: degrees, radius, centre"),
        ("deform.params.radius=-1", "radius"),
        ("+deform.degrees=45", r"deform=swirl has no setting degrees.*go under deform.params"),
    ],
)
def test_bad_value_is_a_clear_config_error(compose, override, match):
    swirl = ("deform=swirl",) if "+deform." in override or "deform.params" in override else ()
    cfg = compose(*swirl, *override.split())
    with pytest.raises(ConfigError, match=match):
        build_spec(cfg)


def test_flow_input_errors(compose, tmp_path):
    with pytest.raises(ConfigError, match="deform.path="):
        build_spec(compose("deform=flow"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_spec(compose("deform=flow", f"deform.path={tmp_path / 'missing.npy'}"))
    with pytest.raises(ConfigError, match="backward or forward"):
        build_spec(compose("deform=flow", "deform.path=x.npy", "deform.direction=sideways"))
    with pytest.raises(ConfigError, match="deform=flow has no setting stride; its settings: "):
        build_spec(compose("deform=flow", "deform.path=x.npy", "+deform.stride=2"))


def test_a_flow_folder_is_checked_when_opened(compose, tmp_path):
    """Every field's shape in a folder is read from its header when the run is configured
    (a mismatch used to fail mid-run with a traceback); a file changed after that is a
    FlowFileError (the CLI's one-line error) when the run reaches it."""
    from noisewarp.flow import write_flo
    from noisewarp.motion import FlowFileError, FlowMotion

    folder = tmp_path / "flows"
    folder.mkdir()
    for k in range(4):
        write_flo(folder / f"f{k}.flo", np.zeros((18 if k == 2 else 16, 20, 2), np.float32))
    with pytest.raises(ConfigError, match=r"f2\.flo' has shape \(18, 20, 2\).*'f0\.flo' has"):
        build_spec(compose("deform=flow", f"deform.path={folder}"))
    write_flo(folder / "f2.flo", np.zeros((16, 20, 2), np.float32))
    (folder / "f3.flo").write_bytes((folder / "f3.flo").read_bytes()[:100])  # truncated
    with pytest.raises(ConfigError, match=r"f3\.flo.*truncated"):
        build_spec(compose("deform=flow", f"deform.path={folder}"))
    write_flo(folder / "f3.flo", np.zeros((16, 20, 2), np.float32))
    motion = FlowMotion(folder, "backward", "xy", "flow")
    np.save(folder / "f1.npy", np.zeros(3))  # not a flow; f1.flo replaced after opening
    (folder / "f1.flo").unlink()
    with pytest.raises(FlowFileError, match=r"f1\.flo.*frames before it are complete"):
        motion.geometry(1)


def test_struct_mode_rejects_typos(compose):
    with pytest.raises(ConfigCompositionException, match="resolution"):
        compose("resolution=64")


def test_outside_hydra_output_dir_must_be_given():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose("config")
    with pytest.raises(ConfigError, match="output.dir"):
        build_spec(cfg)


def test_labels_name_only_what_differs_from_defaults(compose):
    assert build_spec(compose("deform=rotate")).motion.label == "rotate"
    assert build_spec(compose("deform=rotate", "deform.params.degrees=5")).motion.label == (
        "rotate(degrees=5)"
    )
    # Where a run sits in a collected sweep: names and parameters apart, res where used.
    coords, owners = run_coords(OmegaConf.to_container(compose("deform=rotate"), resolve=False))
    assert coords == {"warp_method": "particle", "deform": "rotate", "res": 256,
                      "degrees": 2.0, "centre": "[0.5, 0.5]"}  # fmt: skip
    assert owners == {"degrees": "deform", "centre": "deform"}
    flow = {"method": {"name": "hiwyn", "options": {"n": 4}},
            "deform": {"name": "flow", "path": "/data/a.flo", "params": {"width": 1}},
            "res": 256}  # fmt: skip
    assert run_coords(flow)[0] == {"warp_method": "hiwyn", "deform": "flow:a", "n": 4,
                                   "deform_width": 1, "deform_path": "/data/a.flo"}  # fmt: skip
    # A bundled clip is named by deform.clip; a path takes precedence over it.
    cases = (((), "video:bigbuckbunny"), (("stage=diffuse",), "video:cockatoo"),
             (("stage=diffuse", "deform.path=/data/street.mp4"), "video:street"))  # fmt: skip
    for overrides, label in cases:
        config = OmegaConf.to_container(compose(*overrides), resolve=False)
        assert run_coords(config)[0]["deform"] == label, overrides
    assert build_spec(compose("deform.clip=cockatoo", "res=32")).motion.label == "video:cockatoo"


def test_resolved_config_is_stored_as_yaml(compose):
    spec = build_spec(compose("res=48"))
    stored = OmegaConf.create(spec.config_yaml)
    assert stored.res == 48 and stored.method.name == "particle"


def test_a_flo_read_as_backward_flow_gets_a_warning(compose, tmp_path):
    """.flo files are usually forward flow: read backward (the default), the run says so."""
    flo = BUNDLED_CLIP.parent / "swirl_forward_32x48.flo"
    backward = build_spec(compose("deform=flow", f"deform.path={flo}"))
    assert any("read as a backward flow" in note for note in backward.warnings)
    forward = build_spec(compose("deform=flow", f"deform.path={flo}", "deform.direction=forward"))
    assert not any("backward" in note for note in forward.warnings)
    # A folder of .flo files, and an upper-case suffix, get the same note.
    import shutil

    folder = tmp_path / "flows"
    folder.mkdir()
    for k in range(2):
        shutil.copyfile(flo, folder / f"{k}.FLO")
    for path in (folder, folder / "0.FLO"):
        spec = build_spec(compose("deform=flow", f"deform.path={path}"))
        assert any("read as a backward flow" in note for note in spec.warnings), path
