"""Sampling a generator into a dataset: keys, fixed chunks, shards, journals, resume.

Every image is a pure function of its key (identity, row, image index, seed). The key list,
identity-major, is cut into chunks of `Sampler.batch_size` keys in one global order, and
shard i of n takes chunks i, i + n, i + 2n, ...: an unsharded run and any sharded one hand
the sampler the same batches, so they write the same bytes.

Shards (``--shard i/n``, or the ranks of ``torchrun``) write into one folder,
``<out>.partial/``, each journaling its finished items in ``journal-<i>-of-<n>.jsonl``. The
first shard records the request (generator, checkpoints' hashes, config, options, seed,
sizes) in ``request.json``; a shard asking for anything else is refused. The shard that
ends with every key journaled writes ``manifest.csv`` and ``dataset.json`` and renames the
folder into place, so the folder opens as one dataset with no merge command. Items
journaled by any earlier run or shard are done; a chunk missing any item is sampled again
whole (the same batch gives the same bytes) and only its missing items are written.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fsbench import ui
from fsbench.api import Identity, SampleKey, Sampler
from fsbench.data.dataset import INFO_NAME, FaceDataset
from fsbench.data.lock import LOCK_SUFFIX, FolderLock
from fsbench.data.writer import MANIFEST_NAME, move_into_place, write_csv, write_item
from fsbench.errors import UsageError

__all__ = ["Shard", "SamplingRequest", "chunks", "keys_for", "parse_shard", "sample_dataset"]

REQUEST = "request.json"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def journal(self) -> str:
        return f"journal-{self.index}-of-{self.count}.jsonl"

    @property
    def lock(self) -> str:
        """Held while this shard writes: two processes never write one shard."""
        return f"journal-{self.index}-of-{self.count}.lock"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(spec: str | None) -> Shard:
    """``"i/n"`` (0 <= i < n) -> Shard; None: the torchrun rank and world size, else 0/1."""
    if spec is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return Shard(int(os.environ.get("RANK", "0")), world) if world > 1 else Shard()
    index, sep, count = spec.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {spec}: expected I/N with 0 <= I < N (shards of a run are 0/N ... {max(n, 2) - 1}/N)")
    return Shard(i, n)


@dataclass(frozen=True)
class SamplingRequest:
    """What a sampled dataset is a function of; two shards of one dataset must agree on it."""

    generator: str
    checkpoints: dict[str, str]  # stage -> sha256 of the checkpoint sampled
    config: dict[str, Any]
    options: dict[str, Any]
    seed: int
    n_ids: int
    per_id: int
    batch_size: int

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.__dict__, default=str))


def keys_for(identities: list[Identity], per_id: int, seed: int) -> list[SampleKey]:
    return [SampleKey(ident.name, ident.row, j, seed) for ident in identities for j in range(per_id)]


def chunks(keys: list[SampleKey], batch_size: int, shard: Shard) -> list[list[SampleKey]]:
    """The shard's chunks of the global key order (see the module docstring)."""
    every = [keys[k:k + batch_size] for k in range(0, len(keys), batch_size)]
    return every[shard.index::shard.count]


def image_name(key: SampleKey, suffix: str) -> str:
    return f"{key.image:04d}{suffix}"


def _read_journals(partial: Path) -> dict[str, dict[str, Any]]:
    """Rows journaled by every shard of every earlier run, by path (files that exist only)."""
    rows: dict[str, dict[str, Any]] = {}
    for journal in sorted(partial.glob("journal-*.jsonl")):
        for line in journal.read_bytes().splitlines():
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the line being written when a shard died
            if (partial / row["path"]).exists():
                rows[row["path"]] = row
    return rows


def _claim_request(partial: Path, request: dict[str, Any], out: Path) -> None:
    path = partial / REQUEST
    if path.exists():
        old = json.loads(path.read_text())
        if old != request:
            diffs = ", ".join(f"{k}: {old.get(k)!r} -> {request[k]!r}" for k in request if old.get(k) != request[k])
            raise UsageError(f"{partial}: holds an unfinished sampling with other settings ({diffs}); "
                             f"finish it with the same options, or pass --overwrite")
        return
    tmp = partial / f".{REQUEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(request, indent=2) + "\n")
    try:
        os.link(tmp, path)  # atomic create-if-absent: two shards starting together agree on one
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    if json.loads(path.read_text()) != request:
        raise UsageError(f"{out}: another shard started this folder with other settings; use the same options")


def _prepare(out: Path, request: dict[str, Any], overwrite: bool) -> Path | None:
    """The .partial folder to write into, or None when `out` already holds this very dataset."""
    partial = out.with_name(out.name + ".partial")
    if out.exists():
        info_path = out / INFO_NAME
        info = json.loads(info_path.read_text()) if info_path.exists() else None
        if info is not None and info.get("request") == request and not overwrite:
            return None
        if info is None:
            raise UsageError(f"{out}: exists and is not an fsbench dataset (no {INFO_NAME}); choose another --out")
        if not overwrite:
            raise UsageError(f"{out}: holds a dataset sampled with other settings; pass --overwrite to replace it "
                             "or choose another --out")
    if overwrite and partial.exists():
        _check_replaceable(partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    _claim_request(partial, request, out)
    return partial


def _check_replaceable(partial: Path) -> None:
    """--overwrite removes a .partial folder only when sampling made it and no shard is writing it."""
    from fsbench.data.lock import live_holder

    names = os.listdir(partial)
    if names and REQUEST not in names and not any(n.startswith("journal-") for n in names):
        raise UsageError(f"{partial}: not an unfinished fsbench sampling (no {REQUEST}); move it away, "
                         "fsbench will not delete it")
    for lock in sorted(partial.glob("journal-*.lock")):
        holder = live_holder(lock)
        if holder is not None:
            raise UsageError(f"{partial}: shard {lock.stem.removeprefix('journal-').replace('-of-', '/')} is being "
                             f"written by pid {holder.get('pid')} on {holder.get('host')} (`{holder.get('command')}`); "
                             "wait for it before --overwrite")


def _finalize(partial: Path, out: Path, rows: dict[str, dict[str, Any]], info: dict[str, Any]) -> bool:
    """Write manifest.csv and dataset.json and move the folder into place: the one shard that
    holds ``<out>.finalize.lock`` does (a dead finisher's lock is taken over); False when
    another shard is finishing, or has finished, the dataset."""
    import fsbench

    lock = FolderLock(out, path=out.with_name(out.name + ".finalize" + LOCK_SUFFIX), command="finalize")
    try:
        lock.acquire()
    except UsageError:
        return False  # another shard is finishing the dataset right now
    try:
        if not partial.exists():
            return False  # it finished the dataset while we waited
        ordered = [rows[k] for k in sorted(rows)]
        write_csv(partial / MANIFEST_NAME, ordered)
        info = {**info, "identities": len({r["identity"] for r in ordered}), "images": len(ordered),
                "fsbench_version": fsbench.__version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        (partial / INFO_NAME).write_text(json.dumps(info, indent=2, default=str) + "\n")
        for name in [*partial.glob("journal-*.jsonl"), partial / REQUEST]:
            name.unlink()
        for name in partial.glob("journal-*.lock"):  # shards that finished (or died): not part of the dataset
            name.unlink(missing_ok=True)
        move_into_place(partial, out)
    finally:
        lock.release()
    return True


def sample_dataset(
    sampler: Sampler,
    request: SamplingRequest,
    out: str | Path,
    *,
    shard: Shard = Shard(),
    info: dict[str, Any] | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> FaceDataset | None:
    """Sample this shard's items into `out`; returns the dataset once every shard has
    finished (this one last), else None."""
    out = Path(out)
    identities = sampler.identities(request.n_ids, request.seed)
    if len(identities) != request.n_ids or len({i.name for i in identities}) != request.n_ids:
        raise UsageError(f"{request.generator}: its sampler gave {len(identities)} identities for --ids {request.n_ids}")
    req = request.to_json()
    partial = _prepare(out, req, overwrite)
    if partial is None:
        if show_progress:
            ui.err.print(f"{out}: already sampled with these settings")
        return FaceDataset.open(out)
    meta = {i.name: i.meta for i in identities}
    keys = keys_for(identities, request.per_id, request.seed)
    suffix = sampler.suffix
    from fsbench.data.lock import FolderLock

    shard_lock = FolderLock(f"{out} (shard {shard})", path=partial / shard.lock).acquire()
    done = _read_journals(partial)
    todo = [c for c in chunks(keys, request.batch_size, shard)
            if any(f"{k.identity}/{image_name(k, suffix)}" not in done for k in c)]
    journal = open(partial / shard.journal, "ab")
    try:
        items = _sample_chunks(sampler, todo)
        for key, sample in ui.track(items, f"sampling {request.generator} (shard {shard})",
                                    total=sum(len(c) for c in todo), unit="images") if show_progress else items:
            name = image_name(key, suffix)
            rel = f"{key.identity}/{name}"
            if rel in done:
                continue
            write_item(partial, key.identity, name, sample.image, aux=sample.aux, aux_dirs=sampler.aux_dirs)
            row = {"path": rel, "identity": key.identity, **meta[key.identity], **sample.meta,
                   "row": key.row, "image_index": key.image, "seed": key.seed}
            journal.write(orjson.dumps(row, default=_jsonable, option=orjson.OPT_APPEND_NEWLINE))
            journal.flush()
    finally:
        journal.close()
        shard_lock.release()
    rows = _read_journals(partial)
    if len(rows) < len(keys):
        if show_progress:
            ui.err.print(f"shard {shard} done: {len(rows)} of {len(keys)} images in {partial}; "
                         "the last shard to finish completes the dataset")
        return None
    full_info = {"generator": request.generator, "request": req, "sampler": sampler.info,
                 "aux_dirs": list(sampler.aux_dirs), **(info or {})}
    if not _finalize(partial, out, rows, full_info):
        return None
    return FaceDataset.open(out)


def _sample_chunks(sampler: Sampler, todo: list[list[SampleKey]]) -> Iterator[tuple[SampleKey, Any]]:
    for chunk in todo:
        samples = sampler.sample(chunk)
        if len(samples) != len(chunk):
            raise RuntimeError(f"sampler returned {len(samples)} samples for {len(chunk)} keys")
        yield from zip(chunk, samples)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------- a generator's sampling


@dataclass
class SamplingPlan:
    """A generator opened for sampling: its sampler, the request and dataset.json's lineage."""

    sampler: Sampler
    request: SamplingRequest
    info: dict[str, Any]

    def digest(self) -> str:
        """A short hash of the request: `evaluate --generator` keys its samples folder by it."""
        import hashlib

        blob = json.dumps(self.request.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def plan_sampling(generator: Any, run_dir: str | Path | None, *, n_ids: int, per_id: int, seed: int,
                  preset: str = "tiny", overrides: dict[str, Any] | None = None) -> SamplingPlan:
    """Open `generator` (a trained run, its embedded default, or no run) and check every option
    before anything is sampled. ``-o`` keys are the generator's SampleOptions; for a generator
    that needs no training, its Config keys too (there is no run to carry them)."""
    import dataclasses

    from fsbench.options import to_dict
    from fsbench.runs import Run

    if n_ids < 1:
        raise UsageError(f"--ids {n_ids}: need at least one identity")
    if per_id < 1:
        raise UsageError(f"--per-id {per_id}: need at least one image per identity")
    if seed < 0:
        raise UsageError(f"--seed {seed}: must be >= 0")
    overrides = dict(overrides or {})
    run = None
    if generator.needs_training:
        path = run_dir if run_dir is not None else generator.default_run()
        if path is None:
            raise UsageError(f"generator {generator.name!r} samples from a trained run: pass --run DIR "
                             f"(make one with `fsbench train {generator.name} --data D --run DIR`)")
        run = Run.open(path, generator)
        run.require(*(s.name for s in generator.stages))
        config = run.config
        lineage = run.embedded_world()
        # a run may recommend sampling options (an exported default: fewer DDIM steps on CPU);
        # -o wins, and the request records what was used
        overrides = {**run.info.get("sample_defaults", {}), **overrides}
    else:
        if run_dir is not None:
            raise UsageError(f"generator {generator.name!r} needs no training: drop --run")
        names = {f.name for f in dataclasses.fields(generator.Config)}
        config = generator.config(preset, {k: v for k, v in overrides.items() if k in names})
        overrides = {k: v for k, v in overrides.items() if k not in names}
        lineage = generator.embedded_world
    options = generator.sample_options(overrides)
    sampler = generator.sampler(run, config, options)
    request = SamplingRequest(
        generator=generator.name, checkpoints=run.hashes() if run else {}, config=to_dict(config),
        options=to_dict(options), seed=seed, n_ids=n_ids, per_id=per_id, batch_size=int(sampler.batch_size),
    )
    info = {"embedded_world": bool(lineage), "run": str(run.root) if run else None,
            "preset": run.preset if run else preset}
    return SamplingPlan(sampler, request, info)
