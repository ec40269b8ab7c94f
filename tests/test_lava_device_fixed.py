"""The DeviceLayer process's fixed_pt model (lava_procs.memristor.layer.PyDeviceLayerFixed) alone
in Lava, against the numpy-fixed device run (conversion.device_layer_fixed): the h, z and N
integers of a 24-frame numpy-fixed run of the small quantised m-STPN (10 % stuck devices,
variability and cycle-to-cycle noise) are replayed into the process through RingBuffers; the F it
returns on every step and every device state integer (read from its Vars after 12 and after 24
steps) must equal the NumPy integers exactly, and so must the counted pulses."""
import numpy as np
import pytest

from conversion import device_layer as dl
from conversion.calibrate import calibrate
from conversion.convert import convert_policy
from conversion.quantise import quantise
from conversion.simulator import Simulator
from conversion.synthetic import pong_like_frames

from device_scenarios import small_mstpn
from lava_available import needs_lava

pytestmark = needs_lava
T, MID = 24, 12


@pytest.fixture(scope="module")
def recorded():
    net = convert_policy(small_mstpn())
    quantise(net, calibrate(net, pong_like_frames(20, seed=2)))
    m = dl.Mapping.from_block(net.nodes["stpn"].device).replace(seed=7, stuck_fraction=0.1)
    sim = Simulator(net, fixed=True, synapses="device", device=m)
    node = net.nodes["stpn"]
    rec = {"h": [], "z": [], "N": [], "F": [], "state": {}}
    for t, frame in enumerate(pong_like_frames(T, seed=1)):
        sim.step(frame[None])
        st = sim.state["stpn"]
        rec["h"].append(sim.state[node.post]["y"][0].copy())
        rec["z"].append(st["z"][0].copy())
        rec["N"].append(st["N"][0].copy())
        rec["F"].append(st["F"][0].copy())
        if t + 1 in (MID, T):
            rec["state"][t + 1] = {f"{v}_{s}": st[f"{v}_{s}"][0].copy() for s in dl.SIDES for v in dl.DEVICE_STATE}
            rec.setdefault("stats", {})[t + 1] = dict(sim.device_stats["stpn"])
    return net, sim, {k: (np.array(v) if isinstance(v, list) else v) for k, v in rec.items()}


def test_fixed_pt_device_layer_equals_numpy_fixed(recorded):
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.extractor import Extractor
    from lava.proc.io.source import RingBuffer

    from lava_procs import run_config
    from lava_procs.lifecycle import LavaRuntime
    from lava_procs.memristor.layer import DeviceLayer, counters

    net, sim, rec = recorded
    assert np.abs(rec["N"]).max() < 2**31 and np.abs(rec["z"]).max() < 2**23   # the RingBuffers' int32
    assert rec["state"][T]["g_st_m"].max() > 0 and np.count_nonzero(rec["F"][-1]) > 0
    fd = sim._dev_fixed["stpn"]
    proc = DeviceLayer(devices=sim.devices["stpn"], gamma=net.nodes["stpn"].gamma, phase=0, period=1, fixed=fd,
                       gamma_mant=net.fixed["stpn"]["gamma_mant"])
    for key, port in (("h", proc.h_in), ("z", proc.z_in), ("N", proc.norm_in)):
        RingBuffer(data=np.ascontiguousarray(rec[key].T.astype(np.int32))).s_out.connect(port)
    ext = Extractor(shape=proc.f_out.shape, buffer_size=T)
    proc.f_out.connect(ext.in_port)
    runtime = LavaRuntime(proc)
    got_F = []
    try:
        for start, stop in ((0, MID), (MID, T)):
            if start == 0:
                runtime.start(run_config(True), condition=RunSteps(num_steps=stop, blocking=False))
            else:
                proc.run(condition=RunSteps(num_steps=stop - start, blocking=False), run_cfg=run_config(True))
            got_F += [np.asarray(ext.receive()) for _ in range(start, stop)]
            proc.wait()
            for k, want in rec["state"][stop].items():
                got = np.asarray(getattr(proc, k).get())
                assert np.array_equal(got.astype(np.int64), want), (stop, k)
            c = counters(proc.counts.get())
            want = rec["stats"][stop]
            assert (c["pulses"], c["potentiating"], c["depressing"]) == (want["pulses"], want["potentiating"],
                                                                          want["depressing"])
            assert c["pulse_energy_J"] == pytest.approx(want["pulse_energy_J"], rel=1e-12)
            assert c["bias_energy_J"] == pytest.approx(want["bias_energy_J"], rel=1e-12)
        assert int(np.asarray(proc.overflow.get())[0]) == 0
    finally:
        runtime.stop()
    got_F = np.array(got_F)
    assert got_F.shape == rec["F"].shape
    for t in range(T):
        assert np.array_equal(got_F[t].astype(np.int64), rec["F"][t]), t
