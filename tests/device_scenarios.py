"""Shared device-model test scenario (used by the fixed-point and the Lava tests)."""
from memristor import reference as ref
from memristor.params import DeviceParams


def scenario(n_steps=400, **changes):
    """4 devices at 4 biases with d2d/c2c noise: ST potentiation train, paired pulses (facilitation),
    LT potentiation and depression (64 levels), a burst, ST depression, then ~300 steps of relaxation."""
    p = DeviceParams().replace(**changes)
    batch = ref.make_devices(p, [0.0, 0.2, 0.4, 0.6], seed=3)
    w = p.t_ref  # s = 1 at (v_ref, t_ref); here s ranges over 0.44 .. 3.4
    pulses = [(5 + 10 * i, 0, 0.8, w) for i in range(6)]
    pulses += [(t + 30 * i, 1, 1.0, 4 * w) for i in range(4) for t in (10, 11)]
    pulses += [(20 + 7 * i, 2, 1.3, w) for i in range(5)] + [(80 + 5 * i, 2, -1.3, w) for i in range(3)]
    pulses += [(3 + i, 3, 0.9, 2 * w) for i in range(8)] + [(40 + 3 * i, 3, -1.0, w) for i in range(4)]
    pulses = [pl for pl in pulses if pl[0] < n_steps]
    return batch, ref.make_drive(p, n_steps, 4, 0.01, pulses, seed=5), [1e-9, 2e-9, 5e-9, 8e-9]


def small_mstpn(seed: int = 3, gamma_seed: int = 0):
    """A small m-STPN policy (H = 8, 3 actions, float64) with large plasticity: gamma_raw drawn
    uniformly in [-0.3, 0.3] from ``gamma_seed`` (the device-in-the-loop tests' network)."""
    import torch

    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    pol = build_policy(ModelConfig(kind="mstpn", hidden=8, n_actions=3), seed=seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(gamma_seed)
        pol.core.gamma_raw.copy_(torch.empty(pol.core.gamma_raw.shape).uniform_(-0.3, 0.3, generator=g))
    return pol.double()
