"""Gap-to-real: train one FR model per training set, verify each on every benchmark.

VIGFace's Table 2 (and DCFace's protocol): the same preset and seed for every training set;
accuracy (%) on each benchmark with insightface's protocol (flip TTA, 10 folds), their
average, and GR = (Avg_real - Avg_syn) / Avg_syn against the real baseline, shown in %.
With `mix`, Table 3: each synthetic set is also trained together with the real one, and the
change of the average against real alone is reported.

Mixing keeps the two sets' identities apart (folder names prefixed ``real-``/``syn-``), so a
synthetic identity that happens to share a real folder name is not merged into it. The
mixed folder is a set of symlinks to the identity folders, not a copy.

Each model is kept in ``WORK/runs/NAME-KEY``, KEY a hash of the training data's fingerprint
(both sets' for a mix) and of the config (minus keys that change nothing but speed: workers,
cache_images, checkpoint_every). A finished model there (``backbone.pth`` and
``fr_benchmark_run.json`` naming its key) is reused instead of trained again, and the command
says so; an interrupted one resumes (`fsbench.train.fr.train_fr`); `retrain` starts each from
nothing. `benchmark fr --out` keeps them: re-run with the same settings it only verifies.

It runs in one process (on a GPU when present). For multi-GPU training of large sets, train
each set with ``torchrun ... fr train --run-dir OUT/runs/NAME-KEY`` first (the folder the
command names as it starts training that set): it then finds the finished run and only
verifies it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fsbench import ui
from fsbench.data import FaceDataset
from fsbench.errors import UsageError
from fsbench.results_folder import ResultsFolder

__all__ = ["TrainingSet", "gap_to_real", "make_mix", "run_gap_benchmark", "training_key"]

RUN_RECORD = "fr_benchmark_run.json"  # in a run folder: the key of the finished training, its time
SPEED_ONLY = frozenset({"workers", "cache_images", "checkpoint_every"})  # config keys that change no weights
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "backbone.pth", RUN_RECORD)  # what a training writes


@dataclass
class TrainingSet:
    name: str
    root: Path
    kind: str  # "real", "synthetic" or "real+synthetic"
    dataset: FaceDataset | None = field(default=None, repr=False)
    fingerprints: tuple[str, ...] = ()  # of the data it trains on (real and synthetic for a mix)
    key: str = ""  # training_key(): the run folder's suffix
    mix_of: FaceDataset | None = field(default=None, repr=False)  # a mix: the synthetic set (made when trained)


def training_key(fingerprints: tuple[str, ...], kind: str, cfg: dict[str, Any]) -> str:
    """What a trained model is a function of: the data and every config key that changes weights."""
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if k not in SPEED_ONLY}
    blob = json.dumps({"data": list(fingerprints), "kind": kind, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _finished(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The record of a finished training with this key in `run_dir`, else None."""
    try:
        record = json.loads((run_dir / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or not (run_dir / "backbone.pth").is_file():
        return None
    return record


def _file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def gap_to_real(avg_real: float, avg_syn: float) -> float:
    """GR = (Avg_real - Avg_syn) / Avg_syn (a fraction; x100 for the papers' %)."""
    return (avg_real - avg_syn) / avg_syn


def make_mix(real: FaceDataset, syn: FaceDataset, out: Path) -> FaceDataset:
    """An ImageFolder of symlinks: real-<id>/ and syn-<id>/ pointing at the two sets' folders."""
    out.mkdir(parents=True, exist_ok=True)
    for prefix, ds in (("real-", real), ("syn-", syn)):
        for identity in ds.identities:
            link = out / f"{prefix}{identity}"
            target = (ds.root / identity).resolve()
            if link.is_symlink() and Path(os.readlink(link)) == target:
                continue
            if link.exists() or link.is_symlink():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
    return FaceDataset.open(out)


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]


def bench_names(benches: list[Path]) -> list[str]:
    """Column names: file stems, or parent/stem where stems repeat."""
    stems = [b.stem for b in benches]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{b.parent.name}/{b.stem}" for b in benches]


def run_gap_benchmark(
    train_dirs: list[Path],
    baseline: Path,
    benches: list[Path],
    work: Path,
    preset: str = "tiny",
    overrides: dict[str, Any] | None = None,
    mix: bool = False,
    folds: int = 10,
    *,
    results_folder: ResultsFolder | None = None,
    retrain: bool = False,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Train (or reuse) and verify every set; returns the Table 2/3 frame (one row per training set).

    `results_folder` (`benchmark fr --out`): checked with these settings (the trainings' keys,
    the benchmarks' content, folds) before anything is written, then started. `retrain`:
    remove each set's earlier training files first (`--overwrite`)."""
    from fsbench.data.pairs import read_bin_pairs
    from fsbench.plugins.fr.embedder import RunEmbedder
    from fsbench.train.fr import fr_config, train_fr
    from fsbench.verification import verify_embedder

    if not train_dirs:
        raise UsageError("give at least one --train DIR (a synthetic training set)")
    if not benches:
        raise UsageError("give at least one benchmark with --bench a.bin,b.bin")
    cfg = fr_config(preset, overrides)  # refuse bad overrides before any training
    pairsets = [read_bin_pairs(b) for b in benches]  # refuse a bad pack before any training
    columns = bench_names(benches)

    real = FaceDataset.open(baseline)
    real_fp = real.fingerprint()
    sets = [TrainingSet(_unique_names([baseline])[0], baseline, "real", real, (real_fp,))]
    syn_names = _unique_names(train_dirs)
    for name, d in zip(syn_names, train_dirs):
        syn = FaceDataset.open(d)
        sets.append(TrainingSet(name, d, "synthetic", syn, (syn.fingerprint(),)))
    if mix:  # the mixed folder is made just before its training: nothing is written before the checks
        for name, d in zip(syn_names, train_dirs):
            syn_set = next(s for s in sets if s.root == d)
            sets.append(TrainingSet(f"{sets[0].name} + {name}", work / "mix" / name.replace("/", "_"), "real+synthetic",
                                    None, (real_fp, *syn_set.fingerprints), mix_of=syn_set.dataset))
    for ts in sets:
        ts.key = training_key(ts.fingerprints, ts.kind, cfg)
    if results_folder is not None:  # a re-run with these settings continues here; other settings are refused
        settings = {"preset": preset, "trainings": [[ts.name, ts.kind, ts.key] for ts in sets],
                    "benchmarks": {c: _file_digest(b) for c, b in zip(columns, benches)}, "folds": folds}
        results_folder.check(work, settings=settings)
        results_folder.start()

    rows: list[dict[str, Any]] = []
    for k, ts in enumerate(sets):
        run_dir = work / "runs" / f"{ts.name.replace('/', '_').replace(' ', '')}-{ts.key}"
        if retrain:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
        if ts.mix_of is not None:
            ts.dataset = make_mix(real, ts.mix_of, ts.root)
        ds = ts.dataset
        assert ds is not None
        step = f"{k + 1}/{len(sets)} {ts.name} ({ds.num_identities} ids, {len(ds)} images)"
        record = _finished(run_dir, ts.key)
        if record is not None:
            ui.err.print(f"{step}: reused the finished training in {run_dir} (same data and config; "
                         "--overwrite trains again)", soft_wrap=True, markup=False, highlight=False)
            seconds = float(record.get("train_seconds", float("nan")))
        else:
            ui.err.print(f"{step}: training in {run_dir}", soft_wrap=True, markup=False, highlight=False)
            result = train_fr(ds, run_dir, preset, overrides)
            seconds = result.seconds
            _write_record(run_dir, {"key": ts.key, "training_set": ts.name, "kind": ts.kind,
                                    "data_fingerprints": list(ts.fingerprints), "steps": result.steps,
                                    "train_seconds": round(seconds, 1)})
        embedder = RunEmbedder(run_dir)
        row: dict[str, Any] = {
            "training_set": ts.name, "kind": ts.kind, "images": len(ds), "identities": ds.num_identities,
            "per_identity": round(len(ds) / ds.num_identities, 1),
        }
        for col, ps in zip(columns, pairsets):
            res = verify_embedder(embedder, ps, flip=True, n_folds=folds)
            row[col] = 100.0 * res.accuracy
            row[f"{col}_std"] = 100.0 * res.std
        row["average"] = sum(row[c] for c in columns) / len(columns)
        row["train_seconds"] = round(seconds, 1)
        row["reused"] = record is not None
        row["run_dir"] = str(run_dir)
        rows.append(row)

    df = pd.DataFrame(rows)
    avg_real = float(df.loc[0, "average"])
    kinds_averages = list(zip(df["kind"], df["average"]))
    df["gap_to_real_pct"] = [float("nan") if kind != "synthetic" else 100.0 * gap_to_real(avg_real, avg)
                             for kind, avg in kinds_averages]
    df["delta_vs_real"] = [float("nan") if kind != "real+synthetic" else avg - avg_real for kind, avg in kinds_averages]
    meta = {
        "preset": preset, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        "benchmarks": {c: str(b) for c, b in zip(columns, benches)}, "pairs": {c: len(p) for c, p in zip(columns, pairsets)},
        "folds": folds, "flip": True, "baseline": str(baseline), "mix": mix,
    }
    return df, meta


def _write_record(run_dir: Path, record: dict[str, Any]) -> None:
    tmp = run_dir / f".{RUN_RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run_dir / RUN_RECORD)


def table_rows(df: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Table 2's layout: set, # images (classes x variations), accuracies, average, GR."""
    head = ["Training set", "# images (ids x per id)", *columns, "Average", "GR (%)"]
    rows = []
    for _, r in df.iterrows():
        tail = r["gap_to_real_pct"] if r["kind"] == "synthetic" else None
        if r["kind"] == "real+synthetic":
            tail = f"{r['delta_vs_real']:+.2f} avg"
        rows.append([
            f"{r['training_set']} ({r['kind']})", f"{r['images']} ({r['identities']}x{r['per_identity']:g})",
            *[f"{r[c]:.2f}" for c in columns], f"{r['average']:.2f}",
            f"{tail:.2f}" if isinstance(tail, float) else (tail or "-"),
        ])
    return head, rows


def to_markdown(head: list[str], rows: list[list[Any]], meta: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    cfg = meta["config"]
    lines += [
        "",
        f"Verification accuracy (%), insightface protocol: flip TTA, {meta['folds']} unshuffled folds. "
        f"GR = (Avg_real - Avg_syn) / Avg_syn against {meta['baseline']}. "
        f"Every model: preset `{meta['preset']}` ({cfg['network']}, {cfg['margin']} m={cfg['m']} s={cfg['s']}, "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, seed {cfg['seed']}).",
    ]
    return "\n".join(lines) + "\n"
