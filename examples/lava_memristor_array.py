"""Use the memristive synapse as a Lava process in your own Lava graph.

Builds a MemristorArray (4 devices at 4 relaxation biases) fed by RingBuffers with a pulse burst,
runs it for 300 steps of 10 ms in floating point and in bit-accurate fixed point, and reads the
conductance G = g_lt + g_st from the ``g_out`` port through lava's Extractor. Connect ``g_out`` to your own process instead (e.g. a Dense layer's weight source or
a neuron's input) to use the devices as synapses.

    .venv/bin/python examples/lava_memristor_array.py
"""
import numpy as np

import lava_procs  # installs the Python 3.11 compatibility hook before lava is imported
from lava_procs.memristor import build, run_config
from memristor.params import DeviceParams
from memristor.reference import make_devices, make_drive


def main(n_steps=300, dt=0.01):
    lava_procs.require_lava()
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.extractor import Extractor

    p = DeviceParams()
    biases = [0.0, 0.2, 0.4, 0.6]
    devices = make_devices(p, biases, seed=0)
    burst = [(k, d, p.v_ref, p.t_ref) for d in range(4) for k in range(10, 20, 2)]   # 5 pulses, 20 ms apart
    drive = make_drive(p, n_steps, 4, dt, burst, seed=0)
    for fixed in (False, True):
        proc, prob = build(devices, drive, fixed_point=fixed)
        sink = Extractor(shape=(4,), buffer_size=n_steps)
        proc.g_out.connect(sink.in_port)
        g = np.empty((n_steps, 4))
        try:
            proc.run(condition=RunSteps(num_steps=n_steps, blocking=False), run_cfg=run_config(fixed))
            for k in range(n_steps):
                g[k] = sink.receive()
            proc.wait()
        finally:
            proc.stop()
        if fixed:  # integer output in units of the conductance LSB
            g = g * prob.lsb_g
        label = "fixed_pt" if fixed else "floating_pt"
        print(f"{label:12s} G after the burst [nS]: {np.round(g[20] * 1e9, 3)}; "
              f"3 s later: {np.round(g[-1] * 1e9, 3)} (bias {biases} V: higher bias, faster relaxation)")


if __name__ == "__main__":
    main()
