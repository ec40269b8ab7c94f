"""Plasticity ablations of the shipped STPN and m-STPN (ideal rule, PyTorch, batched greedy games).

Conditions (each a change of the trained parameters at evaluation time, nothing retrained):

* ``full``: as trained.
* ``gamma0``: gamma = 0.  F starts every game at 0 and never receives a Hebbian increment, so
  F = 0 throughout: the layer runs on its long-term weights W only (h = tanh(W z / N + b)).
  This is therefore also the "long-term weights only" ablation (the two are the same network).
* ``lam0``: lambda = 0.  F_{t+1} = gamma h_{t+1} z_t^T: the short-term weights hold one step of
  Hebbian trace and forget everything older.

Protocols: sticky actions 0.25 (the standard ALE protocol, Machado et al. 2018) and the
deterministic emulator, the same game seeds for every condition (snn_agent.evaluate; seeds from
1.5e9, never used in training).  Writes OUT/summary.json and OUT/README.md (atomically).

    .venv/bin/python scripts/plasticity_ablations.py --episodes 30 --out results/plasticity_ablations
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mstpn_base.io import atomic_write_json, atomic_write_text
from snn_agent.checkpoint import load_policy, read_metadata
from snn_agent.config import EVAL_SEED_BASE
from snn_agent.evaluate import describe_protocol, evaluate, protocol_env, protocol_record

CONDITIONS = {
    "full": "as trained",
    "gamma0": "gamma = 0 (F = 0 throughout: long-term weights only)",
    "lam0": "lambda = 0 (F holds one step of Hebbian trace)",
}
PROTOCOLS = {"sticky": 0.25, "deterministic": 0.0}


def ablate(policy, condition: str):
    """The policy with its core's effective gamma or lambda set to 0 (in place; returns it)."""
    core = policy.core
    if condition == "full":
        return policy
    original = core.effective_params

    def effective_params():
        p = dict(original())
        key = {"gamma0": "gamma", "lam0": "lam"}[condition]
        p[key] = torch.zeros_like(p[key])
        return p

    core.effective_params = effective_params
    return policy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["stpn", "mstpn"], help="artifacts/<name>/policy.safetensors")
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=EVAL_SEED_BASE)
    ap.add_argument("--num-envs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("results/plasticity_ablations"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    summary_path = args.out / "summary.json"
    # the header's tensor digest (load_policy verifies it when each condition loads the policy)
    digest = {m: read_metadata(Path("artifacts") / m / "policy.safetensors").get("sha256") for m in args.models}
    rows = json.loads(summary_path.read_text())["rows"] if summary_path.exists() else []
    # rows of a policy file that has since changed are measured again
    rows = [r for r in rows if r["model"] not in digest or r.get("policy_sha256") == digest[r["model"]]]
    done = {(r["model"], r["condition"], r["protocol"], r["n"]) for r in rows}
    for model in args.models:
        for protocol in args.protocols:
            for cond in args.conditions:
                if (model, cond, protocol, args.episodes) in done:
                    continue
                policy, meta = load_policy(Path("artifacts") / model / "policy.safetensors", device="cpu")
                env = protocol_env(meta["config"].env, PROTOCOLS[protocol])
                t0 = time.perf_counter()
                res = evaluate(ablate(policy, cond), env, episodes=args.episodes, seed=args.seed,
                               num_envs=args.num_envs, progress=False)
                rows = [r for r in rows if (r["model"], r["condition"], r["protocol"]) != (model, cond, protocol)]
                rows.append({"model": model, "policy_sha256": digest[model], "trained_frames":
                             meta.get("progress", {}).get("frames"), "condition": cond, "protocol": protocol,
                             "n": args.episodes,
                             "mean": res["mean"], "std": res["std"], "ci95": res["ci95"], "scores": res["scores"],
                             "agent_steps": res["agent_steps"], "truncated": sum(res["truncated"]),
                             "seconds": round(time.perf_counter() - t0, 1),
                             "protocol_record": protocol_record(env, args.episodes, args.seed, None)})
                print(f"{model:6s} {protocol:13s} {cond:7s} {res['mean']:+6.2f} +- {res['std']:.2f} "
                      f"{_ci(res['ci95'])}", flush=True)
                atomic_write_json(summary_path, {"conditions": CONDITIONS, "rows": rows})
    atomic_write_text(args.out / "README.md", render(rows, args))
    return 0


def _ci(ci) -> str:
    """A 95 % interval as text; one game has none."""
    return "-" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def render(rows, args) -> str:
    lines = ["# Plasticity ablations: the shipped STPN and m-STPN (ideal rule)", "",
             "Command (2-core machine, one core, PyTorch float32, batched greedy games):", "",
             f"    .venv/bin/python scripts/plasticity_ablations.py --episodes {args.episodes} --out {args.out}", "",
             "Conditions, set at evaluation time (nothing retrained):", ""]
    lines += [f"* `{k}`: {v}" for k, v in CONDITIONS.items()]
    if rows:
        lines += ["", f"Protocol: {describe_protocol(rows[0]['protocol_record'])} (sticky rows); the deterministic "
                  "rows use the same seeds with sticky actions 0.", ""]
    policies = {r["model"]: (r.get("policy_sha256"), r.get("trained_frames")) for r in rows}
    lines += [f"* `artifacts/{m}/policy.safetensors`: tensor SHA-256 {(sha or '?')[:12]}..., "
              f"{'?' if frames is None else f'{frames:,}'} trained frames" for m, (sha, frames) in sorted(policies.items())]
    lines += ["", "| model | condition | protocol | n | mean | std | 95 % CI | mean steps |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["protocol"] != "sticky", list(CONDITIONS).index(r["condition"]))):
        steps = sum(r["agent_steps"]) / len(r["agent_steps"])
        lines.append(f"| {r['model']} | {r['condition']} | {r['protocol']} | {r['n']} | {r['mean']:+.2f} | "
                     f"{r['std']:.2f} | {_ci(r['ci95'])} | {steps:,.0f} |")
    lines += ["", "95 % CI: Student t over the n games (snn_agent.evaluate.mean_ci). Every game in `summary.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
