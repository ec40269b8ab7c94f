"""Choose the fixed-point formats of a sigma-delta network from a calibration and store them in
``net.fixed`` (node -> {name: int or int64 array}); the integer semantics are those of
:mod:`conversion.fixed_point` and :mod:`conversion.simulator` (``fixed=True``).

Rules (``hr`` = headroom factor over the calibrated maxima, default 4 = 2 bits):

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


def _exp_for(maxabs: float, hr: float, extra: int = 0) -> int:
    """Smallest e with hr * maxabs <= STATE_MAX * 2**(e + extra)."""
    if maxabs <= 0:
        return -10**6
    return math.ceil(math.log2(hr * maxabs / fx.STATE_MAX)) - extra


def _check_fit(name: str, x: np.ndarray, budget: int = fx.STATE_MAX):
    m = int(np.max(np.abs(x))) if np.size(x) else 0
    if m > budget:
        raise ParameterError(f"{name} does not fit its 24-bit budget after quantisation (|{m}| > {budget})")


def quantise(net: g.Network, cal: Calibration, headroom: float = DEFAULT_HEADROOM) -> dict:
    """Fill ``net.fixed`` for a sigma-delta network; returns it."""
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

    # activation exponents
    out_exp = {}
    for n in order:
        node = nodes[n]
        if isinstance(node, g.Input):
            out_exp[n] = 0
        elif isinstance(node, g.SigmaDelta):
            if isinstance(nodes[net.source(n)], g.Input):
                out_exp[n] = 0  # raw pixels
                continue
            e = max(FINEST_EXP, _exp_for(cal.maxabs.get(n, 0.0), hr))
            for r in synapse_receivers(n):
                if r in weights:
                    e = max(e, _exp_for(cal.maxabs.get(r, 0.0), hr, weights[r][1]))
            out_exp[n] = e
    x_src = _neuron_of(net, net.source(st_name))
    a_min = _exp_for(cal.maxabs.get(st_name, 0.0), hr)
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
            _check_fit(f"{n}.bias", bias)
            fixed[n] = {"weight_mant": mant, "weight_exp": e_w, "in_exp": in_exp_of[src], "u_exp": u_exp, "bias": bias}
            this_out = u_exp
        elif isinstance(node, g.SigmaDelta):
            ent = {"in_exp": in_exp_of[src], "out_exp": out_exp[n],
                   "threshold": np.floor(node.threshold / 2.0 ** out_exp[n]).astype(np.int64)}
            if node.activation == "tanh":
                lut, shift = fx.tanh_table(in_exp_of[src], out_exp[n])
                ent.update(lut=lut, lut_shift=shift)
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
    net.fixed = fixed
    return fixed


def _neuron_of(net: g.Network, n: str) -> str:
    """The SigmaDelta node behind ``n`` (through Flatten/Scale)."""
    while not isinstance(net.nodes[n], g.SigmaDelta):
        if not isinstance(net.nodes[n], (g.Flatten, g.Scale)):
            raise ParameterError(f"the plastic layer's input must come from a SigmaDelta node, found {n!r}")
        n = net.source(n)
    return n
