"""Counting: dense STPN analytics, the game's time base, event-driven sparsity, the counts file."""
import json
import math

import pytest

from mstpn.energy import constants as C
from mstpn.energy.counts import (LayerCounts, RunCounts, event_layer_counts, frames_for_steps,
                                 pong_policy_counts, published_game_counts, stpn_layer_counts,
                                 stpn_synapses, steps_for_frames)
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError


def test_pong_stpn_has_169984_synapses():
    assert stpn_synapses(2592, 64) == 64 * (2592 + 64) == 169_984 == C.PONG_SYNAPSES.value


def test_dense_stpn_counts_one_pulse_per_synapse_per_step():
    layer = stpn_layer_counts(2592, 64, steps=10)
    assert layer.dense_macs == layer.synaptic_ops == 10 * 169_984
    assert layer.update_pulses == 10 * 169_984          # every plastic synapse, every step
    assert layer.neuron_updates == 10 * 64
    assert layer.events == 10 * (2592 + 64)
    assert layer.memristive and layer.plastic_synapses == layer.n_synapses


def test_game_time_base_60hz_frameskip_4():
    assert frames_for_steps(730) == 2920
    assert steps_for_frames(2920) == 730 and steps_for_frames(2922) == 731  # last step cut short
    run = published_game_counts()
    assert (run.steps, run.frames) == (730, 2920)
    assert run.duration_s == pytest.approx(2920 / 60.0, rel=1e-15)
    # the game length the published bias figure implies: 35.6 mJ / (4.3 nW x 169,984) = 48.7 s
    assert C.PUB_GAME_SECONDS.value == pytest.approx(48.705, abs=1e-3)
    assert abs(run.duration_s - C.PUB_GAME_SECONDS.value) / C.PUB_GAME_SECONDS.value < 1e-3


def test_pong_policy_layers_and_macs():
    run = pong_policy_counts(steps=1)
    macs = {l.name: l.dense_macs for l in run.layers}
    assert macs == {"conv1": 16 * 20 * 20 * 8 * 8, "conv2": 32 * 9 * 9 * 16 * 4 * 4, "stpn": 169_984,
                    "policy_head": 64 * 6, "value_head": 64}
    assert [l.name for l in run.layers if l.memristive] == ["stpn"]


def test_event_driven_sparsity_reduces_synaptic_ops():
    steps, n_in, h = 100, 2592 + 64, 64
    dense = stpn_layer_counts(2592, 64, steps)
    sparse = event_layer_counts("stpn", 169_984, fan_out=h, events=n_in * steps // 10, steps=steps,
                                n_neurons=h, update_pulses=dense.update_pulses // 10,
                                plastic_synapses=169_984, memristive=True)
    assert sparse.synaptic_ops == dense.synaptic_ops // 10
    assert sparse.dense_macs == dense.dense_macs           # dense equivalent kept for comparison
    assert sparse.neuron_updates == dense.neuron_updates   # every neuron every step by default


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, 1.5, True, "3"])
def test_bad_counts_fail_clearly(bad):
    with pytest.raises(ParameterError, match="events"):
        LayerCounts("stpn", n_synapses=10, events=bad)
    assert issubclass(ParameterError, MstpnError)


def test_inconsistent_runs_fail():
    layer = LayerCounts("a", 10)
    with pytest.raises(ParameterError, match="do not fit"):
        RunCounts((layer,), steps=1, frames=5)
    with pytest.raises(ParameterError, match="unique"):
        RunCounts((layer, layer), steps=1, frames=4)
    with pytest.raises(ParameterError, match="frame_rate_hz"):
        RunCounts((layer,), steps=1, frames=4, frame_rate_hz=0)
    with pytest.raises(ParameterError, match="exceeds"):
        LayerCounts("a", 10, plastic_synapses=11)
    with pytest.raises(ParameterError, match="no layer"):
        RunCounts((layer,), steps=1, frames=4).layer("b")


def test_counts_file_round_trip(tmp_path):
    run = pong_policy_counts(steps=7, frames=26)
    run.save(tmp_path / "c.json")
    back = RunCounts.load(tmp_path / "c.json")
    assert back == run and back.duration_s == pytest.approx(26 / 60)


def test_counts_file_errors(tmp_path):
    with pytest.raises(DataFormatError, match="no such counts file"):
        RunCounts.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        RunCounts.load(tmp_path / "bad.json")
    d = pong_policy_counts(steps=1).to_dict()
    with pytest.raises(DataFormatError, match="schema"):
        RunCounts.from_dict(dict(d, schema="other"))
    d2 = json.loads(json.dumps(d))
    d2["layers"][0]["warp"] = 1
    with pytest.raises(DataFormatError, match="unknown keys"):
        RunCounts.from_dict(d2)
    d3 = json.loads(json.dumps(d))
    d3["layers"][0]["events"] = -5
    with pytest.raises(ParameterError, match="events must be >= 0"):
        RunCounts.from_dict(d3)
    with pytest.raises(DataFormatError, match="'frames'"):
        RunCounts.from_dict({k: v for k, v in d.items() if k != "frames"})
