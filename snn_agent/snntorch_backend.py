"""The converted policy in its rate-coded integrate-and-fire form as an snnTorch module.

:class:`RateSTPNPolicy` is a ``torch.nn.Module`` built from a converted network file (rate mode,
``mstpn convert --mode rate``; a sigma-delta file is turned into the rate form with the IF
thresholds its calibration gives, see :func:`rate_thresholds`):

    obs (B,1,84,84) 0..255 -> x/255 -> Conv2d -> snn.Leaky -> Conv2d -> snn.Leaky   (T sub-steps)
    -> rate = spikes * v_threshold / T -> flatten -> STPN (z = [rate ; h_sent]) -> tanh -> heads

The IF neurons are ``snntorch.Leaky(beta=1, reset_mechanism="subtract")`` (integrate-and-fire
with reset by subtraction), run ``T`` sub-steps per frame with the membrane starting each frame at
``v_init * v_threshold``; snnTorch's default reset (applied in the step after a spike) gives the
same spike trains as conversion's RateIF (reset in the spiking step), except where the membrane
hits the threshold exactly (snnTorch fires on v > theta, RateIF on v >= theta).  Spikes use a
surrogate gradient (``snntorch.surrogate.fast_sigmoid``), so the whole module -- conv weights,
thresholds, the STPN's W, b, lam, gamma, the heads -- can be fine-tuned with BPTT; it is batched
(B environments) and runs on any torch device (``.to("cuda")``).

The STPN layer and the heads follow conversion's semantics (:mod:`conversion.graph`): z = [x ; h_sent
of the previous frame], G = W + F, N = ||G||_row + eps, a = G z / N + b, h = tanh(a), the sigma-delta
sender of h (threshold per unit), F <- clip(lam F / N + gamma h z^T, +-f_max), heads read h_sent.

NIR: the file stores Conv2d / Affine / Flatten as NIR primitives.  snnTorch's NIR importer
(``snntorch.import_nir``) needs the ``nirtorch`` package; where it is importable, the conv and
affine layers are built by snnTorch's own per-node converter; otherwise (the default install,
nirtorch is not a dependency) they are plain ``nn.Conv2d`` / ``nn.Linear`` with the file's
weights.  What snnTorch's importer cannot express and is built here: the PlasticSTPN extension
node, the SigmaDelta neurons, and RateIF's frame structure (T sub-steps per frame, membrane reset
to v_init each frame, rate read-out) -- NIR's IF node has no notion of frames.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from conversion import semantics as sem
from mstpn_base.errors import BackendUnavailableError
from mstpn_base.ops import torch_ops
from snn_agent.stpn import stpn_step

#: the node names of conversion.convert.build_network this module reads
RATE_NODES = ("conv1", "conv2", "stpn", "h", "pi", "v")


def _snn():
    try:
        import snntorch as snn
        from snntorch import surrogate
    except ImportError as exc:
        raise BackendUnavailableError(f"the snntorch backend needs snntorch ({exc}); pip install snntorch") from None
    return snn, surrogate


def rate_thresholds(net) -> dict:
    """IF thresholds {neuron node: v_threshold array}: the file's RateIF nodes, or for a sigma-delta
    file those its calibration gives for sd1/sd2 (:func:`conversion.calibrate.rate_thresholds`, as
    ``mstpn convert --mode rate`` chooses them)."""
    from conversion import graph as g
    from conversion.calibrate import Calibration
    from conversion.calibrate import rate_thresholds as from_calibration
    from conversion.backend import UnsupportedNetworkError

    if net.mode == "rate":
        return {n: net.nodes[n].v_threshold for n in net.of_type(g.RateIF)}
    cal = net.metadata.get("calibration") or {}
    if not all(k in (cal.get("p999") or {}) for k in ("sd1", "sd2")):
        raise UnsupportedNetworkError("snntorch: a sigma-delta file needs its calibration (activations of sd1, sd2) "
                                      "to choose the IF thresholds; convert with calibration or with --mode rate")
    names = {"sd1": "sd1", "sd2": "sd2"}
    return from_calibration(Calibration.from_dict(cal), {k: net.nodes[k].out_shape for k in names}, names)


def _affine_module(node, kind: str):
    """snnTorch's own NIR node converter where it is importable (needs nirtorch), else torch."""
    try:
        from snntorch.import_nir import _nir_to_snntorch_module  # noqa: F401  (imports nirtorch)
        from conversion.nirfile import _nir_node
    except ImportError:
        _nir_to_snntorch_module = None
    if _nir_to_snntorch_module is not None:
        mod = _nir_to_snntorch_module(_nir_node(node))
        if mod is not None:
            return mod.double(), "snntorch.import_nir"
    if kind == "conv":
        co, ci, kh, kw = node.weight.shape
        mod = nn.Conv2d(ci, co, (kh, kw), stride=tuple(node.stride), padding=tuple(node.padding))
    else:
        mod = nn.Linear(node.weight.shape[1], node.weight.shape[0])
    mod = mod.double()
    with torch.no_grad():
        mod.weight.copy_(torch.as_tensor(node.weight))
        mod.bias.copy_(torch.as_tensor(node.bias))
    return mod, "torch.nn"


def _leaky_steps(neuron, cur, th, v_init: float, T: int, per_step: bool = False):
    """The T spike maps of an snnTorch ``Leaky`` neuron (beta 1, reset by subtraction) with the
    membrane starting at ``v_init * th``; ``cur`` constant (B, ...) or (``per_step``) one per
    step (T, B, ...)."""
    mem = (v_init * th).expand_as(cur[0] if per_step else cur).clone()
    out = []
    for t in range(T):
        s, mem = neuron(cur[t] if per_step else cur, mem)
        out.append(s)
    return out


def if_steps(cur, th, v_init: float, T: int, per_step: bool = False):
    """:func:`_leaky_steps` as plain tensor operations, value for value: snnTorch's step
    mem <- (1 * mem + I) - reset * th with reset = [mem > th] of the previous membrane, spike =
    [mem > th]; returns the spikes (T, B, ...) as float32 (snnTorch's spike dtype)."""
    mem = (v_init * th).expand_as(cur[0] if per_step else cur).clone()
    spk = torch.empty((T, *mem.shape), dtype=torch.float32, device=mem.device)
    reset = mem > th
    for t in range(T):
        mem.add_(cur[t] if per_step else cur)
        mem.sub_(reset * th)
        torch.gt(mem, th, out=reset)
        spk[t] = reset
    return spk


class RateSTPNPolicy(nn.Module):
    """``logits, value, state, extras = module(obs, state)``; ``state=None`` starts an episode."""

    def __init__(self, net, steps: int | None = None):
        super().__init__()
        from conversion import graph as g
        from conversion.backend import UnsupportedNetworkError

        snn, surrogate = _snn()
        for k, kind in zip(RATE_NODES, (g.Conv2d, g.Conv2d, g.PlasticSTPN, g.SigmaDelta, g.Affine, g.Affine)):
            if not isinstance(net.nodes.get(k), kind):
                raise UnsupportedNetworkError(f"snntorch: expects the Pong network of mstpn convert (node {k!r} "
                                              f"of kind {kind.__name__})")
        thr = rate_thresholds(net)
        self.neuron_names = list(thr)                       # if1, if2 (or sd1, sd2)
        if net.mode == "rate":
            self.steps = int(steps or net.nodes[self.neuron_names[0]].steps)
            self.v_init = float(net.nodes[self.neuron_names[0]].v_init)
        else:
            self.steps, self.v_init = int(steps or g.DEFAULT_RATE_STEPS), 0.5
        scale = [np.unique(net.nodes[n].scale) for n in net.of_type(g.Scale)]
        self.scale = float(scale[0][0]) if scale else 1.0
        self.conv1, src1 = _affine_module(net.nodes["conv1"], "conv")
        self.conv2, _ = _affine_module(net.nodes["conv2"], "conv")
        self.pi, _ = _affine_module(net.nodes["pi"], "affine")
        self.v, _ = _affine_module(net.nodes["v"], "affine")
        self.layer_source = src1
        grad = surrogate.fast_sigmoid()
        self.if1 = snn.Leaky(beta=1.0, threshold=torch.as_tensor(thr[self.neuron_names[0]]),
                             reset_mechanism="subtract", spike_grad=grad)
        self.if2 = snn.Leaky(beta=1.0, threshold=torch.as_tensor(thr[self.neuron_names[1]]),
                             reset_mechanism="subtract", spike_grad=grad)
        st = net.nodes["stpn"]
        d = lambda a: nn.Parameter(torch.as_tensor(np.asarray(a, np.float64)))  # noqa: E731
        self.W, self.b, self.lam, self.gamma = d(st.W), d(st.b), d(st.lam), d(st.gamma)
        self.f_max, self.norm_eps = float(st.f_max), float(st.norm_eps)
        self.register_buffer("h_threshold", torch.as_tensor(np.asarray(net.nodes["h"].threshold, np.float64)))
        self.hidden = st.hidden_size

    def init_state(self, batch: int, device=None):
        dev = device or self.W.device
        H, K = self.W.shape
        z = lambda *s: torch.zeros(*s, dtype=self.W.dtype, device=dev)  # noqa: E731
        return {"F": z(batch, H, K), "h_sent": z(batch, H)}

    def forward(self, obs, state=None):
        x = torch.as_tensor(obs, device=self.W.device).to(self.W.dtype)
        if x.dim() == 3:
            x = x.unsqueeze(1)
        B = x.shape[0]
        state = state or self.init_state(B, x.device)
        T = self.steps
        cur1 = self.conv1(x * self.scale)                    # graded input: constant current
        th1, th2 = self.if1.threshold, self.if2.threshold
        # if1 over all T sub-steps first (its input is constant), then conv2 on all T spike maps in one
        # batched call (no feedback inside the conv segment, so the order is the same as step by step)
        fast = not torch.is_grad_enabled()                   # inference: the same steps as plain tensor ops
        spk1 = (if_steps(cur1, th1, self.v_init, T) if fast
                else torch.stack(_leaky_steps(self.if1, cur1, th1, self.v_init, T)))   # (T, B, C1, H1, W1)
        cur2 = self.conv2((spk1 * th1).flatten(0, 1)).unflatten(0, (T, B))
        if fast:
            cnt2 = if_steps(cur2, th2, self.v_init, T, per_step=True).sum(0)
        else:
            cnt2 = torch.zeros_like(cur2[0])
            for s2 in _leaky_steps(self.if2, cur2, th2, self.v_init, T, per_step=True):
                cnt2 = cnt2 + s2
        cnt1 = spk1.sum(0)
        r1 = cnt1 * th1 / T
        r2 = cnt2 * th2 / T
        xin = r2.reshape(B, -1)
        f_max = self.f_max if np.isfinite(self.f_max) else None
        h, F, _ = stpn_step(self.W, self.b, self.lam, self.gamma, xin, state["h_sent"], state["F"], f_max=f_max,
                            norm_eps=self.norm_eps)
        _, h_sent, fire = sem.sigma_delta(torch_ops(), h, state["h_sent"], self.h_threshold)
        logits = self.pi(h_sent)
        value = self.v(h_sent).squeeze(-1)
        extras = {"rate1": r1, "rate2": r2, "h": h, "h_sent": h_sent, "spikes1": cnt1, "spikes2": cnt2,
                  "h_events": fire}
        return logits, value, {"F": F, "h_sent": h_sent}, extras


class SnnTorchRunner:
    """Frame-by-frame runner (batch 1) of :class:`RateSTPNPolicy` (the contract of :mod:`conversion.backend`)."""

    name = "snntorch"

    def __init__(self, net, steps: int | None = None, device: str = "cpu"):
        from conversion.backend import logits_node

        self.net = net
        self.module = RateSTPNPolicy(net, steps).to(device).eval()
        self.device = device
        self.state = None
        self.logits_name = logits_node(net)
        self.fan2 = None

    def reset(self):
        self.state = None

    @torch.no_grad()
    def step(self, obs):
        from conversion.backend import StepOut

        x = torch.as_tensor(np.asarray(obs, np.float64)).reshape(1, 1, 84, 84).to(self.device)
        logits, value, self.state, ex = self.module(x, self.state)
        n1, n2 = self.module.neuron_names
        out = StepOut(logits[0].cpu().numpy().copy())
        out.acts = {n1: ex["rate1"].reshape(-1).cpu().numpy(), n2: ex["rate2"].reshape(-1).cpu().numpy(),
                    "h": ex["h_sent"][0].cpu().numpy(), self.logits_name: out.logits.copy(),
                    "value": value.reshape(-1).cpu().numpy()}
        if self.fan2 is None:   # synapses leaving each if1 unit (conv2 fan-out, exact at the edges)
            from conversion.ops import conv_fanout

            c2 = self.net.nodes["conv2"]
            self.fan2 = conv_fanout(c2.in_shape, c2.weight.shape, c2.stride, c2.padding).reshape(-1)
        s1 = ex["spikes1"].reshape(-1).cpu().numpy()
        out.events = {n1: int(s1.sum()), n2: int(ex["spikes2"].sum()), "h": int(ex["h_events"].sum())}
        # synaptic operations of the events: if1 spikes x conv2 fan-out, h events x (heads' inputs);
        # the STPN layer reads the if2 rates densely (as in the NumPy simulator's rate form)
        out.synops = {n1: int(s1 @ self.fan2), n2: 0, "h": int(ex["h_events"].sum()) * int(logits.shape[1] + 1)}
        return out

    def close(self):
        pass


def make_runner(net, **options):
    return SnnTorchRunner(net, **options)
