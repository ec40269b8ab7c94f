"""Choose the checkpoint to ship among a run's snapshots, on selection seeds kept apart from evaluation.

Every ``RUN/snapshots/*.safetensors`` and ``RUN/checkpoint_latest.safetensors`` (or the checkpoint
files given) plays ``--episodes`` greedy games under sticky actions 0.25 on seeds
SEED + i (default 1,600,000,000 + i: never a training seed, and not the evaluation seeds
1,500,000,000 + i of ``mstpn evaluate``, so the shipped policy's 30-game score is not the score it
was chosen on).  The highest mean wins (ties: more trained frames).  Results are kept per
checkpoint tensor SHA-256 in ``--out`` (default RUN/selection.json, written atomically), so a rerun
after new snapshots plays only those.

    .venv/bin/python scripts/select_checkpoint.py runs/stpn_ppo_s1
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mstpn_base.errors import MstpnError, ParameterError
from mstpn_base.io import atomic_write_json
from snn_agent.checkpoint import load_policy
from snn_agent.config import STICKY_ACTIONS
from snn_agent.evaluate import evaluate, protocol_env

SELECTION_SEED_BASE = 1_600_000_000


def candidates(paths: list[Path]) -> list[Path]:
    """The checkpoint files named, and those of every run folder named."""
    out = []
    for p in paths:
        if p.is_dir():
            out += sorted((p / "snapshots").glob("*.safetensors"))
            out += [c for c in (p / "checkpoint_latest.safetensors",) if c.exists()]
        elif p.is_file():
            out.append(p)
        else:
            raise ParameterError(f"{p}: no such run folder or checkpoint")
    if not out:
        raise ParameterError(f"no checkpoints in {', '.join(map(str, paths))}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="run folders or checkpoint files")
    ap.add_argument("--episodes", type=int, default=8, help="games per checkpoint (default: 8)")
    ap.add_argument("--seed", type=int, default=SELECTION_SEED_BASE,
                    help=f"game i is seeded SEED + i (default: {SELECTION_SEED_BASE})")
    ap.add_argument("--num-envs", type=int, default=8, help="games played in parallel (default: 8)")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (default: FIRST_RUN/selection.json)")
    args = ap.parse_args(argv)
    try:
        files = candidates(args.paths)
        out = args.out or ((args.paths[0] if args.paths[0].is_dir() else args.paths[0].parent) / "selection.json")
        done = json.loads(out.read_text())["rows"] if out.exists() else []
        key = (args.episodes, args.seed)
        rows = {r["sha256"]: r for r in done if (r["episodes"], r["seed"]) == key}
        current = []        # this call's checkpoints (a run's latest file changes as it trains)
        for f in files:
            policy, meta = load_policy(f, device="cpu")
            sha = meta.get("sha256") or str(f)
            current.append(sha)
            if sha not in rows:
                res = evaluate(policy, protocol_env(meta["config"].env, STICKY_ACTIONS), episodes=args.episodes,
                               seed=args.seed, num_envs=args.num_envs, progress=False)
                rows[sha] = {"sha256": sha, "file": str(f), "frames": meta.get("progress", {}).get("frames"),
                             "episodes": args.episodes, "seed": args.seed, "sticky": STICKY_ACTIONS,
                             "mean": res["mean"], "std": res["std"], "ci95": res["ci95"], "scores": res["scores"]}
                atomic_write_json(out, {"rows": list(rows.values())})
            r = rows[sha]
            print(f"{r['frames'] or 0:>12,} frames  {r['mean']:+6.2f} +- {r['std']:.2f}  {f}", flush=True)
        best = max((rows[s] for s in current), key=lambda r: (r["mean"], r["frames"] or 0))
        print(f"best: {best['file']} ({best['frames'] or 0:,} frames), {best['mean']:+.2f} on {args.episodes} "
              f"games, seeds {args.seed}..{args.seed + args.episodes - 1}, sticky actions {STICKY_ACTIONS}")
    except (MstpnError, OSError) as e:
        print(f"select_checkpoint: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
