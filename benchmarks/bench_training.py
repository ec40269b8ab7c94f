"""Speed of the Pong pipeline on this machine: environment steps/s and A2C training steps/s.

    python benchmarks/bench_training.py [--seconds 6] [--num-envs 16] [--threads 1]

Prints, as numbers: ale-py vector env agent steps/s (random actions), then for each core
(stpn, mstpn, lstm) A2C training agent steps/s (rollout with autograd + update; for the plastic
cores both eager and with the torch.compile'd step that `mstpn train` uses, and their ratio) and
greedy inference steps/s.  One agent step = 4 emulator frames.  About a minute with the defaults
(including compilation).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _timed(fn, seconds: float) -> float:
    """Run ``fn`` (returns steps done) once to warm up, then repeatedly for ``seconds``; steps/s."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += fn()
    return n / (time.perf_counter() - t0)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="measuring time per item")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="stpn,mstpn,lstm")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from snn_agent.a2c import A2C
    from snn_agent.checkpoint import build_policy
    from snn_agent.config import RunConfig
    from snn_agent.envs import PongVecEnv

    B = args.num_envs
    print(f"# torch {torch.__version__}, {args.threads} torch thread(s), {B} envs, 1 env thread")
    env = PongVecEnv(RunConfig().env, B, seed=0, num_threads=1)
    env.reset()
    rng = np.random.default_rng(0)

    def env_steps():
        env.step(rng.integers(0, env.n_actions, B))
        return B

    print(f"env_agent_steps_per_s {_timed(env_steps, args.seconds):.0f}")
    for kind in args.models.split(","):
        cfg = RunConfig.from_dict({"model": {"kind": kind}, "train": {"num_envs": B, "n_steps": 20}})
        pol = build_policy(cfg, seed=0)
        learner = A2C(pol, cfg.train)
        box = {"obs": env.reset(), "st": pol.init_state(B)}

        def train_steps():
            box["obs"], box["st"], _, n = learner.step(env, box["obs"], box["st"], 0)
            return n

        tr = _timed(train_steps, args.seconds)
        if hasattr(pol.core, "compile_step"):
            pol.core.compile_step()
            trc = _timed(train_steps, args.seconds)
            print(f"{kind}_train_compiled_agent_steps_per_s {trc:.0f}")
            print(f"{kind}_compiled_over_eager {trc / tr:.2f}")
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

        inf = _timed(infer_steps, args.seconds / 2)
        print(f"{kind}_train_agent_steps_per_s {tr:.0f}" + (" (eager)" if hasattr(pol.core, "compile_step") else ""))
        print(f"{kind}_greedy_agent_steps_per_s {inf:.0f}")
    env.close()


if __name__ == "__main__":
    main()
