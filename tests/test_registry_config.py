import pytest

from datadistill.config import ConfigError, RunConfig, apply_overrides, from_dict, load_preset, preset_names
from datadistill.registry import Registry, UnknownNameError


def test_registry_aliases_duplicates_and_close_matches():
    reg: Registry[int] = Registry("thing")
    reg.add("convnet", 1, aliases=("ConvNet", "ConvNetD3"))
    reg.add("lenet", 2)
    assert reg.get("CONVNET") == 1 and reg.get("convnetd3") == 1 and reg.get("LeNet") == 2
    assert reg.canonical("ConvNetD3") == "convnet"
    with pytest.raises(ValueError, match="duplicate thing name"):
        reg.add("ConvNet", 3)
    with pytest.raises(UnknownNameError) as e:
        reg.get("convnt")
    assert "Did you mean 'convnet'" in str(e.value) and "convnet, lenet" in str(e.value)


def test_overrides_are_parsed_as_yaml_and_nested():
    d = apply_overrides({"ipc": 1, "eval": {"preset": "dc"}},
                        ["ipc=10", "eval.epochs=50", "method_config.dsa=false", "models=[convnet, lenet]"])
    assert d == {"ipc": 10, "eval": {"preset": "dc", "epochs": 50}, "method_config": {"dsa": False},
                 "models": ["convnet", "lenet"]}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["ipc"])


def test_from_dict_rejects_unknown_keys_and_bad_types():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['ipcs'\].*valid keys: dataset"):
        from_dict(RunConfig, {"ipcs": 3})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(RunConfig, {"ipc": "ten"})
    cfg = from_dict(RunConfig, {"ipc": 5, "models": ["convnet"], "iterations": None})
    assert cfg.ipc == 5 and cfg.models == ("convnet",) and cfg.iterations is None


def test_presets_load_and_validate():
    names = preset_names()
    assert {"dm", "dm-cpu", "random"} <= set(names)
    for name in names:
        from_dict(RunConfig, load_preset(name))
    with pytest.raises(ConfigError, match="valid presets: "):
        load_preset("dm_gpu")


def test_resolve_fills_method_defaults_and_validates_names():
    from datadistill.resolve import resolve

    res = resolve(from_dict(RunConfig, {"method": "dm", "dataset": "digits"}))
    assert res.iterations == 20000 and res.image_init == "real" and res.method_cfg.lr_img == 1.0
    assert res.method_cfg.momentum == 0.5 and res.method_cfg.batch_real == 256
    assert res.protocol.name == "dc" and res.models == ("convnet",)
    with pytest.raises(ConfigError, match="valid keys"):
        resolve(from_dict(RunConfig, {"method": "dm", "method_config": {"lr": 1}}))
    with pytest.raises(UnknownNameError, match="Valid method names: datm, dc, dd, dm, dsa, frepo, haba, herding, kcenter, mtt, random, rded"):
        resolve(from_dict(RunConfig, {"method": "dmm"}))
    with pytest.raises(UnknownNameError, match="model"):
        resolve(from_dict(RunConfig, {"models": ["convnet", "resnet99"]}))
    with pytest.raises(ConfigError, match="has no iterations"):
        resolve(from_dict(RunConfig, {"method": "random", "iterations": 5}))


def test_renamed_config_keys_still_load_with_a_one_line_deprecation():
    import dataclasses
    from typing import ClassVar

    from datadistill.config import ConfigError, DeprecatedKeyWarning, from_dict

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        RENAMED: ClassVar[dict[str, str]] = {"old": "new"}
        new: int = 1

    with pytest.warns(DeprecatedKeyWarning, match="'old'.*'new'"):
        assert from_dict(Cfg, {"old": 3}).new == 3
    assert from_dict(Cfg, {"new": 4}).new == 4
    with pytest.raises(ConfigError, match="both 'old'"):
        from_dict(Cfg, {"old": 3, "new": 4})


def test_each_method_declares_the_network_and_teacher_its_config_names():
    """`MethodEntry.network`/`teacher`: resolving a run asks the entry, never the config's field names;
    a method whose config has a ``model`` (or ``teacher``) field must declare it, or resolve would
    stop checking that network (or stop relabelling with that teacher)."""
    import dataclasses

    from datadistill.methods import METHODS

    for name in METHODS.names():
        entry = METHODS.get(name)
        cfg = entry.config()
        fields = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
        assert entry.network(cfg) == (cfg.model if "model" in fields else None), name
        if "teacher" in fields:
            assert entry.teacher(dataclasses.replace(cfg, teacher="t.safetensors")) == "t.safetensors", name
        else:
            assert entry.teacher(cfg) is None, name


def test_a_method_is_iterative_or_one_shot():
    """An entry gives ``build`` (a loop of ``step`` calls) or ``select`` (one choice, no iterations):
    never both, never neither, and a one-shot one has no iterations."""
    from datadistill.methods import MethodEntry, Selected
    from datadistill.methods.base import register_method

    pick = lambda cfg, data, ipc, init, g: Selected(None)  # noqa: E731
    with pytest.raises(TypeError, match="build .* or select"):
        register_method(MethodEntry(name="x-none", config=dict))
    with pytest.raises(TypeError, match="build .* or select"):
        register_method(MethodEntry(name="x-both", config=dict, build=lambda c, x: None, iterations=1, select=pick))
    with pytest.raises(TypeError, match="no iterations"):
        register_method(MethodEntry(name="x-iter", config=dict, select=pick, iterations=5))
    from datadistill.methods import METHODS

    assert {n for n in METHODS.names() if METHODS.get(n).select is not None} == {"random", "herding", "kcenter", "rded"}
