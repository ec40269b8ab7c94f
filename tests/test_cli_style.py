"""One command-line style: help text and defaults on every option, ``-o/--out`` on every command
that writes files, lists as ``a b`` or ``a,b``, errors that name the next step, ``--json`` output,
and the main job keeping its converted network."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from memristor.params import DeviceParams
from mstpn import cli
from mstpn_base.cliargs import ListAction, add_list, split_list

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _walk(parser, path=("mstpn",)):
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


PARSERS = dict(_walk(cli.build_parser()))


def _options(parser):
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        if a.help == argparse.SUPPRESS:   # a deliberately hidden action
            continue
        yield a


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_has_help_and_shows_its_default(command):
    parser = PARSERS[command]
    fmt = parser._get_formatter()
    missing, no_default = [], []
    for a in _options(parser):
        name = "/".join(a.option_strings) or a.dest
        if not (a.help or "").strip():
            missing.append(name)
            continue
        text = fmt._expand_help(a)   # what --help prints for it (defaults added by the formatter)
        if a.option_strings and not a.required and "default" not in text.lower():
            no_default.append(name)
    assert not missing, f"{command}: options without help text: {missing}"
    assert not no_default, f"{command}: options whose help does not show the default: {no_default}"
    parser.format_help()   # every help string expands


#: every command that writes files, with the arguments it needs besides the output
WRITERS = {
    "mstpn device characterize": [],
    "mstpn device fit": ["data.csv"],
    "mstpn device params": [],
    "mstpn train": [],
    "mstpn evaluate": ["ckpt.safetensors"],
    "mstpn convert": ["random"],
    "mstpn compare": ["net.nir"],
    "mstpn energy": ["--published"],
    "mstpn run": [],
    "mstpn report": [],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
@pytest.mark.parametrize("flag", ["-o", "--out"])
def test_every_writing_command_takes_o_out(command, flag):
    argv = command.split()[1:] + WRITERS[command] + [flag, "target"]
    args = cli.build_parser().parse_args(argv)
    assert str(args.out) == "target"


def test_an_out_option_is_always_o_out_and_old_spellings_are_hidden():
    for command, parser in PARSERS.items():
        for a in parser._actions:
            if a.dest == "out" and a.option_strings:
                assert a.option_strings[:2] == ["-o", "--out"], command
    convert = PARSERS["mstpn convert"]
    assert str(convert.parse_args(["random", "--output", "n.nir"]).out) == "n.nir"   # documented older spelling
    text = convert.format_help()
    assert "-o NET, --out NET" in text and "--output" not in text
    with pytest.raises(SystemExit):   # still required
        convert.parse_args(["random"])


@pytest.mark.parametrize("command, flag, extra", [
    ("compare", "--backends", ["net.nir"]),
    ("run", "--backends", []),
    ("device characterize", "--protocols", []),
])
def test_lists_as_spaces_or_commas_are_the_same(command, flag, extra):
    p = cli.build_parser()
    dest = flag.lstrip("-")
    get = lambda *vals: getattr(p.parse_args(command.split() + extra + [flag, *vals]), dest)  # noqa: E731
    assert get("numpy,lava") == get("numpy", "lava") == get("numpy,", "lava") == ["numpy", "lava"]
    assert get("numpy,lava", "brian2") == get("numpy", "lava,brian2") == ["numpy", "lava", "brian2"]


def test_list_helper_checks_choices_per_item():
    ap = argparse.ArgumentParser()
    add_list(ap, "--b", help="backends", choices=("x", "y"))
    assert ap.parse_args(["--b", "x,y"]).b == ["x", "y"]
    with pytest.raises(SystemExit):
        ap.parse_args(["--b", "x,z"])
    assert split_list(["a, b", "", "c"]) == ["a", "b", "c"]
    assert isinstance(ap._actions[-1], ListAction)


def _error(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("argv", [
    ["device", "params", "--params", "{p}"],
    ["device", "characterize", "--params", "{p}", "-o", "{tmp}/ch"],
    ["energy", "--analytic", "--params", "{p}"],
    ["train", "--model", "mstpn", "--params", "{p}", "-o", "{tmp}/train", "--time-limit", "0"],
])
def test_missing_params_file_says_how_to_write_one(capsys, tmp_path, argv):
    p = tmp_path / "nope.json"
    line = _error(capsys, *[a.format(p=p, tmp=tmp_path) for a in argv])
    assert f"params file not found: {p} (write one with `mstpn device params --out {p}`)" in line
    assert "Errno" not in line


def test_compare_given_a_checkpoint_points_to_convert(capsys, tmp_path):
    from safetensors.numpy import save_file

    ckpt = tmp_path / "policy.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(ckpt))
    line = _error(capsys, "compare", ckpt, "-o", tmp_path / "c")
    assert f"{ckpt} is a policy checkpoint; convert it first: mstpn convert {ckpt} -o NET.nir" in line
    assert not (tmp_path / "c").exists()


def test_energy_source_hint_and_old_pong_spelling(capsys):
    line = _error(capsys, "energy")
    assert "--analytic" in line and "--published" in line
    assert cli.main(["energy", "--analytic", "--frames", "600", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert cli.main(["energy", "pong", "--frames", "600", "--json"]) == 0   # the older spelling
    assert json.loads(capsys.readouterr().out) == new
    assert new["schema"] == "mstpn.energy-report" and new["counts"]["frames"] == 600
    assert "--analytic takes no SOURCE" in _error(capsys, "energy", "--analytic", "x.json")


def test_train_params_file_sets_the_device_of_the_mstpn(capsys, tmp_path):
    from snn_agent.cli import build_config

    p = tmp_path / "dev.json"
    dev = DeviceParams(tau0=2.5)
    dev.save(p)
    args = cli.build_parser().parse_args(["train", "--model", "mstpn", "--params", str(p), "-o", str(tmp_path / "r")])
    cfg = build_config(args)
    assert DeviceParams.from_dict(cfg.model.device_params) == DeviceParams.load(p)
    assert DeviceParams.from_dict(cfg.model.device_params).tau0 == 2.5
    bad = tmp_path / "bad.json"
    d = dev.to_dict()
    d["parameters"]["tau0"]["value"] = -1.0
    bad.write_text(json.dumps(d))
    # (--time-limit 0 is refused after these checks: a test never trains)
    assert "tau0" in _error(capsys, "train", "--model", "mstpn", "--params", bad, "-o", tmp_path / "r2",
                            "--time-limit", "0")
    assert "--model mstpn" in _error(capsys, "train", "--model", "stpn", "--params", p, "-o", tmp_path / "r3",
                                     "--time-limit", "0")
    assert "--time-limit" in _error(capsys, "train", "--model", "mstpn", "--params", p, "-o", tmp_path / "r4",
                                    "--time-limit", "0")   # a valid file passes the checks
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_evaluate_json_flag_and_older_json_file_spelling(capsys, tmp_path):
    p = PARSERS["mstpn evaluate"]
    assert p.parse_args(["c.safetensors", "--json"]).json is True
    a = p.parse_args(["c.safetensors", "--json", "eval.json"])   # documented: write the result file
    assert a.json == "eval.json" and a.out is None
    line = _error(capsys, "evaluate", tmp_path / "c.safetensors", "--json", "a.json", "-o", "b.json")
    assert "--out FILE" in line


def test_json_output_parses(capsys, tmp_path):
    assert cli.main(["device", "params", "--json", "-o", str(tmp_path / "p.json")]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert {r["name"] for r in rows} == {r["name"] for r in DeviceParams.describe()}
    assert all({"value", "unit", "range", "source"} <= set(r) for r in rows)
    assert DeviceParams.load(tmp_path / "p.json") == DeviceParams()   # the file as without --json
    assert "wrote" in cap.err

    assert cli.main(["energy", "--published", "--json", "-o", str(tmp_path / "e")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "mstpn.energy-published" and data["ok"]
    assert json.loads((tmp_path / "e" / "energy_published.json").read_text()) == data

    assert cli.main(["device", "characterize", "--protocols", "ppf", "--json", "-o", str(tmp_path / "ch")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["protocols"]["ppf"][0]["ppf_index"] > 1
    assert (tmp_path / "ch" / "ppf_numpy_summary.csv").is_file()


def test_run_keeps_the_network_and_prints_json(tmp_path):
    from conversion.nirfile import read_network
    from snn_agent.checkpoint import build_policy, save_checkpoint
    from snn_agent.config import RunConfig

    ckpt = tmp_path / "random.safetensors"
    cfg = RunConfig().validate()
    save_checkpoint(ckpt, build_policy(cfg, seed=3), cfg)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "mstpn.cli", "run", "--checkpoint", str(ckpt), "-o", str(out),
                        "--max-frames", "120", "--compare-frames", "20", "--backends", "numpy", "numpy-fixed",
                        "--seed", "5", "--no-progress", "--no-gif", "--json"],
                       capture_output=True, text=True, timeout=300, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)   # stdout holds the JSON only
    assert summary == json.loads((out / "run.json").read_text())
    assert [row["backend"] for row in summary["comparison"]["rows"]] == ["numpy", "numpy-fixed"]
    assert summary["network"]["file"] == "network.nir"
    net = read_network(out / "network.nir")
    assert len(net.nodes) == summary["network"]["nodes"] and net.fixed
    assert "network.nir" in (out / "README.md").read_text()
