"""The memristive layer measured in a device run (mstpn.energy.counts.DeviceCounts, the
``memristive-measured`` rows of the energy report) beside the assumption-based row.

* a device run of the reference simulator fills the block with exactly the simulator's counters;
* with no plasticity (gamma = 0) no pulse is sent and the counted bias energy equals
  sum over devices of V_b^2 (g_lt + g_leak) x duration, computed here from the built devices;
* the report's measured rows, per-step figures and measured / assumed ratios follow from the block;
* a counts file round-trips the block; bad values are a DataFormatError naming the field.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from conversion import device_layer as dl
from conversion.convert import convert_policy
from conversion.simulator import DEVICE_COUNTERS, Simulator
from conversion.synthetic import pong_like_frames
from mstpn.energy.counts import DEVICE_COUNTS, DeviceCounts, LayerCounts, RunCounts
from mstpn.energy.report import MEASURED, MEMRISTIVE, energy_report
from mstpn.run import counts_from_simulator
from mstpn_base.errors import DataFormatError, ParameterError
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

torch.set_num_threads(1)
FRAMES = pong_like_frames(12, seed=2)[:, None]


def small_mstpn():
    return convert_policy(build_policy(ModelConfig(kind="mstpn", hidden=8, n_actions=3), seed=3).double())


@pytest.fixture(scope="module")
def net():
    return small_mstpn()


def device_run(net, frames=FRAMES):
    sim = Simulator(net, synapses="device")
    for f in frames:
        sim.step(f)
    return sim


def test_the_counters_are_the_simulators():
    assert DEVICE_COUNTS == DEVICE_COUNTERS


def test_counts_of_a_device_run_carry_the_simulators_counters(net):
    sim = device_run(net)
    counts = counts_from_simulator(sim, len(FRAMES), 4 * len(FRAMES))
    d = counts.device
    assert d is not None and d.layer == "stpn" and d.backend == "numpy"
    assert d.seed == dl.Mapping.from_block(net.nodes["stpn"].device).seed
    assert {k: getattr(d, k) for k in DEVICE_COUNTERS} == sim.device_stats["stpn"]
    assert d.pulses > 0 and d.pulse_energy_J > 0 and d.bias_energy_J > 0
    # the assumption-based row prices the Hebbian increments, as in an ideal run
    assert counts.layer("stpn").update_pulses == sim.stats["stpn"]["hebbian"]
    ideal = Simulator(net)
    for f in FRAMES:
        ideal.step(f)
    assert counts_from_simulator(ideal, len(FRAMES), 4 * len(FRAMES)).device is None


def test_without_plasticity_no_pulse_and_the_bias_is_the_devices_idle_power():
    still = small_mstpn()
    still.nodes["stpn"].gamma = np.zeros_like(still.nodes["stpn"].gamma)
    sim = device_run(still)
    st = sim.device_stats["stpn"]
    assert st["pulses"] == 0 and st["pulse_energy_J"] == 0
    devs, m = sim.devices["stpn"], sim.devices["stpn"].mapping
    g_leak = m.params.g_leak
    power = sum(float(np.sum(devs.v_bias ** 2 * (devs.sides[side]["g_lt"] + g_leak))) for side in dl.SIDES)
    assert st["bias_energy_J"] == pytest.approx(power * len(FRAMES) * m.dt, rel=1e-12)
    assert st["duration_s"] == pytest.approx(len(FRAMES) * m.dt, rel=1e-12)


def _counts(steps=10, pulses=(300, 100), update_pulses=5000, n_syn=2000):
    layer = LayerCounts("stpn", n_synapses=n_syn, plastic_synapses=n_syn, update_pulses=update_pulses,
                        memristive=True)
    dev = DeviceCounts("stpn", pulses=sum(pulses), potentiating=pulses[0], depressing=pulses[1],
                       pulse_energy_J=2e-9, bias_energy_J=3e-6, device_steps=steps, duration_s=steps / 15,
                       seed=4, backend="numpy")
    return RunCounts((layer, LayerCounts("pi", n_synapses=24)), steps=steps, frames=4 * steps, device=dev)


def test_report_has_the_measured_row_beside_the_assumption_with_their_ratio():
    counts = _counts()
    rep = energy_report(counts)
    assert rep.component(MEASURED, "pulse") == 2e-9 and rep.component(MEASURED, "bias") == 3e-6
    m = rep.measured_summary()
    assumed_pulse, assumed_bias = rep.component(MEMRISTIVE, "pulse"), rep.component(MEMRISTIVE, "bias")
    assert m["assumed"]["pulses"] == 5000 and m["measured"]["pulses"] == 400
    assert m["measured"]["per_step"]["pulses"] == 40.0
    assert m["measured"]["per_step"]["energy_J"] == pytest.approx((2e-9 + 3e-6) / 10)
    assert m["assumed"]["per_step"]["pulse_energy_J"] == pytest.approx(assumed_pulse / 10)
    assert m["measured_over_assumed"]["pulses"] == pytest.approx(400 / 5000)
    assert m["measured_over_assumed"]["energy_J"] == pytest.approx((2e-9 + 3e-6) / (assumed_pulse + assumed_bias))
    assert rep.ratios()[MEASURED] == pytest.approx(m["measured_over_assumed"]["energy_J"])
    assert m["measured"]["energy_per_pulse_J"] == pytest.approx(2e-9 / 400)
    table = rep.format_table()
    for text in ("memristive-measured", "measured, per game", "assumed, per step", "measured / assumed",
                 "not fitted to a device beyond what memristor.fit does"):
        assert text in table
    data = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert data["measured"]["measured"]["pulses"] == 400
    assert energy_report(dataclasses.replace(counts, device=None)).measured_summary() is None


def test_counts_file_round_trips_the_device_block(tmp_path):
    counts = _counts()
    counts.save(tmp_path / "c.json")
    back = RunCounts.load(tmp_path / "c.json")
    assert back == counts and back.device.seed == 4
    plain = dataclasses.replace(counts, device=None)
    plain.save(tmp_path / "p.json")
    assert "device" not in json.loads((tmp_path / "p.json").read_text())
    assert RunCounts.load(tmp_path / "p.json").device is None


@pytest.mark.parametrize("field, value, match", [
    ("pulses", -1, "device.pulses"),
    ("pulses", 401, "device.pulses"),                        # != potentiating + depressing
    ("potentiating", 2.5, "device.potentiating"),
    ("depressing", "7", "device.depressing"),
    ("pulse_energy_J", -1e-9, "device.pulse_energy_J"),
    ("bias_energy_J", "x", "device.bias_energy_J"),
    ("bias_energy_J", 10**400, "device.bias_energy_J"),
    ("duration_s", None, "device.duration_s"),
    ("device_steps", 9, "device.device_steps"),              # not the run's steps
    ("layer", "pi", "device.layer"),                         # not a memristive layer
    ("layer", "nope", "device.layer"),
    ("devices_per_synapse", 3, "device.devices_per_synapse"),
    ("seed", -1, "device.seed"),
    ("backend", 5, "device.backend"),
    ("extra", 1, "unknown keys in device"),
])
def test_bad_device_block_is_a_data_format_error_naming_the_field(tmp_path, field, value, match):
    doc = _counts().to_dict()
    doc["device"][field] = value
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=match.replace(".", r"\.")):
        RunCounts.load(tmp_path / "c.json")


def test_missing_device_field_and_too_many_pulses(tmp_path):
    doc = _counts().to_dict()
    del doc["device"]["bias_energy_J"]
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(DataFormatError, match=r"device\.bias_energy_J is missing"):
        RunCounts.load(tmp_path / "c.json")
    with pytest.raises(ParameterError, match="one pulse per device per step"):
        _counts(steps=1, pulses=(4000, 1), n_syn=2000)   # 2 devices x 2000 synapses x 1 step = 4000
    assert math.isclose(_counts().device.energy_J, 2e-9 + 3e-6)


def test_energy_cli_reads_the_measured_block_and_refuses_device_without_one(tmp_path, capsys):
    from mstpn import cli

    _counts().save(tmp_path / "c.json")
    assert cli.main(["energy", str(tmp_path / "c.json"), "--synapses", "device", "-o", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "measured, per game" in out
    assert json.loads((tmp_path / "e" / "energy.json").read_text())["measured"]["measured"]["pulses"] == 400
    dataclasses.replace(_counts(), device=None).save(tmp_path / "p.json")
    for argv, match in ((["energy", str(tmp_path / "p.json"), "--synapses", "device"], "no measured device block"),
                        (["energy", "--analytic", "--synapses", "device"], "has no device run"),
                        (["energy", "--published", "--synapses", "device"], "has no device run"),
                        (["energy", str(tmp_path / "c.json"), "--synapses", "device", "--device-seed", "3"],
                         "carries its own device run"),
                        (["energy", "--analytic", "--device-seed", "3"], "--device-seed needs --synapses device")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err
