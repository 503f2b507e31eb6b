"""Shared fixtures: tiny on-disk datasets, an isolated registry, a CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from fsbench import registry as registry_mod


def write_folder(
    root: Path, ids: int = 3, per_id: int = 4, size: int = 16, seed: int = 0, suffix: str = ".png"
) -> Path:
    """A random ImageFolder root/id_k/img_j<suffix>; pixel values are reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    for i in range(ids):
        d = root / f"id_{i:03d}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_id):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"img_{j:02d}{suffix}")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: folder(name="ds", ids=3, per_id=4, size=16, seed=0) -> path of a random ImageFolder."""

    def make(name: str = "ds", **kwargs) -> Path:
        return write_folder(tmp_path / name, **kwargs)

    return make


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own embedding cache; no test reads another's results."""
    monkeypatch.setenv("FSBENCH_CACHE", str(tmp_path / "_cache"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one intra-op thread is fastest, and spares the shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fresh_registry():
    """Reset the process-wide registry before and after a test that registers plugins."""
    registry_mod.set_registry(None)
    yield registry_mod
    registry_mod.set_registry(None)


def run_cli(*args: object) -> None:
    """`fsbench ARGS` in-process for a fixture; a failure shows the command's output."""
    from fsbench.cli import get_cli

    r = CliRunner().invoke(get_cli(), [str(a) for a in args])
    assert r.exit_code == 0, r.output


def micro_train(generator: str, world: Path, run: Path, overrides: dict) -> Path:
    """Train every stage of `generator` on `world` into `run` with `overrides` (a micro run)."""
    run_cli("train", generator, "--data", world, "--run", run, "--json",
            *sum((["-o", f"{k}={v}"] for k, v in overrides.items()), []))
    return run


class Cli:
    """Runs `fsbench ...` in-process; stdout and stderr kept apart, as a shell sees them."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Result:
        from fsbench.cli import get_cli

        return self.runner.invoke(get_cli(), [str(a) for a in args], catch_exceptions=False)

    def json(self, *args: str) -> dict:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli() -> Cli:
    return Cli()
