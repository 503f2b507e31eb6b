"""Run folders of trainable generators, and training them stage by stage.

A run folder holds one generator trained on one dataset with one config::

    R/run.json                  generator, preset, resolved config, data and its fingerprint
    R/<stage>/config.json       the stage's record (fsbench.train.loop): platform, steps...
    R/<stage>/metrics.jsonl     one line per step
    R/<stage>/checkpoint.pt     everything to resume; the final one is what sampling loads
    R/<stage>/status.json       written when the stage finishes: steps, checkpoint sha256,
                                the hashes of the earlier stages it started from

`train_generator` runs the selected stages in their declared order through the one training
loop; a stage whose earlier stages have not finished is refused before any work, and so is a
run folder made by another generator, on other data, or with other settings.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsbench import ui
from fsbench.api import Generator, Stage
from fsbench.data import FaceDataset
from fsbench.data.dataset import same_fingerprint
from fsbench.data.lock import rank0_folder_lock
from fsbench.errors import CheckpointError, UsageError
from fsbench.hashing import sha256_of
from fsbench.judge import is_embedded_world
from fsbench.options import parse, to_dict

__all__ = ["Run", "StageContext", "describe_run", "export_run", "open_run", "select_stages", "train_generator"]

RUN_INFO = "run.json"
STATUS = "status.json"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc.__class__.__name__}); the run folder is damaged") from None


@dataclass
class Run:
    """An opened run folder of one generator."""

    root: Path
    generator: Generator
    preset: str
    config: Any  # the generator's typed Config
    info: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path, generator: Generator) -> Run:
        root = Path(root)
        path = root / RUN_INFO
        if not path.exists():
            why = "no such folder" if not root.exists() else f"no {RUN_INFO}: not an fsbench run"
            raise UsageError(f"{root}: {why} (train one with `fsbench train {generator.name} --data D --run {root}`)")
        info = _read_json(path)
        if info.get("generator") != generator.name:
            raise UsageError(f"{root}: a run of generator {info.get('generator')!r}, not {generator.name!r}")
        config = parse(generator.Config, info.get("config", {}), where=f"{path} config")
        return cls(root, generator, info.get("preset", "?"), config, info)

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def status(self, name: str) -> dict[str, Any] | None:
        path = self.stage_dir(name) / STATUS
        return _read_json(path) if path.exists() else None

    def finished(self, name: str) -> bool:
        return self.status(name) is not None

    def require(self, *names: str) -> None:
        """Refuse to go on when an earlier stage has not finished, naming the command that runs it."""
        for name in names:
            if not self.finished(name):
                data = self.info.get("data", "DATA")
                raise UsageError(
                    f"{self.root}: stage {name!r} has not finished; run `fsbench train {self.generator.name} "
                    f"--data {data} --run {self.root} --stage {name}` first"
                )

    def checkpoint(self, name: str) -> Path:
        return self.stage_dir(name) / "checkpoint.pt"

    def checkpoint_hash(self, name: str) -> str:
        status = self.status(name)
        if status is None:
            self.require(name)
        return str(status["checkpoint_sha256"])  # type: ignore[index]

    def load(self, name: str, map_location: str = "cpu") -> dict[str, Any]:
        """A finished stage's trained state: {"modules", "ema", "tensors", ...} by name.

        The file must be the one its status.json hashed: a checkpoint replaced or cut short
        since is refused rather than sampled."""
        from fsbench.train.checkpoint import load_checkpoint

        self.require(name)
        path = self.checkpoint(name)
        if not path.exists():
            raise CheckpointError(path, "missing, though the stage finished: the run folder is damaged")
        if sha256_of(path) != self.checkpoint_hash(name):
            raise CheckpointError(path, "is not the checkpoint its stage finished with (sha256 differs)")
        state = load_checkpoint(path, kind=f"{self.generator.name}.{name}", required=("state",), map_location=map_location)
        return {**state["state"], "extra": {k: v for k, v in state.items() if k not in ("state", "rng", "config")}}

    def hashes(self) -> dict[str, str]:
        return {s.name: self.checkpoint_hash(s.name) for s in self.generator.stages if self.finished(s.name)}

    def embedded_world(self) -> bool:
        return bool(self.info.get("embedded_world"))


@dataclass
class StageContext:
    """What a generator's `plan_stage` gets: the run, config, device/rank, data, earlier stages."""

    run: Run
    stage: Stage
    config: Any
    env: Any  # fsbench.train.loop.TrainEnv
    data: FaceDataset
    show_progress: bool = True

    @property
    def device(self) -> Any:
        return self.env.device

    def load(self, stage: str) -> dict[str, Any]:
        """Init-from: an earlier stage's trained state (it must be one this stage needs)."""
        if stage not in self.stage.needs:
            raise ValueError(f"stage {self.stage.name!r} does not declare {stage!r} in its needs")
        return self.run.load(stage, map_location=str(self.env.device))


def select_stages(generator: Generator, stage: str | None, until: str | None) -> list[Stage]:
    """The stages a `fsbench train` call runs: all, one (`--stage`), or up to one (`--until`)."""
    if not generator.stages:
        raise UsageError(f"generator {generator.name!r} needs no training (sample it directly)")
    if stage and until:
        raise UsageError("pass at most one of --stage and --until")
    names = [s.name for s in generator.stages]
    wanted = stage or until
    if wanted is not None and wanted not in names:
        raise UsageError(f"generator {generator.name!r} has no stage {wanted!r} (stages: {', '.join(names)})")
    if stage:
        return [s for s in generator.stages if s.name == stage]
    if until:
        return list(generator.stages[: names.index(until) + 1])
    return list(generator.stages)


def _open_or_create(run_dir: Path, generator: Generator, preset: str, config: Any, data: FaceDataset,
                    fingerprint: str) -> Run:
    path = run_dir / RUN_INFO
    cfg = to_dict(config)
    if path.exists():
        run = Run.open(run_dir, generator)
        if run.info.get("exported"):
            raise UsageError(f"{run_dir}: an exported run (weights only) cannot be trained further; "
                             f"train from {run.info.get('exported_from')} or a new --run folder")
        old = run.info.get("config", {})
        changed = sorted(k for k in cfg if k not in generator.resumable and old.get(k) != cfg[k])
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {cfg[k]!r}" for k in changed)
            raise UsageError(f"{run_dir}: this run was started with other settings ({diffs}); use a new --run folder")
        if not same_fingerprint(run.info.get("data_fingerprint"), fingerprint):
            raise UsageError(f"{run_dir}: this run was trained on {run.info.get('data')}, other data than {data.root}; "
                             "use a new --run folder")
        run.config = config  # resumable keys (max_steps, checkpoint_every...) take the new values
        return run
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir}: exists, is not empty and holds no {RUN_INFO}: not an fsbench run folder")
    import fsbench
    from fsbench.train.loop import write_json

    info = {"generator": generator.name, "preset": preset, "config": cfg, "data": str(data.root),
            "data_fingerprint": fingerprint, "embedded_world": is_embedded_world(data.info),
            "stages": [dataclasses.asdict(s) for s in generator.stages], "fsbench_version": fsbench.__version__}
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, info)
    return Run(run_dir, generator, preset, config, info)


def train_generator(
    generator: Generator,
    data: FaceDataset,
    run_dir: str | Path,
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    *,
    stage: str | None = None,
    until: str | None = None,
    on_step: Any = None,
    show_progress: bool = True,
) -> Run:
    """Train (or resume) the selected stages of `generator` on `data` into `run_dir`.

    One training per run folder: rank 0 holds ``<run>.lock`` (`fsbench.data.lock`) for the
    whole call, so a second `fsbench train` on the folder is refused naming the first."""
    from fsbench.train import dist
    from fsbench.train.loop import TrainEnv, train_loop, write_json

    stages = select_stages(generator, stage, until)  # bad names and options: refused before the lock
    config = generator.config(preset, overrides)
    run_dir = Path(run_dir)
    with rank0_folder_lock(run_dir):
        if run_dir.exists() and (run_dir / RUN_INFO).exists():
            Run.open(run_dir, generator)  # another generator's run: refused before the data is read
        fingerprint = data.fingerprint()
        env = TrainEnv.setup(config.device, config.amp, config.seed)  # joins torchrun's process group
        if env.is_main:
            run = _open_or_create(run_dir, generator, preset, config, data, fingerprint)
        dist.barrier()
        if not env.is_main:  # the other ranks read what rank 0 wrote
            run = _open_or_create(run_dir, generator, preset, config, data, fingerprint)
        selected = {s.name for s in stages}
        for s in stages:  # refuse before any work: every need finished already or trained first here
            missing = [n for n in s.needs if n not in selected and not run.finished(n)]
            if missing:
                run.require(*missing)
        for s in stages:
            status = run.status(s.name)
            if status is not None and "planned_steps" in status:  # finished: skip without planning it
                if status["steps"] == _capped(status["planned_steps"], config.max_steps):
                    if dist.detect().is_main and show_progress:
                        ui.err.print(f"stage {s.name!r} already finished ({status['steps']} steps)")
                    continue
            env = TrainEnv.setup(config.device, config.amp, config.seed)  # reseeded per stage
            ctx = StageContext(run, s, config, env, data, show_progress)
            plan = generator.plan_stage(s.name, ctx)
            env = dataclasses.replace(env, amp_dtype=_dtype(plan.amp_dtype))
            total = _capped(plan.total_steps, config.max_steps)
            if status is not None and status.get("steps") == total:
                continue  # finished before status.json recorded planned_steps
            stage_dir = run.stage_dir(s.name)
            needs = {n: run.checkpoint_hash(n) for n in s.needs}
            train_loop(
                stage_dir, plan.state, plan.step, plan.batches, env=env, total_steps=total,
                kind=f"{generator.name}.{s.name}", config=to_dict(config), checkpoint_every=config.checkpoint_every,
                batch_size=plan.batch_size, fingerprint=fingerprint, resumable=generator.resumable,
                record={"generator": generator.name, "stage": s.name, "preset": preset, **to_dict(config),
                        "data": str(data.root), "needs": needs},
                extra={**plan.extra, "needs": needs}, on_step=on_step, show_progress=show_progress,
                description=f"{generator.name} {s.name}",
            )
            if env.is_main:
                if plan.on_finish is not None:
                    plan.on_finish(plan.state)
                write_json(stage_dir / STATUS, {"stage": s.name, "steps": total, "planned_steps": plan.total_steps,
                                                "needs": needs,
                                                "checkpoint_sha256": sha256_of(stage_dir / "checkpoint.pt")})
            dist.barrier()  # the next stage (on every rank) starts from the finished checkpoint
        return run


def _capped(planned: int, max_steps: int) -> int:
    """A stage's steps: its plan's, or at most max_steps when that is set (smoke runs)."""
    return planned if max_steps <= 0 else min(max_steps, planned)


def _dtype(name: str) -> Any:
    import torch

    if name not in ("fp16", "bf16"):
        raise ValueError(f"amp_dtype {name!r}: expected fp16 or bf16")
    return torch.float16 if name == "fp16" else torch.bfloat16


def open_run(root: str | Path) -> Run:
    """A run folder of whichever generator made it (looked up in the registry)."""
    from fsbench.registry import get_registry

    path = Path(root) / RUN_INFO
    if not path.exists():
        raise UsageError(f"{root}: no {RUN_INFO}: not an fsbench run folder")
    name = _read_json(path).get("generator")
    if not isinstance(name, str):
        raise UsageError(f"{path}: names no generator")
    return Run.open(root, get_registry().generator(name))


def describe_run(root: str | Path) -> dict[str, Any]:
    """What `fsbench runs show` prints: each stage's state, steps, checkpoint hash; the config."""
    run = open_run(root)
    generator = run.generator
    stages = []
    for s in generator.stages:
        status, d = run.status(s.name), run.stage_dir(s.name)
        row: dict[str, Any] = {"stage": s.name, "needs": list(s.needs), "state": "not started", "steps": 0,
                               "total_steps": None, "checkpoint_sha256": None, "last": {}}
        if (d / "config.json").exists():
            row["total_steps"] = _read_json(d / "config.json").get("total_steps")
        last = _last_line(d / "metrics.jsonl")
        if last:
            row["state"], row["steps"], row["last"] = "in progress", last.get("step", 0), last
        if status is not None:
            row.update(state="finished", steps=status["steps"], checkpoint_sha256=status["checkpoint_sha256"],
                       started_from=status.get("needs", {}))
        stages.append(row)
    return {"run": str(run.root), "generator": generator.name, "preset": run.preset, "data": run.info.get("data"),
            "data_fingerprint": run.info.get("data_fingerprint"), "embedded_world": run.embedded_world(),
            "stages": stages, "config": run.info.get("config", {})}


def _last_line(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def export_run(root: str | Path, out: str | Path, note: str = "",
               sample_defaults: dict[str, str] | None = None) -> dict[str, Any]:
    """A finished run without what only training needs (optimizer, scheduler and scaler states,
    RNGs): what a plugin ships as its embedded default. Sampling reads it as it reads the run;
    training refuses it (``exported`` in run.json). Writes ``recipe.json`` beside it: the
    data, config, per-stage steps, wall time and platform, the checkpoints' sha256 and `note`
    (the commands that made it). `sample_defaults` are sampling options the run recommends
    (checked against the generator's SampleOptions); `-o` still overrides them."""
    import shutil

    import torch

    from fsbench.train.loop import write_json

    run = open_run(root)
    out = Path(out)
    for s in run.generator.stages:
        run.require(s.name)
    if sample_defaults:
        run.generator.sample_options(sample_defaults)  # refused here, not at every later sampling
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stages = {}
    for s in run.generator.stages:
        src, dst = run.stage_dir(s.name), tmp / s.name
        dst.mkdir()
        state = torch.load(run.checkpoint(s.name), map_location="cpu", weights_only=True)
        keep = {k: v for k, v in state.items() if k != "rng"}
        keep["state"] = {k: v for k, v in state["state"].items() if k in ("modules", "ema", "tensors")}
        torch.save(keep, dst / "checkpoint.pt")
        for name in ("config.json", "metrics.jsonl"):
            if (src / name).exists():
                shutil.copyfile(src / name, dst / name)
        status = {**(run.status(s.name) or {}), "checkpoint_sha256": sha256_of(dst / "checkpoint.pt"),
                  "exported_from": run.checkpoint_hash(s.name)}
        write_json(dst / STATUS, status)
        cfg = _read_json(src / "config.json")
        last = _last_line(src / "metrics.jsonl") or {}
        stages[s.name] = {"steps": status["steps"], "wall_s": round(float(last.get("elapsed_s", float("nan"))), 1),
                          "platform": cfg.get("platform"), "world_size": cfg.get("world_size"),
                          "checkpoint_sha256": status["checkpoint_sha256"],
                          "bytes": (dst / "checkpoint.pt").stat().st_size}
    write_json(tmp / RUN_INFO, {**run.info, "exported": True, "exported_from": str(run.root),
                                "sample_defaults": dict(sample_defaults or {})})
    recipe = {"generator": run.generator.name, "preset": run.preset, "data": run.info.get("data"),
              "data_fingerprint": run.info.get("data_fingerprint"), "config": run.info.get("config"),
              "stages": stages, "sample_defaults": dict(sample_defaults or {}), "commands": note}
    write_json(tmp / "recipe.json", recipe)
    if out.exists():
        if not (out / RUN_INFO).exists():
            shutil.rmtree(tmp)
            raise UsageError(f"{out}: exists and is not an fsbench run; choose another --out")
        shutil.rmtree(out)
    tmp.rename(out)
    return recipe
