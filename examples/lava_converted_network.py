"""The converted STPN policy inside your own Lava graph.

    python examples/lava_converted_network.py [--checkpoint random:0] [--frames 8] [--fixed-point]

Builds the converted event-driven network from Lava's own processes (Delta, Conv, SigmaDelta,
Dense, Sigma and the project's plastic STPN layer; lava_procs.network.lava_processes), feeds it
recorded Pong frames from a lava RingBuffer source of your own, reads the logits head's Sigma with
a lava RingBuffer sink, and checks the greedy actions against the NumPy reference simulator on the
same frames.  One frame occupies ``graph.period`` Lava time steps (a synapse delivers one step
later); the Delta encoder sees the frame, in Lava's (X, Y, C) layout, in each of them.  The first
frame runs with ``graph.run_first_frame``: in floating point it switches each SigmaDelta layer's
bias on at the sub-step its first frame arrives (the float reference has no pre-phase).
"""
from __future__ import annotations

import argparse

import numpy as np

import lava_procs  # noqa: F401  (Python 3.11 compatibility hook before lava is imported)
from conversion.numpy_backend import SimRunner
from lava_procs.network import lava_processes, run_config, to_lava
from snn_agent.export import convert_with_calibration, load_source
from snn_agent.play import record_frames


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="random:0", help="policy checkpoint or random[:SEED] (default: random:0)")
    ap.add_argument("--frames", type=int, default=8, help="recorded frames to run (default: 8)")
    ap.add_argument("--fixed-point", action="store_true", help="bit-accurate fixed_pt models (default: floating_pt)")
    args = ap.parse_args(argv)
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    policy, env_cfg, _ = load_source(args.checkpoint)
    net = convert_with_calibration(policy, env_cfg, calib_frames=30, log=lambda msg: None)
    frames = record_frames(net, args.frames, seed=0, policy=policy)

    graph = lava_processes(net, fixed_point=args.fixed_point)
    T, P = len(frames), graph.period
    held = np.stack([to_lava(f.reshape(net.nodes["input"].shape)) for f in frames])   # (T, X, Y, C)
    data = np.repeat(held, P, axis=0).transpose(1, 2, 3, 0)                         # frame k at steps kP..kP+P-1
    source = Source(data=data)
    source.s_out.connect(graph.input_port)
    n_logits = graph.sizes["logits"]
    sink = Sink(shape=(n_logits,), buffer=T * P)      # the logits head's Sigma: sum of W h
    graph.outputs["logits"].connect(sink.a_in)
    try:
        cfg = run_config(args.fixed_point)
        # the first frame: floating_pt switches each SigmaDelta bias on when its first frame arrives
        # (Var.set between single steps; fixed_pt: Lava's native pre-phase, one run of P steps)
        graph.run_first_frame(source, cfg)
        if T > 1:
            source.run(condition=RunSteps(num_steps=(T - 1) * P), run_cfg=cfg)
        rec = sink.data.get()                          # (n_logits, T * P)
    finally:
        source.stop()
    # the logits layer computes in its own sub-step (its depth - 1) of every frame
    logits = rec[:, P - 1::P].T + graph.bias["logits"]   # logits = bias + the accumulated W h
    if args.fixed_point:
        from conversion.backend import value_exponent
        logits = logits * 2.0 ** value_exponent(net, "logits")
    ref = SimRunner(net, fixed=args.fixed_point)
    ref.reset()
    want = np.stack([ref.step(f).logits for f in frames])
    same = np.mean(np.argmax(logits, 1) == np.argmax(want, 1))
    print(f"{'fixed_pt' if args.fixed_point else 'floating_pt'}: {T} frames x {P} Lava steps; "
          f"actions equal to the NumPy reference on {same:.0%} of the frames; "
          f"max |logit difference| {np.max(np.abs(logits - want)):.2e}")
    return 0 if same == 1.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
