"""Integer (Loihi-style) specification of the device-level plastic layer, written once.

It is :mod:`conversion.device_layer` (the float reference) on integers, with the device formats
and the pulse kernel of :mod:`memristor.fixed_point` (:func:`memristor.fixed_point.pulse_int`);
the NumPy simulator (``Simulator(net, fixed=True, synapses="device")``) and the Lava ``fixed_pt``
model of :class:`lava_procs.memristor.layer.DeviceLayer` both step with :func:`plasticity_int`.

Formats (F LSB u_F = 2**f_exp weight units, ``f_exp`` = ``net.fixed[node]["f_exp"]``):

=====================  ===================================  ==================================
quantity               integer                              budget
=====================  ===================================  ==================================
g_st (per device)      G = g_st / lsb_g, lsb_g = g_unit      0 .. G_max <= 2**22 (``g_frac``: the
                       u_F 2**-g_frac [S]                    largest with G_max = round(g_st_max
                                                             / lsb_g) <= 2**22, may be < 0)
r, q                   Q16 (memristor ``trace_frac``)        24-bit state
decay of g_st          d_g = round(4096 (1 - ret)) per       1 .. 4095 (ret: the device's own
                       device (12 bit)                       exp(-dt / tau_i) at its bias)
decay of r, q          d_r, d_q device-wide (12 bit)
a_st of each device,   Q16                                   <= 2**16
nominal a_st (A)
efficacy |s|           Q18 (``drive_frac``), signed          |s| <= S_max = floor(s_max 2**18)
                                                             < 2**23 (s_max < 32)
k (pulse fraction)     Q24                                   0 .. 2**24
c2c factor n           Q12, rint(n 4096) of                  < 2**16
                       :func:`conversion.device_layer.c2c_noise`
pulse width            t_max w / 2**16                       w in 0 .. 2**16 (table, below)
F (read-back)          rshift_round(G_p - G_m, g_frac)       24-bit (monitor ``F``)
W (long-term read)     rint(W_read / 2**w_exp), 8 bit        |W| <= 127 (monitor ``W_lt``)
D << -f_exp            64-bit register                       <= 2**62 (monitor ``dev_num``)
gamma h z              64-bit register                       <= 2**62 (monitor ``hebb_product``)
=====================  ===================================  ==================================

One step (B, H, K arrays; N (B, H) the integer row norm, h, z the integer activations)::

    relax      G <- (G (4096 - d_g)) >> 12;  r, q likewise with d_r, d_q
    read       D = G_p - G_m                                   (LSB lsb_g)
    target     T = round_div(D << -f_exp, N) + rshift_round(gamma h z, hebb_shift - g_frac)
    split      dD = T - D; dD > 0: take_m = min(dD, G_m), c_m = -take_m, c_p = dD - take_m
                           dD < 0: the mirror image               (one pulse per device at most)
    invert     room = G_max - G (c > 0) or G (c < 0)
               k = min(round_div(|c| << 24, room), 2**24)      (room = 0, c != 0: k = 2**24)
               |s| = max(1, min(round_div(k << 10, A), S_max))  (c != 0; else 0; for k = 2**24 rounded
                                                               up, so that a full pulse empties or fills it)
    devices    memristor.fixed_point.pulse_int(s * live, noise)    (own a_st, f(r), mu(q), n)
    read-back  F = rshift_round(G_p - G_m, g_frac)

G never leaves 0 .. G_max (the soft bounds of pulse_int), q stays in 0 .. 2**16; r and
f = 1 + ppf r are checked against 24 bits before each pulse (monitor ``r_p``, ``f_p``, ...).  The
width code is w = T_w[i] + (((T_w[i+1] - T_w[i]) j) >> 12) with X = round_div(|s| << 24, S_max),
i = X >> 12, j = X & 4095 and the table T_w[i] = round(2**16 (i / 4096)**(1 / beta_t)) (the width
law t_p = t_max (s / s_max)**(1 / beta_t)); it enters only the counted energy.  Energies are float
sums over the integers (V^2 (g_lt + G lsb_g) t_max w 2**-16; the bias energy of
:func:`memristor.equations.bias_energy` at g_st = G lsb_g), not part of the integer state.

Not specified in integers: ``compensate_history`` (ParameterError).  Finite levels are those of
the long-term conductances (the float build snaps them); the forward pass reads them as 8-bit W.

Error bound (:func:`step_error_bound`): one step from the same state, against the float layer run
on the quantised parameters (:func:`quantised_reference`: lambda = 1 - d/4096, a_st = a / 2**16,
n = code / 4096, gamma = the integer gamma, h, z, N the integers' values), per synapse in lsb_g::

    |D_int - D_float| <= 2 (decay floors)
    |dD error|        <= 2 / N + 3                         (D, D / N and the Hebbian rounding)
    per device        <= 1 + max(rho, 1) (|dD error| + 1) + rho 2**-18 G_max + 4 rho' 2**-24 G_max + 1 + eps
                         rho = a_i f mu n / a_nom (the device's gain over the nominal one),
                         rho' = f mu n + mu f + f + 1 (the floors of the Q24 chain of pulse_int)
    F                 <= (sum over the pair) 2**-g_frac + 1/2

plus 16 float64 epsilons of g_st_max.  Against the float layer with the float parameters the
parameter rounding adds |lambda_q - lambda| g (<= 2**-13 g per step), the 8-bit gamma (<= 2**-8 of
the Hebbian term) and the network's own quantisation of h, z and N; the measured trajectory error
on recorded Pong frames is in docs/devices.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conversion import device_layer as dl
from memristor import fixed_point as mfp
from mstpn_base.errors import ParameterError
from mstpn_base.intmath import INT, decay_code, rshift_round, round_div

#: device formats: the memristor integer model with a Q18 efficacy (finer than one F LSB per pulse)
SPEC = mfp.FixedPointSpec(drive_frac=18)
STATE_MAX = SPEC.state_max                  # 2**23 - 1
G_FULL = 1 << 22                            # largest g_st code
WIDE_MAX = 1 << 62
WIDTH_BITS = 16                             # width code: t_max w / 2**16
TABLE_BITS = 12                             # width table: 4097 entries over s / s_max
W_MAX = 127                                 # 8-bit long-term weight mantissa


@dataclass
class FixedDevices:
    """The integer constants of one layer's devices (:func:`build_fixed`).

    ``consts[side]``: the :func:`memristor.fixed_point.pulse_int` constants (``a`` (H, K) Q16,
    ``d_g`` (H, K), ``d_r``, ``d_q``, ``ppf``, ``md``, ``g_st_max``); ``live[side]``: bool (H, K)
    or None; ``w_mant``: the long-term read-back as 8-bit mantissas at ``w_exp``."""

    devices: dl.Devices
    f_exp: int
    g_frac: int
    hebb_shift: int          # shift of gamma h z into lsb_g: net hebb_shift - g_frac
    lsb_g: float             # [S]
    g_max: int               # G_max, the code of g_st_max
    a_nom: int               # nominal a_st, Q16
    s_max: int               # S_max, Q18
    width_table: np.ndarray
    consts: dict
    live: dict
    w_mant: np.ndarray
    n_w_saturated: int

    @property
    def mapping(self) -> dl.Mapping:
        return self.devices.mapping


def build_fixed(devices: dl.Devices, fp: dict) -> FixedDevices:
    """Integer constants for ``devices`` in the plastic layer's fixed format ``fp`` (net.fixed[node])."""
    m, p = devices.mapping, devices.mapping.params
    if m.compensate_history:
        raise ParameterError("the integer device layer has no specification of compensate_history; "
                             "run it in float (fixed=False)")
    f_exp = int(fp["f_exp"])
    if f_exp > 0:
        raise ParameterError(f"the integer device layer needs f_exp <= 0, got {f_exp}")
    u_f = m.g_unit * 2.0**f_exp
    g_frac = int(np.floor(np.log2(G_FULL / (p.g_st_max / u_f))))
    while round(p.g_st_max / (u_f * 2.0**-g_frac)) > G_FULL:
        g_frac -= 1
    lsb = u_f * 2.0**-g_frac
    one = 1 << SPEC.eff_frac
    s_max = int(np.floor(m.s_max * (1 << SPEC.drive_frac)))
    if s_max > STATE_MAX or s_max < 1:
        raise ParameterError(f"the longest pulse's efficacy {m.s_max:.4g} does not fit Q{SPEC.drive_frac} "
                             f"(< {STATE_MAX / (1 << SPEC.drive_frac):.4g})")
    a_nom = int(round(p.a_st * one))
    if not 0 < a_nom <= one:
        raise ParameterError(f"a_st = {p.a_st} does not fit Q{SPEC.eff_frac} in (0, 1]")
    consts, live = {}, {}
    ret0 = devices.sides["p"]["ret"]
    common = dict(d_r=_decay(ret0["r"], "r"), d_q=_decay(ret0["q"], "q"),
                  ppf=mfp._fit(p.ppf_gain, STATE_MAX, "ppf_gain", SPEC.eff_frac),
                  md=mfp._fit(p.meta_depletion, one, "meta_depletion", SPEC.eff_frac),
                  g_st_max=np.asarray(round(p.g_st_max / lsb), INT), eta=np.asarray(0, INT),
                  g_min=np.asarray(0, INT), g_max=np.asarray(0, INT))
    for side, d in devices.sides.items():
        consts[side] = dict(common, d_g=_decay(d["ret"]["g_st"], "g_st"), a=mfp._fit(d["a_st"], one, "a_st", SPEC.eff_frac))
        live[side] = None if "live" not in d else d["live"] != 0
    w = np.rint(devices.W / 2.0 ** int(fp["w_exp"])).astype(INT)
    sat = int(np.count_nonzero(np.abs(w) > W_MAX))
    table = np.rint((np.arange((1 << TABLE_BITS) + 1) / (1 << TABLE_BITS)) ** (1.0 / p.beta_t)
                    * (1 << WIDTH_BITS)).astype(INT)
    return FixedDevices(devices, f_exp, g_frac, int(fp["hebb_shift"]) - g_frac, lsb, int(common["g_st_max"]), a_nom,
                        s_max, table, consts, live, np.clip(w, -W_MAX, W_MAX), sat)


def _decay(ret, name):
    d = decay_code(ret)
    if np.any((d == 0) & (np.asarray(ret) < 1.0)):
        raise ParameterError(f"the decay of {name} rounds to 0 in 12 bits: its relaxation would be lost")
    return np.asarray(d, INT)


def init_state(shape) -> dict:
    """Fresh devices in integers: G = r = q = 0 per side, int64 arrays of ``shape``."""
    return {side: {v: np.zeros(shape, INT) for v in dl.DEVICE_STATE} for side in dl.SIDES}


def c2c_noise_int(m: dl.Mapping, step: int, shape) -> dict | None:
    """The cycle-to-cycle factors of :func:`conversion.device_layer.c2c_noise` (the same seeded
    draws) in Q12, None without noise."""
    f = dl.c2c_noise(m, step, shape)
    if f is None:
        return None
    out = {side: np.rint(a * (1 << SPEC.noise_frac)).astype(INT) for side, a in f.items()}
    for side, a in out.items():
        if np.any(a > SPEC.noise_max):
            raise ParameterError(f"a cycle-to-cycle factor of step {step} does not fit Q12 in 16 bits")
    return out


def _check(monitor, node, var, x, budget, step, saturate=True):
    return x if monitor is None else monitor.check(node, var, x, budget, step, saturate=saturate)


def plasticity_int(fd: FixedDevices, state: dict, N, h, z, gamma, noise=None, monitor=None, node: str = "",
                   step: int = 0):
    """One integer plasticity step (module docstring).

    ``state``: per side {g_st, r, q} int64 (B, H, K); ``N`` broadcastable as (B, H, 1), ``h`` as
    (B, H, 1), ``z`` as (B, 1, K), ``gamma`` the (H, K) mantissas; ``noise``: :func:`c2c_noise_int`;
    ``monitor``: a :class:`conversion.fixed_point.OverflowMonitor` (None: no checks).  Returns
    ``(state, F, pulses)``: the new state, F (B, H, K) in the F format, and per side ``(s, G)``: the
    signed Q18 efficacy (0: no pulse) and the conductance code just before the pulse.
    """
    relaxed = {}
    for side in dl.SIDES:
        c, st = fd.consts[side], state[side]
        relaxed[side] = {"g_st": mfp.decay_int(st["g_st"], c["d_g"], SPEC), "r": mfp.decay_int(st["r"], c["d_r"], SPEC),
                         "q": mfp.decay_int(st["q"], c["d_q"], SPEC)}
    gp, gm = relaxed["p"]["g_st"], relaxed["m"]["g_st"]
    D = gp - gm
    num = _check(monitor, node, "dev_num", D << -fd.f_exp, WIDE_MAX, step, saturate=False)
    prod = _check(monitor, node, "hebb_product", np.asarray(gamma, INT) * np.asarray(h, INT) * np.asarray(z, INT),
                  WIDE_MAX, step)
    if fd.hebb_shift < 0:
        prod = _check(monitor, node, "hebb_product", prod, WIDE_MAX >> -fd.hebb_shift, step)
    dD = round_div(num, np.maximum(np.asarray(N, INT), 1)) + rshift_round(prod, fd.hebb_shift) - D
    up, down = dD > 0, dD < 0
    take_m = np.where(up, np.minimum(dD, gm), 0)
    take_p = np.where(down, np.minimum(-dD, gp), 0)
    change = {"p": np.where(up, dD - take_m, -take_p), "m": np.where(down, -dD - take_p, -take_m)}
    new, pulses = {}, {}
    one_k = 1 << SPEC.k_frac
    for side in dl.SIDES:
        st, c, d = relaxed[side], fd.consts[side], change[side]
        room = np.where(d > 0, fd.g_max - st["g_st"], st["g_st"])
        k = np.where(room > 0, np.minimum(round_div(np.abs(d) << SPEC.k_frac, np.maximum(room, 1)), one_k),
                     np.where(d != 0, one_k, 0))
        num_s = k << (SPEC.drive_frac + SPEC.eff_frac - SPEC.k_frac)
        mag = np.where(k == one_k, (num_s + (fd.a_nom - 1)) // fd.a_nom, round_div(num_s, fd.a_nom))
        mag = np.minimum(mag, fd.s_max)      # k = 1 rounded up: a full pulse reaches the bound
        s = np.sign(d) * np.where(d != 0, np.maximum(mag, 1), 0)
        applied = s if fd.live[side] is None else np.where(fd.live[side], s, 0)
        pulsed = applied != 0
        r_next = _check(monitor, node, f"r_{side}", np.where(pulsed, st["r"] + SPEC.one_t, 0), STATE_MAX, step)
        _check(monitor, node, f"f_{side}", np.where(pulsed, SPEC.one_t + ((c["ppf"] * st["r"]) >> SPEC.eff_frac), 0),
               STATE_MAX, step, saturate=False)
        del r_next   # pulse_int saturates r and f the same way
        out, _ = mfp.pulse_int({"g_lt": np.zeros_like(st["g_st"]), **st}, c, applied, False,
                               SPEC.one_d if noise is None else noise[side], 0, SPEC)
        new[side] = {v: out[v] for v in dl.DEVICE_STATE}
        pulses[side] = (s, st["g_st"])
    F = rshift_round(new["p"]["g_st"] - new["m"]["g_st"], fd.g_frac)
    return new, _check(monitor, node, "F", F, STATE_MAX, step), pulses


def width_code(fd: FixedDevices, s) -> np.ndarray:
    """Width codes w (t_p = t_max w / 2**16) of pulses of Q18 efficacy ``s`` (module docstring)."""
    x = round_div(np.abs(np.asarray(s, INT)) << SPEC.k_frac, fd.s_max)
    sh = SPEC.k_frac - TABLE_BITS
    last = len(fd.width_table) - 1
    i = np.minimum(x >> sh, last - 1)
    j = np.where(x >> sh >= last, 1 << sh, x & ((1 << sh) - 1))
    t = fd.width_table
    return t[i] + (((t[i + 1] - t[i]) * j) >> sh)


def pulse_tally_int(fd: FixedDevices, pulses: dict) -> dict:
    """Counted pulses of one step (as :func:`conversion.device_layer.pulse_tally`): numbers of
    potentiating and depressing pulses (int) and their energy [J] (float, from the integers)."""
    m, pot, dep, energy = fd.mapping, 0, 0, 0.0
    t_lsb = m.t_max / (1 << WIDTH_BITS)
    for side, (s, G) in pulses.items():
        pot += int(np.count_nonzero(s > 0))
        dep += int(np.count_nonzero(s < 0))
        g = fd.devices.sides[side]["g_lt"] + G * fd.lsb_g
        energy += float(np.sum(g * width_code(fd, s))) * m.params.v_pulse**2 * t_lsb
    return {"potentiating": pot, "depressing": dep, "energy_J": energy}


def to_float_state(fd: FixedDevices, state: dict) -> dict:
    """The integer state in SI units: g_st = G lsb_g [S], r, q = code / 2**16."""
    t = 1.0 / SPEC.one_t
    return {side: {"g_st": st["g_st"] * fd.lsb_g, "r": st["r"] * t, "q": st["q"] * t} for side, st in state.items()}


def bias_energy_int(fd: FixedDevices, state: dict) -> float:
    """Bias energy [J] of one step that starts in the integer ``state``
    (:func:`conversion.device_layer.bias_energy` at g_st = G lsb_g)."""
    return float(dl.bias_energy(fd.mapping, fd.devices.arrays(), to_float_state(fd, state)))


# -- the float layer on the quantised parameters, and the one-step bound --------------------------
def quantised_reference(fd: FixedDevices) -> tuple:
    """(mapping, device arrays) of the float layer whose parameters are the integers of ``fd``:
    retentions 1 - d/4096, a_st (device and nominal) = a / 2**16, ppf, meta_depletion Q16, g_st_max
    = G_max lsb_g (so :func:`conversion.device_layer.plasticity` is the integer step without its floors)."""
    m, one = fd.mapping, float(1 << SPEC.eff_frac)
    c = fd.consts["p"]
    p = m.params.replace(a_st=fd.a_nom / one, ppf_gain=float(c["ppf"]) / one, meta_depletion=float(c["md"]) / one,
                         g_st_max=fd.g_max * fd.lsb_g)
    mq = m.replace(params=p)
    arrays = fd.devices.arrays()
    for side in dl.SIDES:
        cs = fd.consts[side]
        arrays[side]["a_st"] = cs["a"] / one
        arrays[side]["ret"] = {"g_st": 1 - cs["d_g"] / 4096.0, "r": 1 - float(cs["d_r"]) / 4096.0,
                               "q": 1 - float(cs["d_q"]) / 4096.0}
    return mq, arrays


def step_error_bound(fd: FixedDevices, state: dict, N, noise=None) -> np.ndarray:
    """Bound (module docstring) on |F_int - F_float| [F LSB] after one step from the integer
    ``state`` for the float layer of :func:`quantised_reference` started in the same state."""
    one = float(1 << SPEC.eff_frac)
    Nf = np.maximum(np.asarray(N, np.float64), 1)
    e_dD = 2.0 / Nf + 3.0
    total = 0.0
    for side in dl.SIDES:
        st, c = state[side], fd.consts[side]
        r = st["r"] * (1 - float(c["d_r"]) / 4096.0) / SPEC.one_t
        q = st["q"] * (1 - float(c["d_q"]) / 4096.0) / SPEC.one_t
        f = 1 + float(c["ppf"]) / one * (r + 1.0 / SPEC.one_t)
        mu = 1 - q + 1.0 / SPEC.one_t
        n = 1.0 if noise is None else noise[side] / 4096.0 + 1.0 / 8192
        rho = (c["a"] / one) * f * mu * n / (fd.a_nom / one)
        rho_q24 = f * mu * n + mu * f + f + 1
        total = total + 1 + np.maximum(rho, 1) * (e_dD + 1) + (rho * 2.0**-SPEC.drive_frac + 4 * rho_q24 * 2.0**-24) \
            * fd.g_max + 1 + 16 * np.finfo(float).eps * fd.g_max
    return total * 2.0**-fd.g_frac + 0.5
