"""The training process keeps freed memory for reuse (snn_agent.train.keep_freed_memory): an
allocation setting only, so a PPO update gives bit-identical losses and weights with and without
it.  Each variant runs in its own process (the setting is process-wide and stays)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import hashlib, json, sys
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/tests"]
import numpy as np, torch
torch.set_num_threads(1)
from snn_agent.train import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
from snn_agent.config import ModelConfig, TrainConfig
from snn_agent.policy import Policy
from snn_agent.ppo import PPO
from test_snn_training import BanditEnv
torch.manual_seed(0)
pol = Policy(ModelConfig(kind="stpn", hidden=8, n_actions=2))
learner = PPO(pol, TrainConfig(algo="ppo", num_envs=4, n_steps=6, num_minibatches=2, update_epochs=2,
                                frames=10**9, lr=1e-3))
env = BanditEnv(4, length=4, seed=1)
obs, st = env.reset(), pol.init_state(4)
losses = []
for _ in range(2):
    obs, st, stats, _ = learner.step(env, obs, st, 0)
    losses.append(stats.loss.hex())
h = hashlib.sha256()
for p in pol.state_dict().values():
    h.update(p.numpy().tobytes())
print(json.dumps({"kept": kept, "losses": losses, "weights": h.hexdigest()}))
"""


def _run(mode):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode, str(ROOT)], capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ppo_update_bit_identical_with_freed_memory_kept():
    kept, default = _run("keep"), _run("default")
    if sys.platform.startswith("linux"):
        assert kept["kept"] is True             # glibc: the setting took effect
    assert default["kept"] is False
    assert kept["losses"] == default["losses"]   # float.hex: every bit
    assert kept["weights"] == default["weights"]
