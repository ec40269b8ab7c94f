"""Energy models and the published-table reproduction."""
import math
from pathlib import Path

import pytest

from memristor.params import DeviceParams
from mstpn.energy import constants as C
from mstpn.energy import models as M
from mstpn.energy.counts import LayerCounts, RunCounts, published_game_counts
from mstpn.energy.report import (A100, DIGITAL, H200, LOIHI, MEMRISTIVE, PUBLISHED_RTOL, energy_report,
                                 published_reproduction)
from mstpn_base.errors import ParameterError

P = DeviceParams()


def test_idle_power_4p3_nw_for_one_second_is_4p3_nj():
    assert M.bias_power(P, 0.6, 0.0) == pytest.approx(4.3e-9, rel=1e-12)
    one = LayerCounts("s", n_synapses=1, memristive=True)
    e = M.memristive_layer_energy(one, 1.0, P)
    assert e["bias"] == pytest.approx(4.3e-9, rel=1e-12)           # W x s = J
    assert e["bias"] * 1e3 == pytest.approx(4.3e-6, rel=1e-12)     # in mJ
    assert e["pulse"] == 0.0


def test_bias_includes_v2g_when_g_is_given():
    g = 5e-9
    assert M.bias_power(P, 0.6, g) == pytest.approx(0.36 * g + 4.3e-9, rel=1e-12)
    assert M.bias_power(P, 0.3, 0.0) == pytest.approx(4.3e-9 / 4, rel=1e-12)  # ohmic leak ~ V^2


def test_pulse_energy_v2_g_t():
    assert M.pulse_energy(1.0, 7.55e-9, 427e-6) == pytest.approx(3.22385e-12, rel=1e-5)
    assert M.pulse_energy(2.0, 1e-9, 1e-3) == pytest.approx(4e-12, rel=1e-12)


def test_reference_conductance_is_mid_range_lt_plus_half_st():
    assert M.reference_conductance(P) == pytest.approx(0.5 * (0.1e-9 + 10e-9) + 2.5e-9, rel=1e-12)
    assert M.mean_conductance([1e-9, 3e-9], [1e-9, 1e-9]) == pytest.approx(3e-9)
    with pytest.raises(ParameterError):
        M.mean_conductance([math.nan])


def test_t_pulse_is_fitted_to_the_published_pulse_energy():
    """t_p = 0.4 mJ / (730 steps x 169,984 pulses x V_p^2 x G_ref), rounded to 3 digits."""
    fit = C.PUB_PULSE_J.value / (730 * 169_984 * P.v_pulse**2 * M.reference_conductance(P))
    assert P.t_pulse == pytest.approx(fit, rel=1e-3)
    assert P.source("t_pulse") == "fitted-to-published-figure"


def test_published_table_reproduced_within_2_percent():
    rep = published_reproduction()
    assert rep.ok, rep.format_table()
    assert rep.row("memristive bias (G = 0, 0.6 V)").model == pytest.approx(35.6, rel=PUBLISHED_RTOL)
    assert rep.row("memristive update pulses").model == pytest.approx(0.4, rel=PUBLISHED_RTOL)
    assert rep.row("memristive total").model == pytest.approx(36.0, rel=PUBLISHED_RTOL)
    assert rep.row("ratio A100 fp16 optimal / memristive").model == pytest.approx(96, rel=PUBLISHED_RTOL)
    assert rep.row("ratio A100 fp16 standard / memristive").model == pytest.approx(966, rel=PUBLISHED_RTOL)
    # the bias energy with V_b^2 G counted is larger, by exactly 0.36 V^2 x G_ref x N x T
    key = next(k for k in rep.extra if k.startswith("bias energy with"))
    n_t = 169_984 * 2920 / 60
    assert rep.extra[key][0] == pytest.approx((4.3e-9 + 0.36 * 7.55e-9) * n_t * 1e3, rel=1e-9)


def test_reproduction_detects_a_wrong_device():
    """A 10x pulse width cannot pass: the check has teeth."""
    rep = published_reproduction(P.replace(t_pulse=P.t_pulse * 10))
    assert not rep.row("memristive update pulses").ok and not rep.ok


def _quiet_run(steps=730):
    layer = LayerCounts("stpn", n_synapses=169_984, plastic_synapses=169_984, memristive=True)
    return RunCounts((layer,), steps=steps, frames=4 * steps)


def test_zero_activity_gives_only_idle_bias_energy():
    rep = energy_report(_quiet_run())
    assert rep.component(MEMRISTIVE, "pulse") == 0.0
    assert rep.total(MEMRISTIVE) == rep.component(MEMRISTIVE, "bias") == pytest.approx(
        4.3e-9 * 169_984 * 2920 / 60, rel=1e-12)
    assert rep.total(LOIHI) == 0.0 and rep.total(DIGITAL) == 0.0
    assert rep.component(H200["eager"], "dynamic") == pytest.approx(730 * 1.16e-3, rel=1e-12)


def test_more_events_more_loihi_energy():
    def loihi(events):
        layer = LayerCounts("l", n_synapses=1000, synaptic_ops=events * 10, events=events, neuron_updates=50)
        return sum(M.loihi_layer_energy(layer).values())

    e = [loihi(n) for n in (0, 10, 100, 1000)]
    assert e == sorted(e) and len(set(e)) == 4
    assert e[1] - e[0] == pytest.approx(10 * 10 * 23.6e-12 + 10 * 3.5e-12, rel=1e-12)


def test_loihi_and_digital_unit_costs():
    layer = LayerCounts("l", n_synapses=1, plastic_synapses=1, dense_macs=1, synaptic_ops=1, events=1,
                        update_pulses=1, neuron_updates=1)
    lo = M.loihi_layer_energy(layer)
    assert lo["synaptic_ops"] == pytest.approx(23.6e-12) and lo["transport"] == pytest.approx(3.5e-12)
    assert lo["neuron_updates"] == pytest.approx(81e-12) and lo["plasticity"] == pytest.approx(21.2e-12)
    assert M.digital_layer_energy(layer)["macs"] == pytest.approx(4.6e-12)
    assert M.event_accumulate_energy(layer)["accumulate"] == pytest.approx(0.1e-12)


def test_gpu_scaling_linear_in_steps_and_synapses():
    assert M.gpu_a100_energy(169_984, 730, "fp16-optimal") == pytest.approx(3.4639, rel=1e-12)
    assert M.gpu_a100_energy(169_984, 365, "fp16-standard") == pytest.approx(34.7805 / 2, rel=1e-12)
    assert M.gpu_a100_energy(2 * 169_984, 730, "fp32-optimal") == pytest.approx(2 * 6.292, rel=1e-12)
    with pytest.raises(ParameterError, match="unknown A100 variant"):
        M.gpu_a100_energy(1, 1, "fp8")
    e = M.gpu_step_energy(169_984, 1000, M.H200_FIGURES["cudagraph"])
    assert e["dynamic"] == pytest.approx(1.24) and e["dynamic"] + e["idle"] == pytest.approx(5.0)


def test_differential_pair_doubles_bias():
    run = published_game_counts()
    one = energy_report(run).component(MEMRISTIVE, "bias")
    two = energy_report(run, settings=M.MemristiveSettings(devices_per_synapse=2)).component(MEMRISTIVE, "bias")
    assert two == pytest.approx(2 * one, rel=1e-12)


@pytest.mark.parametrize("kw, match", [(dict(g_bias=math.nan), "g_bias"), (dict(g_bias=-1e-9), "g_bias"),
                                       (dict(v_bias=0.9), "bias range"), (dict(devices_per_synapse=3), "devices"),
                                       (dict(t_pulse=math.inf), "t_pulse")])
def test_bad_settings_fail_clearly(kw, match):
    with pytest.raises(ParameterError, match=match):
        energy_report(published_game_counts(), settings=M.MemristiveSettings(**kw))


def test_unknown_backend_component_scope_fail_clearly():
    rep = energy_report(published_game_counts())
    with pytest.raises(ParameterError, match="unknown backend"):
        rep.total("warp-drive")
    with pytest.raises(ParameterError, match="unknown component"):
        rep.component(MEMRISTIVE, "flux")
    with pytest.raises(ParameterError, match="unknown scope"):
        rep.total(MEMRISTIVE, "galaxy")
    with pytest.raises(ParameterError, match="RunCounts"):
        energy_report({"steps": 1})


def test_scope_excludes_non_memristive_layers_from_ratios():
    from mstpn.energy.counts import pong_policy_counts

    rep = energy_report(pong_policy_counts(730))
    assert rep.total(LOIHI, "network") > rep.total(LOIHI, "synaptic") > 0
    assert rep.total(A100["fp16-optimal"]) == rep.total(A100["fp16-optimal"], "network")
    assert rep.ratios()[A100["fp16-optimal"]] == pytest.approx(3463.9 / rep.total(MEMRISTIVE) * 1e-3)


def test_every_constant_has_a_source_and_is_documented():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "energy.md").read_text(encoding="utf-8")
    for name, c in C.CONSTANTS.items():
        assert c.tag in C.TAGS and len(c.source) > 10 and c.unit, name
        assert f"`{name}`" in doc, f"{name} missing from docs/energy.md"
        assert math.isfinite(c.value) and c.value > 0, name
