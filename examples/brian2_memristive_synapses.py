"""Use the SrTiO3 memristive synapse in your own Brian2 network.

Poisson inputs drive a leaky integrate-and-fire neuron through memristive synapses. Every
presynaptic spike is one sub-threshold update pulse (the device's default amplitude and width),
so the synapses facilitate (volatile g_st grows with input rate and relaxes with tau(V_bias))
while the long-term weight g_lt stays put. Each spike moves the membrane by G (1 mV per nS).

    .venv/bin/python examples/brian2_memristive_synapses.py [--duration 2.0] [--out out/example.png]
"""
import argparse

import brian2 as b2
import numpy as np

from brian_models.memristor_synapse import synapse_equations
from memristor.params import DeviceParams
from memristor.reference import make_devices, pulse_efficacy


def main(duration_s=2.0, out=None, seed=1):
    b2.seed(seed)
    b2.prefs.codegen.target = "numpy"          # set explicitly: "auto" compiles with cython
    p = DeviceParams()
    n_in = 40
    input_rates = np.linspace(2, 40, n_in) * b2.Hz
    devices = make_devices(p, np.full(n_in, 0.3), seed=seed)          # all at 0.3 V bias
    s_pulse = float(pulse_efficacy(p, p.v_pulse, p.t_pulse))         # efficacy of one spike's pulse

    eqs = synapse_equations(p, s="mem_s_spike", lt="0", noise="1")   # payload: a constant pulse
    inputs = b2.PoissonGroup(n_in, input_rates)
    neuron = b2.NeuronGroup(1, "dv/dt = -v / (20*ms) : volt", threshold="v > 15*mV",
                            reset="v = 0*mV", method="exact")
    syn = b2.Synapses(inputs, neuron, model=eqs.model,
                      on_pre=eqs.on_pre + "\nv_post += g_now / g_unit * mV",   # 1 mV per nS
                      namespace=dict(eqs.namespace, mem_s_spike=s_pulse, g_unit=b2.nS))
    syn.connect()
    syn.tau = devices.tau * b2.second
    syn.a_st = devices.a_st
    syn.eta_lt = devices.eta_lt
    syn.g_lt = 0.5 * (p.g_min + p.g_max) * b2.siemens
    mon = b2.StateMonitor(syn, "g_now", record=[0, n_in - 1], dt=10 * b2.ms)
    spikes = b2.SpikeMonitor(neuron)
    b2.run(duration_s * b2.second)

    g = np.asarray(mon.g_now_) * 1e9
    print(f"synapse at {input_rates[0]/b2.Hz:.0f} Hz: G {g[0, 0]:.2f} -> {g[0, -1]:.2f} nS; "
          f"at {input_rates[-1]/b2.Hz:.0f} Hz: G {g[1, 0]:.2f} -> {g[1, -1]:.2f} nS; "
          f"output spikes: {spikes.num_spikes}")
    if out:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mstpn_base.io import atomic_path
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(mon.t / b2.second, g[0], label=f"{input_rates[0]/b2.Hz:.0f} Hz input")
        ax.plot(mon.t / b2.second, g[1], label=f"{input_rates[-1]/b2.Hz:.0f} Hz input")
        ax.set(xlabel="time [s]", ylabel="G = g_lt + g_st [nS]", title="memristive synapses in Brian2")
        ax.legend()
        fig.tight_layout()
        with atomic_path(out) as tmp:
            fig.savefig(tmp)
        print(f"wrote {out}")
    return g, spikes.num_spikes


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=2.0, help="simulated time [s]")
    ap.add_argument("--out", default=None, help="PNG path for the conductance plot")
    a = ap.parse_args()
    main(a.duration, a.out)
