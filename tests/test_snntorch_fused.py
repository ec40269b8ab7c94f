"""The snnTorch rate form's fused CPU kernel (if1 -> conv2 -> if2 over the T sub-steps, event-driven)
against its torch path (snnTorch's IF step as tensor operations on all sub-steps, conv2 once on the
T spike maps stacked as the batch) and against snntorch.Leaky stepped one sub-step at a time.

Tolerance: none.  The kernel takes the same float64 IF steps; its conv sums the same products
(th1 * w) in another order, so the currents of if2 differ by rounding (asserted below 1e-12
relative) and the spike counts, and hence the logits, are asserted equal exactly.
"""
import numpy as np
import pytest
import torch
from torch import nn

snn = pytest.importorskip("snntorch")

from snn_agent import snntorch_backend as sb  # noqa: E402

needs_kernel = pytest.mark.skipif(not sb.KERNEL_AVAILABLE, reason="numba is not installed")


def _torch_counts(cur1, th1, conv, th2, T):
    spk1 = sb.if_steps(cur1, th1, 0.5, T)
    cur2 = conv((spk1 * th1).flatten(0, 1)).unflatten(0, (T, cur1.shape[0]))
    return spk1.sum(0), sb.if_steps(cur2, th2, 0.5, T, per_step=True).sum(0), cur2


@needs_kernel
@pytest.mark.parametrize("kernel,stride,padding", [(4, 2, 0), (3, 1, 1), (5, 3, 2)])
def test_fused_counts_equal_torch_path(kernel, stride, padding):
    g = torch.Generator().manual_seed(kernel)
    conv = nn.Conv2d(3, 5, kernel, stride=stride, padding=padding).double()
    th1 = torch.rand(3, 1, 1, generator=g, dtype=torch.float64) + 0.25
    cur1 = torch.rand(2, 3, 11, 11, generator=g, dtype=torch.float64) * 1.2 - 0.2
    cur1[0, 0, 0, :] = th1[0, 0, 0] * 0.5            # if1 membrane lands exactly on the threshold
    with torch.no_grad():
        oh = conv(cur1[:1]).shape[-1]
        th2 = torch.rand(5, oh, oh, generator=g, dtype=torch.float64) * 0.3 + 0.05
        T = 48
        c1, c2, cur2 = _torch_counts(cur1, th1, conv, th2, T)
        f1, f2 = sb.rate_counts_fused(cur1, th1, conv, th2, 0.5, T)
    assert f1.dtype == c1.dtype and f2.dtype == c2.dtype == torch.float32
    assert torch.equal(f1, c1) and torch.equal(f2, c2)
    assert c1.sum() > 0 and c2.sum() > 0 and (cur2 < 0).any()     # spikes, and negative currents into if2


@needs_kernel
def test_fused_policy_equals_torch_path_and_snntorch_leaky_over_frames():
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=1), mode="rate", rate_steps=32)
    mod = sb.RateSTPNPolicy(net).eval()
    obs = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (4, 2, 1, 84, 84)), dtype=torch.float64)
    states = {"fused": None, "torch": None, "leaky": None}
    for frame in obs:                                      # 4 frames, batch 2, the STPN state carried
        out = {}
        for path in states:
            mod.fused = path == "fused"
            with torch.set_grad_enabled(path == "leaky"):   # grad enabled: snntorch.Leaky step by step
                logits, value, states[path], ex = mod(frame, states[path])
            out[path] = (logits.detach(), value.detach(), ex["spikes1"].detach(), ex["spikes2"].detach())
        for path in ("torch", "leaky"):
            for a, b in zip(out["fused"], out[path]):
                assert torch.equal(a, b), path
        assert out["fused"][2].sum() > 0 and out["fused"][3].sum() > 0


@needs_kernel
def test_runner_fused_and_torch_path_report_the_same():
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import ModelConfig

    net = convert_policy(build_policy(ModelConfig(hidden=8, n_actions=3), seed=2), mode="rate", rate_steps=16)
    fused, plain = sb.SnnTorchRunner(net), sb.SnnTorchRunner(net)
    plain.module.fused = False
    for obs in np.random.default_rng(2).integers(0, 256, (3, 84, 84)):
        a, b = fused.step(obs), plain.step(obs)
        assert np.array_equal(a.logits, b.logits)
        assert a.events == b.events and a.synops == b.synops
        assert a.acts.keys() == b.acts.keys() and all(np.array_equal(a.acts[k], b.acts[k]) for k in a.acts)
