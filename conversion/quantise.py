"""Choose the fixed-point formats of a sigma-delta network from a calibration and store them in
``net.fixed`` (node -> {name: int or int64 array}); the integer semantics are those of
:mod:`conversion.fixed_point` and :mod:`conversion.simulator` (``fixed=True``).

Rules (``hr`` = headroom factor over the calibrated maxima, default 4 = 2 bits; 1.5 for the
"lava" sigma-delta rule, :data:`RULE_HEADROOM`):

* weights: 8-bit mantissa, the smallest per-layer exponent that fits (:func:`quantise_weights`).
  A ``Scale`` node is folded into the next synapse (weights x scale; the scale must be uniform), so
  the input layer sends raw pixel integers (exponent 0).
* synapse accumulator u (Conv2d/Affine): exact integer sum of mantissa x payload, LSB
  2**(w_exp + in_exp); bias rounded to that LSB; budget 24 bits.
* SigmaDelta output exponent e (y = Y 2**e): the finest e >= FINEST_EXP such that hr x max|y| and
  hr x max|u| of every receiving Conv2d/Affine fit 24 bits.  y = act(rshift_round(u, e - in_exp)).
* plastic layer: z = [x ; h] in the finer of the two exponents (z_exp; the coarser part is shifted
  left, exactly); the pre-activation a has LSB 2**z_exp (hr x max|a| must fit 24 bits, which may
  coarsen x and h); F has LSB 2**f_exp, the finest with hr x max|F| in 24 bits and
  K (127 * 2**(w_exp - f_exp) + 2**23)**2 <= 2**62 (row sum of G**2 in a 64-bit register);
  gamma 8-bit mantissa + exponent; lambda Q12 (= 12-bit decay for lambda in [0, 1]); f_max rounded down to the F LSB.
* thresholds: floor(threshold / 2**e) per unit (an event needs |y - y_sent| > that integer).

Sigma-delta rule (``sd_rule``; stored per SigmaDelta entry as ``rule`` and in ``_spec`` as
``sd_rule``, codes ``conversion.fixed_point.SD_RULE_CODE``; version 2):

* ``"round"`` (version-1 files, no ``rule`` key): y = act(rshift_round(u, out_exp - in_exp)),
  e = y - sent, fire where |e| > threshold (per unit, Y units), payload e.
* ``"lava"`` (default) and ``"lava-netx"`` for every identity/relu SigmaDelta (the input encoder
  and the conv layers; the tanh node stays "round", it belongs to the plastic layer's own process):
  Lava's SigmaDelta (:func:`conversion.fixed_point.sigma_delta_lava`) in u units, with the integer
  keys ``state_exp`` S = out_exp - in_exp, ``vth`` (one per layer, u units) and ``step_exp``.  Both
  store node rule code 1 (the same arithmetic); ``_spec["sd_rule"]`` tells them apart
  (``SD_SPEC_CODE``: lava-netx 1, the code of the first version-2 files, lava 2).
* ``"lava"`` exponents: the input encoder S = 0; every later layer the smallest S >= 0 with which
  the 24-bit budgets hold (its own range, the accumulators of its receivers, the plastic layer's
  pre-activation; the finest-exponent bound does not apply), raised where the synapse bias / 2**S
  would not fit Lava's 16-bit SigmaDelta bias; S <= 7 (Lava's 3-bit state_exp).  S = 0 sends the
  whole delta (no payload is floored).  ``step_exp`` 0.  ``net.metadata["sd_state_exp"]`` names
  the chosen S and the bound behind it per node.
* ``"lava-netx"`` exponents: the input encoder S = 0; the first hidden layer S1 = the calibrated
  out_exp - in_exp, clipped to 0..6; every later one S = 6 (``LAVA_STATE_EXP``), or more where the
  calibration needs it.  ``_spec["spike_exp"]`` = 6 - S1.  These are the exponents with which
  lava-dl netx (state_exp 6, one spike_exp) reproduces the integers exactly
  (:mod:`conversion.netx_export`): a layer's netx accumulator is 2**c times u (c = spike_exp for the
  first, 0 after), so its bias and threshold are multiples of 2**step_exp u-LSBs, step_exp =
  spike_exp + 6 - c.  The synapse bias is rounded to a multiple of 2**step_exp; its Lava
  constructor value bias / 2**S must fit 16 bits (``LAVA_BIAS_MAX``).
* vth (both): the smallest calibrated threshold of the layer as the strict test of the float rule,
  floor(min(threshold) / 2**in_exp) + 1, then the nearest multiple of 2**step_exp (at least one step).
"""
from __future__ import annotations

import math

import numpy as np

from conversion import fixed_point as fx
from conversion import graph as g
from conversion.calibrate import Calibration
from mstpn_base.errors import ParameterError

FINEST_EXP = -16
DEFAULT_HEADROOM = 4.0
#: the default headroom per sigma-delta rule.  "lava" floors every payload of a layer with
#: state_exp > 0 (the receivers drift by up to one output LSB per event), and a larger headroom
#: forces a larger state_exp at sd1 (conv2's 24-bit accumulator); measured on the shipped STPN over
#: a full recorded game (2,069 frames, scripts/sd_rule_agreement.py): action agreement with the float
#: network 90.8 % at headroom 4 (sd1 state_exp 3), 95.8 % at 2, 98.0 % at 1.5 (state_exp 1), no
#: overflow at any; m-STPN 91.6 % at 4, 98.3 % at 1.5.  "round" and "lava-netx" keep 4.
RULE_HEADROOM = {"lava": 1.5, "lava-netx": DEFAULT_HEADROOM, "round": DEFAULT_HEADROOM}


#: headrooms :func:`quantise_checked` tries in turn for the "lava" rule (see there)
LAVA_HEADROOMS = (1.5, 2.0, 4.0)


def conv_wraps(net: g.Network, frames, starts=None) -> int:
    """Element-steps of ``frames`` (T, *input shape) at which a Conv step output of ``net`` (fixed
    point) leaves 24 bits, i.e. Lava's Conv would wrap it (the reference's "du" monitor events)."""
    from conversion.simulator import Simulator, run_sequence

    mon = fx.OverflowMonitor()
    frames = np.asarray(frames)
    run_sequence(Simulator(net, fixed=True, monitor=mon), frames.reshape(len(frames), 1, *frames.shape[-3:]),
                 None if starts is None else np.asarray(starts, bool).reshape(-1, 1))
    return sum(c for (_, v), c in mon.counts.items() if v == "du")


def quantise_checked(net: g.Network, cal: Calibration, frames, starts=None, headroom: float | None = None,
                     sd_rule: str = "lava", log=None) -> dict:
    """:func:`quantise`, and for the "lava" rule at its default headroom a check on the calibration
    frames: the headroom bounds the accumulators, not a Conv's output within one time step, which
    in the first frame after a reset (the jump from the reset state to the frame) can reach twice
    their range; Lava's Conv wraps such an output at 24 bits.  Where it would, on the calibration
    frames, the next headroom of :data:`LAVA_HEADROOMS` is used."""
    if headroom is not None or sd_rule != "lava":
        return quantise(net, cal, headroom, sd_rule=sd_rule)
    for hr in LAVA_HEADROOMS:
        fixed = quantise(net, cal, hr, sd_rule=sd_rule)
        wraps = conv_wraps(net, frames, starts)
        if not wraps:
            return fixed
        if log:
            log(f"fixed point: at headroom {hr} a Conv step output leaves 24 bits on the calibration frames "
                f"({wraps} element-steps); trying the next headroom")
    return fixed


def default_headroom(sd_rule: str) -> float:
    """The headroom factor a rule uses when none is given (:data:`RULE_HEADROOM`)."""
    if sd_rule not in RULE_HEADROOM:
        raise ParameterError(f"sd_rule must be one of {tuple(RULE_HEADROOM)}, got {sd_rule!r}")
    return RULE_HEADROOM[sd_rule]


def _exp_for(maxabs: float, hr: float, extra: int = 0) -> int:
    """Smallest e with hr * maxabs <= STATE_MAX * 2**(e + extra)."""
    if maxabs <= 0:
        return -10**6
    return math.ceil(math.log2(hr * maxabs / fx.STATE_MAX)) - extra


def _check_fit(name: str, x: np.ndarray, budget: int = fx.STATE_MAX):
    m = int(np.max(np.abs(x))) if np.size(x) else 0
    if m > budget:
        raise ParameterError(f"{name} does not fit its 24-bit budget after quantisation (|{m}| > {budget})")


def quantise(net: g.Network, cal: Calibration, headroom: float | None = None, sd_rule: str = "lava") -> dict:
    """Fill ``net.fixed`` for a sigma-delta network; returns it.  ``sd_rule``: "lava", "lava-netx"
    or "round" (:data:`conversion.fixed_point.SD_RULES`); ``headroom`` None: the rule's default
    (:func:`default_headroom`)."""
    if sd_rule not in fx.SD_RULES:
        raise ParameterError(f"sd_rule must be one of {fx.SD_RULES}, got {sd_rule!r}")
    headroom = default_headroom(sd_rule) if headroom is None else headroom
    if net.mode != "sigma_delta":
        raise ParameterError("only the sigma-delta form has a fixed-point version")
    if not (math.isfinite(headroom) and headroom >= 1):
        raise ParameterError(f"headroom must be >= 1, got {headroom}")
    nodes, order, hr = net.nodes, net.order, float(headroom)
    fixed: dict = {}
    receivers = {n: [b for a, b in net.edges if a == n] for n in order}

    def synapse_receivers(n):
        """Conv2d/Affine nodes fed by ``n`` through Scale/Flatten pass-throughs."""
        out = []
        for r in receivers[n]:
            if isinstance(nodes[r], (g.Scale, g.Flatten)):
                out += synapse_receivers(r)
            elif isinstance(nodes[r], (g.Conv2d, g.Affine, g.PlasticSTPN)) and order.index(r) > order.index(n):
                out.append(r)
        return out

    # weights first (no data needed); Scale folded into the next synapse
    weights = {}
    for n in order:
        node = nodes[n]
        if isinstance(node, (g.Conv2d, g.Affine)):
            w = node.weight
            s = net.source(n)
            if isinstance(nodes[s], g.Scale):
                sc = nodes[s].scale
                if not np.all(sc == sc.flat[0]):
                    raise ParameterError(f"Scale node {s!r} must be uniform to be folded into {n!r}")
                w = w * float(sc.flat[0])
            weights[n] = fx.quantise_weights(w)
    st_name = net.plastic()
    st = nodes[st_name]
    w_mant, w_exp = fx.quantise_weights(st.W)
    g_mant, g_exp = fx.quantise_weights(st.gamma)

    # activation exponents (why_exp: the budget that sets each)
    out_exp, why_exp, budget_exp, why_budget = {}, {}, {}, {}
    for n in order:
        node = nodes[n]
        if isinstance(node, g.Input):
            out_exp[n] = 0
        elif isinstance(node, g.SigmaDelta):
            if isinstance(nodes[net.source(n)], g.Input):
                out_exp[n] = 0  # raw pixels
                continue
            bounds = [(FINEST_EXP, f"the finest exponent 2**{FINEST_EXP}"),
                      (_exp_for(cal.maxabs.get(n, 0.0), hr), f"{n}'s own 24-bit range")]
            bounds += [(_exp_for(cal.maxabs.get(r, 0.0), hr, weights[r][1]), f"the 24-bit accumulator of {r}")
                       for r in synapse_receivers(n) if r in weights]
            out_exp[n], why_exp[n] = max(bounds, key=lambda b: b[0])
            budget_exp[n], why_budget[n] = max(bounds[1:], key=lambda b: b[0])     # the 24-bit budgets alone
    x_src = _neuron_of(net, net.source(st_name))
    a_min = _exp_for(cal.maxabs.get(st_name, 0.0), hr)
    for n in (x_src, st.post):
        if a_min > out_exp[n]:
            why_exp[n] = f"the 24-bit pre-activation of {st_name}"
        if a_min > budget_exp.get(n, a_min):
            budget_exp[n], why_budget[n] = a_min, f"the 24-bit pre-activation of {st_name}"
    lava = {}
    if sd_rule == "lava-netx":
        lava = _lava_exponents(net, weights, out_exp, {x_src: a_min, st.post: a_min}, why_exp, netx=True)
    elif sd_rule == "lava":
        lava = _lava_exponents(net, weights, out_exp, budget_exp, why_budget, netx=False)
    for n in (x_src, st.post):
        out_exp[n] = max(out_exp[n], a_min)
    x_exp, h_exp = out_exp[x_src], out_exp[st.post]
    z_exp = min(x_exp, h_exp)
    K = st.W.shape[1]
    s_max = 0
    while K * (127 * 2 ** (s_max + 1) + fx.STATE_MAX) ** 2 <= fx.WIDE_MAX:
        s_max += 1
    f_exp = max(w_exp - s_max, _exp_for(cal.F, hr), -39)
    if f_exp > w_exp:
        raise ParameterError(f"short-term weights F (max {cal.F:.3g}) are too large for the W scale 2**{w_exp}")

    # per-node entries, in order (in_exp propagates through Scale/Flatten)
    in_exp_of = {}
    for n in order:
        node = nodes[n]
        src = None if isinstance(node, g.Input) else net.source(n)
        if isinstance(node, (g.Input, g.SigmaDelta)):
            this_out = out_exp[n]
        elif isinstance(node, (g.Scale, g.Flatten, g.Output)):
            this_out = in_exp_of[src]
        else:
            this_out = None
        if isinstance(node, (g.Conv2d, g.Affine)):
            mant, e_w = weights[n]
            u_exp = e_w + in_exp_of[src]
            bias = fx.to_int(node.bias, u_exp)
            nrn = _lava_neuron(net, n, lava)
            if nrn is not None:       # a multiple of the layer's netx step, 16-bit Lava mantissa
                k, S = lava[nrn]["step_exp"], lava[nrn]["state_exp"]
                bias = fx.to_int(node.bias, u_exp + k) << k if k else bias
                if np.max(np.abs(bias >> S), initial=0) > fx.LAVA_BIAS_MAX:
                    raise ParameterError(f"{n}.bias / 2**state_exp ({int(np.max(np.abs(bias >> S)))}) does not fit "
                                         f"Lava's 16-bit SigmaDelta bias")
            _check_fit(f"{n}.bias", bias)
            fixed[n] = {"weight_mant": mant, "weight_exp": e_w, "in_exp": in_exp_of[src], "u_exp": u_exp, "bias": bias}
            this_out = u_exp
        elif isinstance(node, g.SigmaDelta):
            ent = {"in_exp": in_exp_of[src], "out_exp": out_exp[n],
                   "threshold": np.floor(node.threshold / 2.0 ** out_exp[n]).astype(np.int64)}
            if node.activation == "tanh":
                lut, shift = fx.tanh_table(in_exp_of[src], out_exp[n])
                ent.update(lut=lut, lut_shift=shift)
            if n in lava:
                ent.update(_lava_entry(node, in_exp_of[src], out_exp[n], lava[n]))
            elif sd_rule != "round":
                ent["rule"] = fx.SD_RULE_CODE["round"]
            fixed[n] = ent
        elif isinstance(node, g.PlasticSTPN):
            bias = fx.to_int(st.b, z_exp)
            _check_fit(f"{n}.b", bias)
            f_max = -1 if not math.isfinite(st.f_max) else min(int(math.floor(st.f_max / 2.0**f_exp)), fx.STATE_MAX)
            fixed[n] = {"w_mant": w_mant, "w_exp": w_exp, "f_exp": f_exp, "gamma_mant": g_mant, "gamma_exp": g_exp,
                        "lam_q12": fx.lam_code(st.lam), "bias": bias, "x_exp": x_exp, "h_exp": h_exp, "z_exp": z_exp,
                        "a_exp": z_exp, "hebb_shift": f_exp - (g_exp + h_exp + z_exp), "f_max": f_max}
            this_out = z_exp
        elif isinstance(node, g.Scale):
            fixed[n] = {"folded": 1}
        in_exp_of[n] = this_out
    fixed["_spec"] = {"headroom_x1000": int(round(hr * 1000)), "finest_exp": FINEST_EXP, "version": 1}
    if sd_rule == "lava-netx":
        se = [v["spike_exp"] for v in lava.values() if "spike_exp" in v]
        fixed["_spec"].update(version=2, sd_rule=fx.SD_SPEC_CODE[sd_rule], spike_exp=se[0] if se else 0)
    elif sd_rule == "lava":
        fixed["_spec"].update(version=2, sd_rule=fx.SD_SPEC_CODE[sd_rule])
    net.fixed = fixed
    if lava:
        net.metadata["sd_state_exp"] = {n: {"state_exp": int(v["state_exp"]), "why": v["why"]} for n, v in lava.items()}
    else:
        net.metadata.pop("sd_state_exp", None)
    return fixed


def _neuron_of(net: g.Network, n: str) -> str:
    """The SigmaDelta node behind ``n`` (through Flatten/Scale)."""
    while not isinstance(net.nodes[n], g.SigmaDelta):
        if not isinstance(net.nodes[n], (g.Flatten, g.Scale)):
            raise ParameterError(f"the plastic layer's input must come from a SigmaDelta node, found {n!r}")
        n = net.source(n)
    return n


def _lava_exponents(net: g.Network, weights: dict, out_exp: dict, floor_exp: dict, why_exp: dict,
                    netx: bool) -> dict:
    """The exponents of the Lava-rule SigmaDelta nodes (module docstring), in order: sets
    ``out_exp`` of every identity/relu SigmaDelta to in_exp + S and returns {node: {state_exp,
    step_exp[, spike_exp], why}}.  ``netx``: the "lava-netx" exponents (``floor_exp``: lower bounds
    of out_exp, the plastic layer's input); else ("lava") the smallest S with out_exp >=
    ``floor_exp`` (the 24-bit budgets alone, without the finest-exponent bound).  ``why_exp``: the
    budget behind each bound."""
    nodes, lava, in_exp, c, se = net.nodes, {}, {}, None, None
    for n in net.order:
        node = nodes[n]
        if isinstance(node, g.Input):
            in_exp[n] = 0
            continue
        src_exp = in_exp[net.source(n)]
        if isinstance(node, (g.Conv2d, g.Affine)):
            in_exp[n] = weights[n][1] + src_exp
        elif isinstance(node, g.PlasticSTPN):
            in_exp[n] = min(out_exp[_neuron_of(net, net.source(n))],
                            max(out_exp[node.post], floor_exp.get(node.post, out_exp[node.post])))
        elif isinstance(node, g.SigmaDelta):
            if node.activation == "tanh":
                in_exp[n] = out_exp[n]
                continue
            first_input = isinstance(nodes[net.source(n)], g.Input)
            want = (max(out_exp[n], floor_exp.get(n, out_exp[n])) if netx else floor_exp.get(n, -10**6)) - src_exp
            if first_input:
                S, ent = 0, {"step_exp": 0, "why": "the input encoder sends raw pixel integers"}
            elif not netx:
                S = max(0, want)
                ent = {"step_exp": 0, "why": (f"{why_exp.get(n, 'its budget')} needs out_exp - in_exp >= {want}"
                                              if S else "the budgets allow it" + (
                                                  f" ({why_exp[n]} needs out_exp - in_exp >= {want})"
                                                  if n in why_exp and want > -10**5 else ""))}
                S, ent = _bias_state_exp(net, n, in_exp, S, ent)
            elif se is None:                         # first hidden layer: its netx accumulator is 2**se u
                S = min(fx.LAVA_STATE_EXP, max(0, want))
                se = fx.LAVA_STATE_EXP - S
                ent = {"step_exp": fx.LAVA_STATE_EXP, "spike_exp": se,
                       "why": f"netx's first layer: the budgets' {max(0, want)}, clipped to 0..6 (spike_exp {se})"}
                c = se - fx.LAVA_STATE_EXP + S
            else:
                S = max(fx.LAVA_STATE_EXP, want)
                ent = {"step_exp": se + fx.LAVA_STATE_EXP - c,
                       "why": f"netx's state_exp {fx.LAVA_STATE_EXP}" + (f" (the budgets need {want})" if S > 6 else "")}
                c = c - fx.LAVA_STATE_EXP + S
            ent["state_exp"] = S
            lava[n] = ent
            out_exp[n] = src_exp + S
            in_exp[n] = out_exp[n]
        else:
            in_exp[n] = src_exp
    return lava


def _bias_state_exp(net: g.Network, n: str, in_exp: dict, S: int, ent: dict) -> tuple:
    """Raise the state_exp S of SigmaDelta ``n`` until its synapse's bias (u units) over 2**S fits
    Lava's 16-bit SigmaDelta bias, and check Lava's 3-bit state_exp; returns (S, entry)."""
    syn = net.source(n)
    if isinstance(net.nodes[syn], (g.Conv2d, g.Affine)):
        b = fx.to_int(net.nodes[syn].bias, in_exp[syn])
        big, need = int(np.max(np.abs(b), initial=0)), S
        while np.max(np.abs(b >> need), initial=0) > fx.LAVA_BIAS_MAX:
            need += 1
        if need > S:
            ent = dict(ent, why=f"{syn}'s bias ({big} u-LSBs) / 2**state_exp must fit Lava's 16-bit SigmaDelta bias "
                                f"(the 24-bit budgets alone allow {S})")
            S = need
    if S > fx.LAVA_STATE_EXP_MAX:
        raise ParameterError(f"{n}: state_exp {S} does not fit Lava's 3-bit SigmaDelta state_exp ({ent['why']})")
    return S, ent


def _lava_neuron(net: g.Network, n: str, lava: dict):
    """The "lava" SigmaDelta node fed by synapse ``n`` (None if none)."""
    for a, b in net.edges:
        if a == n and b in lava:
            return b
    return None


def _lava_entry(node: g.SigmaDelta, in_exp: int, out_exp: int, lv: dict) -> dict:
    """rule, state_exp, step_exp and vth (u units) of a "lava" SigmaDelta node."""
    k = int(lv["step_exp"])
    thr = float(np.min(node.threshold)) if node.threshold.size else 0.0
    vth = int(math.floor(thr / 2.0**in_exp)) + 1      # |delta| > thr  <=>  |delta| >= vth, delta integer
    vth = max(1, int(np.rint(vth / 2.0**k))) << k
    if vth > fx.STATE_MAX:
        raise ParameterError(f"threshold {thr:.4g} does not fit the 24-bit vth of its Lava SigmaDelta")
    assert out_exp - in_exp == lv["state_exp"]
    return {"rule": fx.SD_RULE_CODE["lava"], "state_exp": int(lv["state_exp"]), "step_exp": k, "vth": vth}
