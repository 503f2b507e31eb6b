"""fsbench.options: one typed layer for -o KEY=VALUE, presets and plugin options."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from fsbench.errors import UsageError
from fsbench.options import (
    as_dict,
    check_presets,
    describe,
    opt,
    parse,
    parse_pairs,
    preset,
    schema_from_defaults,
    to_dict,
)


@dataclass(frozen=True)
class Opts:
    masks: bool = opt(True, "write masks")
    milestones: tuple[int, ...] = opt((24, 30), "decay epochs", min=1)
    lr: float = opt(0.1, "learning rate", min=0, min_exclusive=True)
    seed: int = opt(0, "seed", min=0)
    input_size: int = opt(112, "input side", min=16, max=1024)
    dropout: float = opt(0.0, "dropout", min=0, max=1, max_exclusive=True)
    margin: Literal["arcface", "cosface"] = opt("arcface", "loss margin")
    name: str = opt("r50", "network", choices=("r18", "r50"))
    workers: int | None = opt(None, "processes (none: automatic)", min=1)
    pair: tuple[float, float] = opt((0.3, 0.7), "low,high", min=0, max=1)


def refused(values: dict, match: str) -> str:
    with pytest.raises(UsageError, match=match) as info:
        parse(Opts, values, where="test")
    message = str(info.value)
    assert "\n" not in message and message.startswith("test: ")
    return message


# --------------------------------------------------------------------------- conversions


def test_strings_convert_to_the_declared_types():
    o = parse(Opts, {"masks": "false", "milestones": "3,4", "lr": "0.05", "seed": "7", "workers": "2",
                     "pair": "0.1, 0.9", "margin": "cosface"}, where="test")
    assert o.masks is False and o.milestones == (3, 4) and o.lr == 0.05 and o.seed == 7
    assert o.workers == 2 and o.pair == (0.1, 0.9) and o.margin == "cosface"
    for word, value in (("1", True), ("yes", True), ("ON", True), ("0", False), ("no", False), ("off", False)):
        assert parse(Opts, {"masks": word}, where="test").masks is value
    assert parse(Opts, {"milestones": [5, "6"]}, where="test").milestones == (5, 6)
    assert parse(Opts, {"seed": "2e6"}, where="test").seed == 2_000_000  # an integer, written short
    assert parse(Opts, {"lr": 1}, where="test").lr == 1.0
    assert parse(Opts, {}, where="test") == Opts()


def test_bad_values_are_one_line_errors_naming_the_option():
    refused({"masks": "maybe"}, r"masks='maybe' is not a valid bool \(true/false")
    refused({"seed": "3.5"}, r"seed='3.5' is not a valid int >= 0")
    refused({"seed": True}, "seed=True is not a valid int")
    refused({"milestones": "3,x"}, "milestones='3,x' has an element 'x'")
    refused({"milestones": "3,,4"}, "empty element")
    refused({"milestones": "0,4"}, r"milestones='0,4' is out of range; expected comma-separated ints >= 1")
    for bad in ("nan", "inf", "-inf", float("nan")):
        refused({"lr": bad}, r"lr=.* must be a finite number \(float > 0\)")
    refused({"lr": "0"}, "lr='0' is out of range; expected float > 0")
    refused({"seed": "-1"}, "seed='-1' is out of range; expected int >= 0")
    refused({"input_size": "100000"}, r"input_size='100000' is out of range; expected int in \[16, 1024\]")
    refused({"dropout": "1"}, r"dropout='1' is out of range; expected float in \[0, 1\)")
    refused({"pair": "0.5"}, r"pair='0.5' has 1 value\(s\); expected 2 comma-separated floats in \[0, 1\]")
    refused({"pair": "0.1,0.5,0.9"}, "has 3 value")


def test_unknown_keys_are_refused_with_a_suggestion():
    message = refused({"seeed": "1", "dropot": "0.1", "zzz": 1}, r"unknown option\(s\) dropot, seeed, zzz")
    assert "did you mean dropout for dropot, seed for seeed?" in message and "(known: masks, milestones" in message
    assert "did you mean seed?" in refused({"sed": "1"}, "unknown option")


def test_literal_and_choices():
    refused({"margin": "arc"}, "margin='arc' is not allowed; expected one of: arcface, cosface")
    refused({"name": "r100"}, "name='r100' is not allowed; expected one of: r18, r50")
    assert parse(Opts, {"name": "r18"}, where="test").name == "r18"


def test_optional():
    assert parse(Opts, {"workers": "none"}, where="test").workers is None
    assert parse(Opts, {"workers": ""}, where="test").workers is None
    assert parse(Opts, {"workers": None}, where="test").workers is None
    refused({"workers": "0"}, r"workers='0' is out of range; expected int >= 1 or none")


def test_base_and_round_trip_through_json():
    base = parse(Opts, {"lr": "0.2", "milestones": "5"}, where="test")
    o = parse(Opts, {"seed": "3"}, where="test", base=base)
    assert (o.lr, o.milestones, o.seed) == (0.2, (5,), 3)
    data = to_dict(o)
    assert data["milestones"] == [5] and data["pair"] == [0.3, 0.7]
    assert parse(Opts, json.loads(json.dumps(data)), where="test") == o
    assert as_dict(o)["milestones"] == (5,)


def test_describe_reads_like_the_docs():
    rows = {r["name"]: r for r in describe(Opts)}
    assert rows["masks"] == {"name": "masks", "type": "bool", "default": True, "help": "write masks"}
    assert rows["lr"]["type"] == "float > 0"
    assert rows["seed"]["type"] == "int >= 0"
    assert rows["input_size"]["type"] == "int in [16, 1024]"
    assert rows["dropout"]["type"] == "float in [0, 1)"
    assert rows["margin"]["type"] == "one of: arcface, cosface"
    assert rows["name"]["type"] == "one of: r18, r50"
    assert rows["workers"]["type"] == "int >= 1 or none" and rows["workers"]["default"] is None
    assert rows["milestones"]["type"] == "comma-separated ints >= 1" and rows["milestones"]["default"] == [24, 30]
    assert rows["pair"]["type"] == "2 comma-separated floats in [0, 1]"


def test_parse_pairs():
    assert parse_pairs(["lr=0.05", " network = r18 ", "empty=", "expr=a=b"]) == {
        "lr": "0.05", "network": "r18", "empty": "", "expr": "a=b"}
    for bad in ("lr", "=3", " =3"):
        with pytest.raises(UsageError, match="-o .*: expected KEY=VALUE"):
            parse_pairs([bad])
    # the CLI's and the training config's names are the same parser
    from fsbench.cli import parse_overrides as cli_parse
    from fsbench.train.config import parse_overrides as train_parse

    assert cli_parse(("a= 1",)) == train_parse(["a= 1"]) == {"a": "1"}


def test_presets():
    presets = {"tiny": {"lr": 0.5, "input_size": 32}, "paper": {}}
    o = preset(Opts, presets, "tiny", {"seed": "4"}, where="gen 'x'")
    assert (o.lr, o.input_size, o.seed) == (0.5, 32, 4)
    with pytest.raises(UsageError, match=r"gen 'x': unknown preset 'tiy'; did you mean tiny\? \(known: tiny, paper\)"):
        preset(Opts, presets, "tiy", {}, where="gen 'x'")
    assert set(check_presets(Opts, presets, "gen 'x'")) == {"tiny", "paper"}
    with pytest.raises(UsageError, match=r"gen 'x' \(preset 'bad'\): input_size=8 is out of range"):
        check_presets(Opts, {**presets, "bad": {"input_size": 8}}, "gen 'x'")


def test_schema_from_defaults_types_a_plain_dict():
    schema = schema_from_defaults("Cfg", {"lr": 0.1, "steps": (6, 8), "flip": True, "net": "r4", "extra": None},
                                  {"lr": {"min": 0, "min_exclusive": True}, "absent": {"min": 1}})
    o = parse(schema, {"lr": "0.2", "steps": "3", "flip": "off", "extra": [1]}, where="cfg")
    assert as_dict(o) == {"lr": 0.2, "steps": (3,), "flip": False, "net": "r4", "extra": [1]}
    with pytest.raises(UsageError, match="lr='-1' is out of range"):
        parse(schema, {"lr": "-1"}, where="cfg")


# --------------------------------------------------------------------------- users of the layer


def test_fr_config_refuses_nan_and_absurd_values():
    from fsbench.train.config import resolve

    presets = {"tiny": {"lr": 0.1, "batch_size": 64, "input_size": 48, "seed": 0, "lr_steps": (6, 8), "flip": True}}
    cfg = resolve(presets, "tiny", {"flip": "false", "lr_steps": "3,4"}, where="fr")
    assert cfg["flip"] is False and cfg["lr_steps"] == (3, 4) and isinstance(cfg, dict)
    for key, value, message in (("lr", "nan", "must be a finite number"), ("lr", "inf", "must be a finite number"),
                                ("seed", "-1", "is out of range"), ("input_size", "100000", "is out of range"),
                                ("batch_size", "-1", "is out of range"), ("lr", "0", "is out of range")):
        with pytest.raises(UsageError, match=f"fr: {key}='{value}' {message}"):
            resolve(presets, "tiny", {key: value}, where="fr")


def test_strengths_ranges_keep_the_defaults():
    from fsbench.generators.procedural.make import with_strengths
    from fsbench.generators.procedural.params import DEFAULT_STRENGTHS, Strengths

    assert parse(Strengths, {}, where="p") == DEFAULT_STRENGTHS  # every default inside its range
    assert with_strengths(yaw_sd="5", jpeg_quality="40,90").jpeg_quality == (40, 90)
    for values, match in (({"yaw_sd": "nan"}, "yaw_sd='nan' must be a finite number"),
                          ({"smile_p": "1.5"}, r"smile_p='1.5' is out of range; expected float in \[0, 1\]"),
                          ({"jpeg_quality": "90,40"}, "jpeg_quality=90,40: low must not exceed high"),
                          ({"yaw_st": "1"}, "unknown nuisance strength.*did you mean yaw_sd")):
        with pytest.raises(UsageError, match=match):
            with_strengths(**values)


def test_metric_options_use_the_layer():
    from fsbench.plugins.metrics.distribution import KID
    from fsbench.plugins.metrics.identity import Leakage, SimilarityIoU
    from fsbench.plugins.metrics.verification import VerificationMetric

    assert SimilarityIoU(bins="50").opts["bins"] == 50
    with pytest.raises(UsageError, match=r"metric 'iou': unknown option\(s\) bin; did you mean bins\?"):
        SimilarityIoU(bin="50")
    with pytest.raises(UsageError, match=r"metric 'leakage': fmr='nan' must be a finite number"):
        Leakage(fmr="nan")
    with pytest.raises(UsageError, match="metric 'kid': subset_size='1' is out of range"):
        KID(subset_size="1")
    assert KID(seed="none").opts["seed"] is None and KID().options == {}  # given options only
    with pytest.raises(UsageError, match=r"metric 'verification': flip='maybe' is not a valid bool"):
        VerificationMetric(flip="maybe")
    assert [r["name"] for r in describe(Leakage.Options)] == ["fmr", "max_pairs", "block_mb"]


def _one_line_exit_2(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(n in lines[0] for n in needles), lines[0]


def test_cli_sample_procedural_refuses_nan_strength(cli, tmp_path: Path):
    out = tmp_path / "w"
    result = cli("sample", "procedural", "--out", out, "--ids", "2", "--per-id", "1", "-o", "yaw_sd=nan")
    _one_line_exit_2(result, "yaw_sd='nan' must be a finite number")
    assert not out.exists()


def test_cli_fr_train_refuses_nan_lr(cli, folder, tmp_path: Path):
    data = folder("train", ids=2, per_id=2, size=32)
    result = cli("fr", "train", "--data", data, "--run", tmp_path / "run", "--preset", "tiny", "-o", "lr=nan")
    _one_line_exit_2(result, "lr='nan' must be a finite number")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
