"""The per-run choice of synapse model, ``--synapses {ideal,device}`` (and ``--device-seed``), on
``mstpn compare``, ``mstpn run``, ``mstpn evaluate`` and ``mstpn energy``, driven in-process as a
user would.

* compare: NumPy and PyTorch with device pairs agree (logits to float rounding, the same pulses);
  results and --json record the synapse model and the device mapping block; a backend that does
  not run the device model is listed "not run"; naming only such backends is a one-line error;
* run: run.json records the synapse model and mapping; the energy table's measured row counts the
  pulses the game's device runner counted (checked again by replaying the game from the kept
  network and mapping);
* evaluate: device games on the NumPy and the PyTorch runner give the same scores and pulses;
* bad combinations (a network without a device block, --device-seed without device) exit 2 with
  one line, before any output folder is made.

Networks: a small m-STPN (H = 8, 3 actions) and an STPN of the same size, converted without
calibration; the runs are capped at a few agent steps.  The backend that runs only the ideal rule
is registered here (the registry decides which backends run which model).
"""
import dataclasses
import json

import pytest
import torch

from conversion import device_layer as dl
from conversion.convert import convert_policy
from conversion.nirfile import read_network, write_network
from mstpn import cli
from mstpn_base import registry
from snn_agent.checkpoint import build_policy, save_checkpoint
from snn_agent.config import RunConfig
from test_cli_bad_input import run  # noqa: E402  (the shared CLI helper)

torch.set_num_threads(1)
IDEAL_ONLY = "numpy-ideal-only"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: (checkpoint, converted network)} for a small m-STPN and a small STPN."""
    root = tmp_path_factory.mktemp("synapses")
    out = {}
    for kind in ("mstpn", "stpn"):
        cfg = RunConfig.from_dict({"model": {"kind": kind, "hidden": 8}, "env": {"action_set": "updown"}}).validate()
        policy = build_policy(cfg, seed=3)
        ckpt, net = root / f"{kind}.safetensors", root / f"{kind}.nir"
        save_checkpoint(ckpt, policy, cfg)
        write_network(net, convert_policy(policy, metadata={"env": dataclasses.asdict(cfg.env)}))
        out[kind] = (ckpt, net)
    return out


@pytest.fixture
def ideal_only():
    """A backend whose runner runs the ideal rule only (the NumPy reference, declared so)."""
    registry.register(registry.BackendSpec(IDEAL_ONLY, "NumPy reference, ideal rule only",
                                           runner="conversion.numpy_backend:make_runner", install="numpy"))
    yield IDEAL_ONLY
    registry.unregister(IDEAL_ONLY)


def one_line_error(capsys, *argv, match):
    rc, err = run(capsys, *argv)
    assert rc == 2, err
    assert len(err) == 1 and ": error: " in err[0] and match in err[0], err
    assert "Traceback" not in err[0]
    return err[0]


def file_block(net_path):
    net = read_network(net_path)
    return net.nodes["stpn"].device


# -- compare ------------------------------------------------------------------------------------------------
def test_compare_device_numpy_and_torch_agree_and_record_the_model(capsys, files, tmp_path):
    _, net = files["mstpn"]
    out = tmp_path / "cmp"
    rc, err = run(capsys, "compare", net, "--synapses", "device", "--backends", "numpy", "torch", "--frames", 6,
                  "--out", out)
    assert rc == 0, err
    rows = {r["backend"]: r for r in json.loads((out / "results.json").read_text())}
    assert set(rows) == {"torch", "numpy"}
    block = file_block(net)
    for r in rows.values():
        assert r["synapses"] == "device" and r["device_mapping"] == block and not r["error"]
        assert r["frames"] == 6 and r["agreement_torch"] == 1.0
    assert rows["numpy"]["logit_max_abs"] < 1e-9
    s_np, s_t = rows["numpy"]["device_stats"]["stpn"], rows["torch"]["device_stats"]["stpn"]
    assert s_np["pulses"] > 0 and s_np["device_steps"] == 6
    assert {k: s_np[k] for k in ("pulses", "potentiating", "depressing")} == \
        {k: s_t[k] for k in ("pulses", "potentiating", "depressing")}
    assert s_np["pulse_energy_J"] == pytest.approx(s_t["pulse_energy_J"], rel=1e-9)
    assert s_np["bias_energy_J"] == pytest.approx(s_t["bias_energy_J"], rel=1e-9)
    report = (out / "report.md").read_text()
    assert "Synapse model: device" in report and "Device pulses counted" in report


def test_compare_json_names_the_model_and_a_seed_changes_the_draws(capsys, files, tmp_path):
    _, net = files["mstpn"]
    assert cli.main(["compare", str(net), "--synapses", "device", "--device-seed", "5", "--backends", "numpy",
                     "--frames", "4", "--out", str(tmp_path / "c5"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["synapses"] == "device" and data["device_mapping"]["seed"] == 5
    assert dl.Mapping.from_block(data["device_mapping"]) == dl.Mapping.from_block(file_block(net)).replace(seed=5)
    seeded = {c["backend"]: c["device_stats"]["stpn"] for c in data["comparisons"]}
    assert cli.main(["compare", str(net), "--synapses", "device", "--backends", "numpy", "--frames", "4",
                     "--out", str(tmp_path / "c0"), "--json"]) == 0
    default = {c["backend"]: c["device_stats"]["stpn"] for c in json.loads(capsys.readouterr().out)["comparisons"]}
    assert seeded["numpy"]["bias_energy_J"] != default["numpy"]["bias_energy_J"]   # other device-to-device draws


def test_compare_ideal_is_recorded_as_ideal(capsys, files, tmp_path):
    _, net = files["mstpn"]
    assert run(capsys, "compare", net, "--backends", "numpy", "--frames", 3, "--out", tmp_path / "c")[0] == 0
    rows = json.loads((tmp_path / "c" / "results.json").read_text())
    assert all(r["synapses"] == "ideal" and r["device_mapping"] is None and not r["device_stats"] for r in rows)
    assert "Synapse model: ideal" in (tmp_path / "c" / "report.md").read_text()


def test_compare_device_lists_a_backend_that_does_not_run_it(capsys, files, tmp_path, ideal_only):
    _, net = files["mstpn"]
    out = tmp_path / "cmp"
    rc, err = run(capsys, "compare", net, "--synapses", "device", "--backends", "numpy", ideal_only, "--frames", 3,
                  "--out", out)
    assert rc == 0, err   # not run is not a failure
    rows = {r["backend"]: r for r in json.loads((out / "results.json").read_text())}
    assert rows[ideal_only]["error"].startswith("not run:") and "'device'" in rows[ideal_only]["error"]
    assert rows[ideal_only]["frames"] == 0 and rows["numpy"]["agreement_torch"] == 1.0
    assert f"| {ideal_only} |" in (out / "report.md").read_text()


def test_compare_device_bad_combinations_are_one_line_errors(capsys, files, tmp_path, ideal_only):
    mstpn_net, stpn_net = files["mstpn"][1], files["stpn"][1]
    out = tmp_path / "never"
    one_line_error(capsys, "compare", mstpn_net, "--synapses", "device", "--backends", ideal_only, "--out", out,
                   match=f"none of the backends {ideal_only} runs the 'device' synapse model")
    one_line_error(capsys, "compare", stpn_net, "--synapses", "device", "--backends", "numpy", "--out", out,
                   match="has no device block")
    one_line_error(capsys, "compare", mstpn_net, "--device-seed", 3, "--backends", "numpy", "--out", out,
                   match="--device-seed needs --synapses device")
    one_line_error(capsys, "compare", mstpn_net, "--synapses", "device", "--device-seed", -1, "--backends", "numpy",
                   "--out", out, match="--device-seed must be an integer")
    assert not out.exists()


# -- run ----------------------------------------------------------------------------------------------------
@pytest.fixture
def quick_conversion(monkeypatch):
    """The main job's conversion with a short calibration (the point here is the synapse model)."""
    from mstpn import run as run_mod

    real = run_mod.prepare_network
    monkeypatch.setattr(run_mod, "prepare_network", lambda policy, env_cfg, seed=0, log=print:
                        real(policy, env_cfg, seed=seed, calibration_frames=8, log=lambda *_: None))


def test_run_device_records_the_model_and_the_measured_pulses(capsys, files, tmp_path, quick_conversion,
                                                               ideal_only):
    from mstpn.run import play_event_driven
    from snn_agent.play import env_config

    ckpt, _ = files["mstpn"]
    out = tmp_path / "r"
    rc, err = run(capsys, "run", "--checkpoint", ckpt, "--out", out, "--synapses", "device", "--max-frames", 24,
                  "--compare-frames", 4, "--backends", "numpy", ideal_only, "--no-gif", "--no-progress",
                  "--seed", 2)
    assert rc == 0, err
    s = json.loads((out / "run.json").read_text())
    assert s["synapses"] == "device" and s["device_mapping"]["seed"] == 0
    stats = s["game"]["device_stats"]["stpn"]
    assert s["game"]["steps"] == 6 and stats["device_steps"] == 6 and stats["pulses"] > 0
    energy = json.loads((out / "energy" / "energy.json").read_text())
    measured = energy["measured"]["measured"]
    assert measured["pulses"] == stats["pulses"]
    assert measured["pulse_energy_J"] == stats["pulse_energy_J"] and measured["bias_energy_J"] == stats["bias_energy_J"]
    assert energy["measured"]["measured"]["per_step"]["pulses"] == stats["pulses"] / 6
    assert "memristive-measured" in energy["totals_j"]
    assert "measured, per game" in s["energy"]["table"] and s["energy"]["measured"] == energy["measured"]
    # the kept network, replayed with the recorded mapping, counts the same pulses
    net = read_network(out / "network.nir")
    game = play_event_driven(net, env_config(net), seed=2, max_frames=24, progress=False, synapses="device",
                             device=dl.Mapping.from_block(s["device_mapping"]))
    assert game["simulator"].device_stats["stpn"] == stats
    # comparison: with the device model on the runners that run it, the other one listed "not run"
    rows = {r["backend"]: r for r in s["comparison"]["rows"]}
    assert s["comparison"]["synapses"] == "device" and rows["numpy"]["device_stats"]["stpn"]["device_steps"] == 4
    assert rows[ideal_only]["error"].startswith("not run:")
    readme = (out / "README.md").read_text()
    assert "synapse model: device" in readme and "measured in the device run" in readme
    # the counts file of the run carries the measured block; `mstpn energy` and `mstpn report` show it
    capsys.readouterr()
    assert cli.main(["energy", str(out / "energy" / "counts.json"), "--synapses", "device"]) == 0
    assert "measured, per game" in capsys.readouterr().out
    (out / "README.md").unlink()
    assert run(capsys, "report", out)[0] == 0
    assert (out / "README.md").read_text() == readme


def test_run_device_bad_combinations_are_one_line_errors(capsys, files, tmp_path, ideal_only, monkeypatch):
    from mstpn import run as run_mod

    monkeypatch.setattr(run_mod, "prepare_network", lambda *a, **k: pytest.fail("converted before the check"))
    out = tmp_path / "never"
    one_line_error(capsys, "run", "--checkpoint", files["stpn"][0], "--out", out, "--synapses", "device",
                   "--no-progress", match="has no device block")
    one_line_error(capsys, "run", "--checkpoint", files["mstpn"][0], "--out", out, "--synapses", "device",
                   "--backends", ideal_only, "--no-progress", match="runs the 'device' synapse model")
    one_line_error(capsys, "run", "--checkpoint", files["mstpn"][0], "--out", out, "--device-seed", 1,
                   "--no-progress", match="--device-seed needs --synapses device")
    assert not out.exists()


# -- evaluate -----------------------------------------------------------------------------------------------
def test_evaluate_device_numpy_and_torch_play_the_same_games(capsys, files, tmp_path):
    ckpt, _ = files["mstpn"]
    results = {}
    for backend in ("numpy", "torch"):
        path = tmp_path / f"{backend}.json"
        rc, err = run(capsys, "evaluate", ckpt, "--synapses", "device", "--backend", backend, "--episodes", 2,
                      "--max-frames", 24, "--device-seed", 7, "--no-progress", "--out", path)
        assert rc == 0, err
        results[backend] = json.loads(path.read_text())
    a, b = results["numpy"], results["torch"]
    assert a["synapses"] == "device" and a["backend"] == "numpy" and a["device_mapping"]["seed"] == 7
    assert a["scores"] == b["scores"] and a["agent_steps"] == b["agent_steps"] == [6, 6]
    pulses = [g["stpn"]["pulses"] for g in a["games_device_stats"]]
    assert pulses == [g["stpn"]["pulses"] for g in b["games_device_stats"]] and min(pulses) > 0
    assert a["device_stats"]["stpn"]["pulses"] == sum(pulses)
    assert a["device_stats"]["stpn"]["device_steps"] == 12


def test_evaluate_device_bad_combinations_are_one_line_errors(capsys, files, tmp_path, ideal_only):
    out = tmp_path / "never" / "r.json"
    one_line_error(capsys, "evaluate", files["stpn"][0], "--synapses", "device", "--episodes", 1, "--out", out,
                   "--no-progress", match="has no device block")
    one_line_error(capsys, "evaluate", files["mstpn"][0], "--synapses", "device", "--backend", ideal_only,
                   "--episodes", 1, "--no-progress", match="does not play the 'device' synapse model")
    one_line_error(capsys, "evaluate", files["mstpn"][0], "--device-seed", 2, "--episodes", 1, "--no-progress",
                   match="--device-seed needs --synapses device")
    assert not out.exists()


# -- energy -------------------------------------------------------------------------------------------------
def test_energy_of_a_checkpoint_device_game_has_the_measured_row(capsys, files, tmp_path):
    ckpt, _ = files["mstpn"]
    rc, err = run(capsys, "energy", ckpt, "--synapses", "device", "--frames", 24, "-o", tmp_path / "e")
    assert rc == 0, err
    data = json.loads((tmp_path / "e" / "energy.json").read_text())
    m = data["measured"]
    assert data["counts"]["steps"] == 6 and data["counts"]["device"]["device_steps"] == 6
    assert m["measured"]["pulses"] == data["counts"]["device"]["pulses"] > 0
    assert m["assumed"]["pulses"] == 6 * data["counts"]["layers"][2]["plastic_synapses"]   # one per synapse per step
    assert m["measured_over_assumed"]["pulses"] == pytest.approx(m["measured"]["pulses"] / m["assumed"]["pulses"])
    one_line_error(capsys, "energy", files["stpn"][0], "--synapses", "device", "--frames", 24,
                   match="has no device block")
