"""Speed of the Pong pipeline on this machine: environment steps/s, A2C and PPO training steps/s.

    python benchmarks/bench_training.py [--seconds 6] [--num-envs 16] [--threads 1] [--algos a2c,ppo]

Prints, as numbers: ale-py vector env agent steps/s (random actions, sticky actions 0.25, one env
thread), then for each core (stpn, mstpn, lstm) A2C training agent steps/s (rollout with
autograd + update, 20-step rollouts; for the plastic cores both eager and with the
torch.compile'd step that `mstpn train` uses, and their ratio), PPO training agent steps/s
(compiled step; rollouts of --ppo-steps steps, 4 epochs, 4 minibatches of whole environments:
one no-grad rollout plus 4 forward/backward passes per sample), each also as a fraction of the
env's own steps/s (``_over_env``: 1 would mean training costs nothing beyond the emulator), and
greedy inference steps/s.  One agent step = 4 emulator frames.  The process keeps freed memory
for reuse as `mstpn train` does (:func:`snn_agent.train.keep_freed_memory`); ``--malloc default``
leaves glibc's default (freed blocks trimmed or unmapped) to measure the difference.  Run it
under ``taskset -c N`` to measure one core.  A few minutes with the defaults (including compilation).

``--stpn-kernel`` compares, in the same run, the STPN's two training steps: the torch.compile'd
(inductor) step and the fused numba kernels (snn_agent/stpn_kernel.py, what ``compile_step``
selects): forward and backward ms per layer step (b = 4 games, 128-step sequences as in a PPO
minibatch) and PPO training agent steps/s, alternating the two ``--rounds`` times, with the ratios.
``--kernel-model mstpn`` does the same for the m-STPN (clip, c2c noise, quantised W), whose
reference arm also recomputes W, lam, gamma at every step instead of once per sequence.

``--noise-replay`` measures the m-STPN's PPO (kernel step) with the rollout's cycle-to-cycle noise
replayed in the re-runs (what training does) against fresh draws in every re-run step (as before),
alternating the two ``--rounds`` times in one process, with the ratio.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _timed(fn, seconds: float) -> tuple[float, float]:
    """Run ``fn`` (returns steps done) once to warm up, then repeatedly for ``seconds``: (steps per
    second of wall time, steps per second of this process's CPU time: all its threads, less
    sensitive than wall time to other jobs on the same core)."""
    fn()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per item")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="stpn,mstpn,lstm")
    ap.add_argument("--algos", default="a2c,ppo")
    ap.add_argument("--ppo-steps", type=int, default=128, help="PPO rollout length [agent steps]")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep freed memory for reuse (as training does) or glibc's default")
    ap.add_argument("--stpn-kernel", action="store_true",
                    help="only the STPN: inductor step vs numba kernels, per layer step and PPO, same run")
    ap.add_argument("--rounds", type=int, default=3, help="alternations for --stpn-kernel")
    ap.add_argument("--kernel-model", choices=("stpn", "mstpn"), default="stpn",
                    help="the layer --stpn-kernel measures (mstpn: reference = inductor step with W, lam, "
                         "gamma recomputed every step, as before the kernels covered it)")
    ap.add_argument("--noise-replay", action="store_true",
                    help="only the m-STPN's PPO: recorded noise replayed in the re-runs vs fresh draws, same run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from snn_agent.train import keep_freed_memory

    kept = args.malloc == "keep" and keep_freed_memory()
    from snn_agent.a2c import A2C
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import RunConfig
    from snn_agent.envs import PongVecEnv
    from snn_agent.ppo import PPO

    B = args.num_envs
    algos = args.algos.split(",")
    print(f"# torch {torch.__version__}, {args.threads} torch thread(s), {B} envs, 1 env thread, "
          f"freed memory {'kept' if kept else 'returned (glibc default)'}")
    env = PongVecEnv(RunConfig().env, B, seed=0, num_threads=1)
    env.reset()
    rng = np.random.default_rng(0)

    def env_steps():
        env.step(rng.integers(0, env.n_actions, B))
        return B

    env_sps, env_cpu = _timed(env_steps, args.seconds)
    print(f"env_agent_steps_per_s {env_sps:.0f}")
    print(f"env_agent_steps_per_cpu_s {env_cpu:.0f}")
    if args.stpn_kernel or args.noise_replay:
        (_mstpn_noise_replay if args.noise_replay else _stpn_kernel_vs_inductor)(env, env_sps, B, args)
        env.close()
        return
    for kind in args.models.split(","):
        cfg = RunConfig.from_dict({"model": {"kind": kind}, "train": {"num_envs": B, "n_steps": 20}})
        pol = build_policy(cfg, seed=0)
        learner = A2C(pol, cfg.train)
        box = {"obs": env.reset(), "st": pol.init_state(B)}

        def train_steps():
            box["obs"], box["st"], _, n = box["learner"].step(env, box["obs"], box["st"], 0)
            return n

        box["learner"] = learner
        if "a2c" in algos:
            tr = _timed(train_steps, args.seconds)[0]
        if hasattr(pol.core, "compile_step"):
            pol.core.compile_step()
        if "a2c" in algos:
            trc = _timed(train_steps, args.seconds)[0] if hasattr(pol.core, "compile_step") else tr
            if hasattr(pol.core, "compile_step"):
                print(f"{kind}_train_compiled_agent_steps_per_s {trc:.0f}")
                print(f"{kind}_compiled_over_eager {trc / tr:.2f}")
            print(f"{kind}_a2c_agent_steps_per_s {trc:.0f}")
            print(f"{kind}_a2c_over_env {trc / env_sps:.3f}")
        if "ppo" in algos:
            pcfg = RunConfig.from_dict({"model": {"kind": kind}, "train": {
                "algo": "ppo", "num_envs": B, "n_steps": args.ppo_steps, "num_minibatches": 4, "update_epochs": 4,
                "lr": 2.5e-4, "grad_clip": 0.5}})
            box["learner"], box["st"] = PPO(pol, pcfg.train), pol.init_state(B)
            tp, ppo_cpu = _timed(train_steps, args.seconds)
            print(f"{kind}_ppo_agent_steps_per_s {tp:.0f}")
            print(f"{kind}_ppo_over_env {tp / env_sps:.3f}")
            print(f"{kind}_ppo_agent_steps_per_cpu_s {ppo_cpu:.0f}")
            print(f"{kind}_ppo_over_env_cpu {ppo_cpu / env_cpu:.3f}")
        if hasattr(pol.core, "compile_step"):
            pol.core.step_fn = type(pol.core).step_fn        # back to eager for the inference number
        pol.eval()
        st = pol.init_state(B)
        obs = env.reset()

        @torch.no_grad()
        def infer_steps():
            nonlocal st, obs
            logits, _, st, _ = pol(obs, st)
            obs, _, _, _ = env.step(logits.argmax(-1).numpy())
            return B

        inf = _timed(infer_steps, args.seconds / 2)[0]
        if "a2c" in algos:
            print(f"{kind}_train_agent_steps_per_s {tr:.0f}" + (" (eager)" if hasattr(pol.core, "compile_step") else ""))
        print(f"{kind}_greedy_agent_steps_per_s {inf:.0f}")
    env.close()


def _layer_step_ms(layer, b: int, T: int) -> tuple[float, float]:
    """(forward, backward) ms per step of ``layer`` (its current ``step_fn``) over a T-step sequence of b games with
    gradients, a loss on every h (the Pong torso's 2,592 features, random)."""
    g = torch.Generator().manual_seed(0)
    xs = torch.rand(T, b, layer.input_size, generator=g)
    st = layer.init_state(b)
    t0 = time.perf_counter()
    hs = []
    for x in xs.unbind(0):
        h, st, _ = layer(x, st)
        hs.append(h)
    loss = torch.stack(hs).square().sum()
    t1 = time.perf_counter()
    layer.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    return 1e3 * (t1 - t0) / T, 1e3 * (t2 - t1) / T


def _stpn_kernel_vs_inductor(env, env_sps, B, args) -> None:
    from snn_agent.stpn import STPN, compiled_stpn_step, training_stpn_step

    steps = {"inductor": compiled_stpn_step(), "kernel": training_stpn_step()}
    kind = args.kernel_model
    pol, train_steps = _ppo_training(kind, env, B, args)
    core = pol.core
    layer_ms = {k: [] for k in steps}
    ppo = {k: [] for k in steps}

    def use(name):
        core.step_fn = steps[name]
        if kind == "mstpn":       # the reference recomputes the constrained parameters every step
            if name == "inductor":
                core.effective_params = lambda: STPN.effective_params(core)
            else:
                core.__dict__.pop("effective_params", None)      # the class's: once per sequence

    for name in steps:                           # compile / warm up both
        use(name)
        _layer_step_ms(core, 4, 8)
    for _ in range(args.rounds):
        for name in steps:
            use(name)
            layer_ms[name].append(_layer_step_ms(core, 4, 128))
            ppo[name].append(_timed(train_steps, args.seconds)[0])
    for name in steps:
        fwd = np.median([m[0] for m in layer_ms[name]])
        bwd = np.median([m[1] for m in layer_ms[name]])
        print(f"{kind}_{name}_forward_ms_per_step {fwd:.3f}")
        print(f"{kind}_{name}_backward_ms_per_step {bwd:.3f}")
        print(f"{kind}_{name}_ppo_agent_steps_per_s {np.median(ppo[name]):.1f}")
        print(f"{kind}_{name}_ppo_over_env {np.median(ppo[name]) / env_sps:.3f}")
    med = {k: (np.median([m[0] for m in v]), np.median([m[1] for m in v])) for k, v in layer_ms.items()}
    print(f"{kind}_forward_inductor_over_kernel {med['inductor'][0] / med['kernel'][0]:.2f}")
    print(f"{kind}_backward_inductor_over_kernel {med['inductor'][1] / med['kernel'][1]:.2f}")
    print(f"{kind}_ppo_kernel_over_inductor {np.median(ppo['kernel']) / np.median(ppo['inductor']):.2f}")
    print(f"{kind}_ppo_rounds_inductor " + " ".join(f"{v:.1f}" for v in ppo["inductor"]))
    print(f"{kind}_ppo_rounds_kernel " + " ".join(f"{v:.1f}" for v in ppo["kernel"]))


def _ppo_training(kind, env, B, args):
    """A fresh ``kind`` policy (seed 0) and a function that runs one PPO update on ``env`` (16 x
    --ppo-steps, 4 epochs x 4 minibatches) and returns the agent steps it took."""
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import RunConfig
    from snn_agent.ppo import PPO

    pcfg = RunConfig.from_dict({"model": {"kind": kind}, "train": {
        "algo": "ppo", "num_envs": B, "n_steps": args.ppo_steps, "num_minibatches": 4, "update_epochs": 4,
        "lr": 2.5e-4, "grad_clip": 0.5}})
    pol = build_policy(pcfg, seed=0)
    box = {"obs": env.reset(), "st": pol.init_state(B), "learner": PPO(pol, pcfg.train)}

    def train_steps():
        box["obs"], box["st"], _, n = box["learner"].step(env, box["obs"], box["st"], 0)
        return n
    return pol, train_steps


def _mstpn_noise_replay(env, env_sps, B, args) -> None:
    pol, train_steps = _ppo_training("mstpn", env, B, args)
    pol.core.compile_step()

    def use(arm):     # fresh: the core shows no noise tape, so nothing is recorded or replayed
        if arm == "fresh":
            pol.core.noise_tape = None
        else:
            pol.core.__dict__.pop("noise_tape", None)

    rates = {"replay": [], "fresh": []}
    for _ in range(args.rounds):
        for arm in rates:
            use(arm)
            rates[arm].append(_timed(train_steps, args.seconds)[0])
    for arm, v in rates.items():
        print(f"mstpn_ppo_noise_{arm}_agent_steps_per_s {np.median(v):.1f}")
        print(f"mstpn_ppo_noise_{arm}_over_env {np.median(v) / env_sps:.3f}")
        print(f"mstpn_ppo_noise_{arm}_rounds " + " ".join(f"{x:.1f}" for x in v))
    print(f"mstpn_ppo_replay_over_fresh {np.median(rates['replay']) / np.median(rates['fresh']):.2f}")


if __name__ == "__main__":
    main()
