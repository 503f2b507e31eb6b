"""The registry: entry points, explicit registration, name clashes, unknown names."""

from __future__ import annotations

import types

import pytest

import fsbench
from fsbench.api import Embedder, Metric, MetricResult
from fsbench.errors import PluginError, UsageError
from fsbench.registry import Registry


def _metric_class(name: str) -> type[Metric]:
    return type(name.title(), (Metric,), {"name": name, "needs": frozenset(),
                                           "compute": lambda self, ctx: MetricResult(name, {"mean": 1.0})})


def _plugin(*metrics: type[Metric]) -> types.SimpleNamespace:
    @fsbench.hookimpl
    def fsbench_register_metrics():
        return list(metrics)

    return types.SimpleNamespace(fsbench_register_metrics=fsbench_register_metrics)


def test_builtins_come_from_entry_points():
    reg = Registry()
    assert reg.load_errors == []
    entries = {(e.kind, e.name): e for e in reg.entries()}
    pixels = entries[("embedder", "pixels")]
    assert (pixels.plugin, pixels.distribution, pixels.version) == ("pixels", "fsbench", fsbench.__version__)
    assert entries[("metric", "summary")].plugin == "summary"


def test_explicit_registration_and_lookup():
    reg = Registry(entry_points=False)
    assert reg.names("metric") == []
    reg.register(_plugin(_metric_class("alpha"), _metric_class("beta")), name="greek")
    assert reg.names("metric") == ["alpha", "beta"]
    assert reg.get("metric", "beta").name == "beta"
    assert reg.metric("alpha").compute(None).scalars == {"mean": 1.0}
    reg.unregister("greek")
    assert reg.names("metric") == []


def test_two_plugins_claiming_one_name_names_both():
    """Neither side wins: the name is unusable (naming both), every other name still works."""
    reg = Registry(entry_points=False)
    reg.register(_plugin(_metric_class("same"), _metric_class("other")), name="first-plugin")
    reg.register(_plugin(_metric_class("same")), name="second-plugin")
    assert reg.names("metric") == ["other"]
    with pytest.raises(PluginError) as exc:
        reg.get("metric", "same")
    assert "first-plugin" in str(exc.value) and "second-plugin" in str(exc.value) and "'same'" in str(exc.value)
    assert reg.load_errors == [str(exc.value)]
    with pytest.raises(PluginError, match="first-plugin"):
        reg.check()


def test_two_plugins_with_one_plugin_name_is_refused():
    reg = Registry(entry_points=False)
    reg.register(_plugin(), name="p")
    with pytest.raises(PluginError, match="two plugins are called 'p'"):
        reg.register(_plugin(), name="p")


def test_unknown_name_suggests_the_closest():
    reg = Registry(entry_points=False)
    reg.register(_plugin(_metric_class("consistency"), _metric_class("sep")), name="m")
    with pytest.raises(UsageError) as exc:
        reg.get("metric", "consistncy")
    msg = str(exc.value)
    assert "did you mean 'consistency'?" in msg and "known: consistency, sep" in msg
    with pytest.raises(UsageError, match="unknown metric 'zzz' \\(known: consistency, sep\\)"):
        reg.get("metric", "zzz")


@pytest.mark.parametrize("bad", ["Has Space", "a/b", "x:y", "", "Upper"])
def test_invalid_names_are_refused(bad):
    reg = Registry(entry_points=False)
    reg.register(_plugin(_metric_class("ok")), name="ok")
    cls = _metric_class("x")
    cls.name = bad
    reg.register(_plugin(cls), name="bad")
    assert reg.names("metric") == ["ok"]
    assert len(reg.load_errors) == 1 and "plugin 'bad'" in reg.load_errors[0]
    with pytest.raises(PluginError, match="invalid name"):
        reg.check()


def test_wrong_base_class_is_refused():
    class NotAMetric(Embedder):
        name = "imposter"

    reg = Registry(entry_points=False)
    reg.register(_plugin(NotAMetric), name="wrong")
    assert reg.names("metric") == []
    with pytest.raises(PluginError, match="plugin 'wrong'.*not a subclass of fsbench.api.Metric"):
        reg.get("metric", "imposter")


def test_misspelled_hook_fails_loudly():
    @fsbench.hookimpl
    def fsbench_register_metrix():
        return []

    reg = Registry(entry_points=False)
    with pytest.raises(PluginError, match="unknown hook"):
        reg.register(types.SimpleNamespace(fsbench_register_metrix=fsbench_register_metrix), name="typo")


def test_allowlist_environment_variable(monkeypatch):
    monkeypatch.setenv("FSBENCH_PLUGINS", "pixels")
    reg = Registry()
    assert [e.name for e in reg.entries()] == ["pixels"]
    monkeypatch.setenv("FSBENCH_PLUGINS", "")
    assert Registry().entries() == []


def test_plugins_dir_loads_loose_files(tmp_path, monkeypatch):
    (tmp_path / "loose.py").write_text(
        "import fsbench\nfrom fsbench.api import Metric, MetricResult\n"
        "class Loose(Metric):\n    name = 'loose'\n    needs = frozenset()\n"
        "    def compute(self, ctx):\n        return MetricResult('loose', {'mean': 2.0})\n"
        "@fsbench.hookimpl\ndef fsbench_register_metrics():\n    return [Loose]\n"
    )
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.setenv("FSBENCH_PLUGINS", "")
    reg = Registry(plugins_dir=tmp_path)
    entry = reg.entries("metric")[0]
    assert (entry.name, entry.plugin, entry.distribution) == ("loose", "loose", str(tmp_path))
    assert len(reg.load_errors) == 1 and "broken.py" in reg.load_errors[0] and "boom" in reg.load_errors[0]


def test_metric_spec_option_and_bad_options():
    class WithOption(Metric):
        name = "fd"
        needs = frozenset()

        def __init__(self, option=None):
            self.option = option

        def compute(self, ctx):
            return MetricResult("fd", {})

    reg = Registry(entry_points=False)
    reg.register(_plugin(WithOption), name="p")
    assert reg.metric("fd:dlib").option == "dlib"
    with pytest.raises(UsageError, match="metric 'fd': bad options \\['bins'\\]"):
        reg.metric("fd", bins="3")
