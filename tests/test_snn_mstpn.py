"""m-STPN: device-derived bounds always hold (lambda, gamma, W, F), quantisation + STE, noise, mapping."""
import math

import numpy as np
import pytest
import torch

from memristor.params import DeviceParams
from snn_agent.device_constrained import DEFAULT_DT, MSTPN, DeviceMapping
from snn_agent.stpn import STPNState

torch.set_num_threads(1)


def test_mapping_numbers_from_device_params():
    p = DeviceParams()
    m = DeviceMapping(p, dt=1 / 15, w_max=1.0)
    assert DEFAULT_DT == pytest.approx(1 / 15)
    lo, hi = p.lambda_range(1 / 15)
    assert (m.lam_min, m.lam_max) == (lo, hi)
    # tau in [1, 10] s at the default bias range -> lambda = exp(-dt/tau)
    assert m.lam_min == pytest.approx(math.exp(-1 / 15 / float(p.tau(p.v_bias_max))))
    assert m.g_unit == pytest.approx((p.g_max - p.g_min) / 1.0)
    assert m.f_max == pytest.approx(p.g_st_max / m.g_unit)
    assert m.gamma_max == pytest.approx(p.a_st * m.s_pulse * m.f_max)
    assert m.w_step == pytest.approx(1.0 / (p.n_levels - 1))


def _layer(**kw):
    torch.manual_seed(0)
    return MSTPN(6, 4, **kw).double()


def test_constrained_params_stay_in_range_for_any_raw_value():
    layer = _layer()
    m = layer.mapping
    with torch.no_grad():
        for raw in (layer.lam_raw, layer.gamma_raw, layer.w_raw):
            raw.copy_(torch.linspace(-1e3, 1e3, raw.numel(), dtype=raw.dtype).view_as(raw))
    lam, gam, W = layer.lam, layer.gamma, layer.W
    assert lam.min() >= m.lam_min and lam.max() <= m.lam_max
    assert lam.max() - lam.min() > 0.99 * (m.lam_max - m.lam_min)   # the range is reachable
    assert gam.abs().max() <= m.gamma_max
    assert W.abs().max() <= m.w_max + 1e-12
    # W on the differential-pair level grid
    k = W.detach() / m.w_step
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-9)


def test_lambda_stays_in_range_during_training():
    layer = _layer()
    opt = torch.optim.SGD(layer.parameters(), lr=100.0)
    x = torch.randn(3, 6, dtype=torch.float64)
    for _ in range(5):
        st = None
        loss = 0
        for _ in range(3):
            h, st, _ = layer(x, st)
            loss = loss + h.sum() + st.F.sum()
        opt.zero_grad()
        (-loss).backward()
        opt.step()
        assert layer.lam.min() >= layer.mapping.lam_min and layer.lam.max() <= layer.mapping.lam_max
        assert layer.gamma.abs().max() <= layer.mapping.gamma_max


def test_F_bounded_by_volatile_conductance_range():
    layer = _layer(noise=False)
    m = layer.mapping
    with torch.no_grad():
        layer.gamma_raw.fill_(1e3)          # gamma at its maximum
    x = 50.0 * torch.ones(2, 6, dtype=torch.float64)   # large inputs drive the Hebbian term hard
    st = layer.init_state(2)
    for _ in range(50):
        _, st, _ = layer(x, st)
        assert st.F.abs().max() <= m.f_max + 1e-12
    assert st.F.abs().max().item() == pytest.approx(m.f_max)   # saturated, i.e. the clip is active


def test_quantisation_on_the_device_levels_straight_through_gradient():
    """W goes through the pair's conductances and the device quantiser: a grid of step
    w_max / (n_levels - 1) in weight units (51 levels, w_max 1: step 0.02), rounding half up in
    each device (so half away from zero for W), identity gradient."""
    m = DeviceMapping(DeviceParams(n_levels=51), w_max=1.0)
    w = torch.tensor([0.011, -0.024, 0.5, -0.03, 0.0], dtype=torch.float64, requires_grad=True)
    q = m.quantised(w)
    torch.testing.assert_close(q.detach(), torch.tensor([0.02, -0.02, 0.5, -0.04, 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-12)
    (q * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(w.grad[:4], torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))


def test_noise_only_while_training():
    layer = _layer(noise=True)
    x = torch.randn(2, 6, dtype=torch.float64)
    st0 = STPNState(torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 4, 10, dtype=torch.float64))
    layer.eval()
    _, a, _ = layer(x, st0)
    _, b, _ = layer(x, st0)
    assert torch.equal(a.F, b.F)
    layer.train()
    _, c, _ = layer(x, st0)
    assert not torch.allclose(c.F, a.F)
    rel = ((c.F - a.F).abs() / a.F.abs().clamp_min(1e-30))[a.F.abs() > 0]
    assert rel.max() < 10 * layer.mapping.params.c2c_sigma       # multiplicative, c2c-sized
    # one factor per synapse and step, shared by the batch (x is the same for both games here)
    x2 = x[:1].expand(2, -1)
    _, d, _ = layer(x2, st0)
    assert torch.equal(d.F[0], d.F[1])


def test_hardware_view_conductances_and_biases():
    layer = _layer()
    p, m = layer.mapping.params, layer.mapping
    g = layer.conductances()
    for k in ("g_plus", "g_minus"):
        assert g[k].min() >= p.g_min - 1e-20 and g[k].max() <= p.g_max + 1e-20
    np.testing.assert_allclose((g["g_plus"] - g["g_minus"]) / m.g_unit, layer.W.detach().numpy(), atol=1e-12)
    v = layer.bias_voltages()
    assert v.min() >= p.v_bias_min - 1e-9 and v.max() <= p.v_bias_max + 1e-9
    lam_back = np.exp(-m.dt / p.tau(np.clip(v, p.v_bias_min, p.v_bias_max)))
    np.testing.assert_allclose(lam_back, layer.lam.detach().numpy(), rtol=1e-9)


def test_other_step_duration_changes_lambda_range():
    fast = DeviceMapping(DeviceParams(), dt=1 / 60)
    slow = DeviceMapping(DeviceParams(), dt=1 / 15)
    assert fast.lam_min > slow.lam_min and fast.lam_max > slow.lam_max


def test_effective_params_cached_within_a_sequence_and_refreshed_after_each_change():
    """The constrained W, lam, gamma are computed once per sequence and reused by its steps; an
    optimiser step, a load, a second backward without a step, a grad-mode switch and a deep copy
    all see correct values (each compared with a freshly built layer of the same raw values)."""
    import copy

    layer = _layer(noise=False).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)

    def fresh_loss():
        ref = copy.deepcopy(layer)
        ref.__dict__.pop("_param_cache", None)
        h, st, _ = ref(x)
        h, st, _ = ref(x, st)
        return h.sum() + st.F.sum()

    for _ in range(3):
        h, st, _ = layer(x)
        assert layer.effective_params()["W"] is layer.effective_params()["W"]   # reused, not recomputed
        h, st, _ = layer(x, st)
        loss = h.sum() + st.F.sum()
        assert loss.item() == fresh_loss().item()
        opt.zero_grad()
        loss.backward()
        h, st, _ = layer(x)                     # a second forward/backward before the step
        (h.sum() + layer(x, st)[1].F.sum()).backward()
        opt.step()                              # changes every raw parameter
    with torch.no_grad():
        w_nograd = layer.effective_params()["W"]
    assert w_nograd.grad_fn is None and layer.effective_params()["W"].grad_fn is not None
    copy.deepcopy(layer)                        # the cached graph tensors are not copied
    state = {k: v + 0.01 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    h, st, _ = layer(x)
    h, st, _ = layer(x, st)
    assert (h.sum() + st.F.sum()).item() == fresh_loss().item()
