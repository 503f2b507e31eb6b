"""The command line: --json contracts, one-line errors with exit code 2, help with examples."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from fsbench.cli import get_cli


def test_plugins_json_lists_builtins_and_nothing_else_on_stdout(cli):
    data = cli.json("plugins")
    by_name = {(p["kind"], p["name"]): p for p in data["plugins"]}
    assert by_name[("embedder", "pixels")]["distribution"] == "fsbench"
    assert by_name[("metric", "summary")]["plugin"] == "summary"
    assert data["load_errors"] == []


def test_evaluate_json_contract_and_saved_files(cli, folder, tmp_path):
    root = folder(ids=3, per_id=4, size=8)
    out = tmp_path / "ev"
    data = cli.json("evaluate", "--dataset", root, "--metrics", "summary", "--out", out)
    summary = data["metrics"]["summary"]
    assert summary["mean"] == 4.0 and summary["std"] == 0.0 and summary["identities"] == 3.0
    assert data["provenance"]["seed"] == 0 and data["provenance"]["dataset"]["fingerprint"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == data["metrics"]
    import pandas as pd

    per_id = pd.read_parquet(out / "per_identity.parquet")
    assert per_id["identity"].tolist() == ["id_000", "id_001", "id_002"]
    assert per_id["summary.images"].tolist() == [4, 4, 4]


def test_report_compares_two_evaluations(cli, folder, tmp_path):
    for name, per_id in (("a", 2), ("b", 5)):
        cli.json("evaluate", "--dataset", folder(name, ids=2, per_id=per_id, size=8), "--metrics", "summary",
                 "--out", tmp_path / f"ev-{name}")
    data = cli.json("report", tmp_path / "ev-a", tmp_path / "ev-b", "--out", tmp_path / "rep")
    assert [r["summary.mean"] for r in data["rows"]] == [2.0, 5.0]
    md = (tmp_path / "rep" / "report.md").read_text()
    # summary's headline is its primary scalar, images, as `evaluate` shows it too
    assert "| ev-a | 4 |" in md and "| ev-b | 10 |" in md


def test_data_info_and_skip_bad(cli, folder):
    root = folder(ids=2, per_id=2, size=8)
    (root / "id_001" / "img_00.png").write_bytes(b"garbage")
    result = cli("data", "info", root)
    assert result.exit_code == 2 and "img_00.png: not an image" in result.stderr
    info = cli.json("data", "info", root, "--skip-bad")
    assert info["images"] == 3 and info["skipped"] == [["id_001/img_00.png", "not an image (unrecognised format)"]]


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "--dataset", "{tmp}/nope", "--metrics", "summary"], "nope: no such dataset folder"),
        (["evaluate", "--dataset", "{ds}", "--metrics", "sumary"], "unknown metric 'sumary'; did you mean 'summary'?"),
        (["evaluate", "--dataset", "{ds}", "--metrics", "summary", "-o", "cst.bins=3"], "expected METRIC.KEY=VALUE"),
        (["evaluate", "--dataset", "{ds}", "--metrics", "summary", "--embedder", "nosuch"], "unknown embedder 'nosuch'"),
        (["evaluate", "--dataset", "{ds}", "--metrics", "summary", "--bench", "{tmp}/x.bin"], "x.bin: no such benchmark"),
        (["sample", "pixels"], "Missing option '--out'"),
        (["data", "info", "{tmp}/empty"], "empty dataset: no identity folders"),
    ],
)
def test_expected_mistakes_are_one_line_exit_2(args, message, folder, tmp_path):
    """Run as a user would (a subprocess), so stderr is exactly what they see: one line, no traceback."""
    ds = folder(ids=2, per_id=2, size=8)
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, ds=ds) for a in args]
    proc = subprocess.run([sys.executable, "-m", "fsbench.cli", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    if "Missing option" not in message:  # click's own usage errors print a usage line too
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


def test_every_command_has_help_with_an_example():
    missing = [" ".join(path) for path, cmd in _all_commands(get_cli())
               if not isinstance(cmd, click.Group) and "fsbench" not in (cmd.help or "")]
    assert missing == [], f"commands whose --help shows no example: {missing}"


def test_help_imports_no_heavy_library():
    """--help must stay instant: plugin modules import torch, pandas, numba, dlib... lazily."""
    code = (
        "import sys\nfrom fsbench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({'torch', 'pandas', 'numba', 'scipy', 'matplotlib', 'dlib', 'onnxruntime', 'insightface',"
        " 'cv2', 'sklearn'} & set(sys.modules))\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="
