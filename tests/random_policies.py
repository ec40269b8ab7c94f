"""Random policies whose logits separate the actions like a trained policy's do.

The actor-critic initialisation (snn_agent.policy.init_actor_critic) starts the policy head at
gain 0.01, so a freshly built policy's logits differ by ~1e-3 and nearly any perturbation flips
its action.  Tests of the conversion machinery (threshold tuning, state reset) need a policy with
decisive logits; this re-initialises the head orthogonally with gain 1 (deterministic in seed)."""
import torch

from snn_agent.checkpoint import build_policy


def decisive_policy(cfg, seed: int = 0, gain: float = 1.0):
    pol = build_policy(cfg, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.nn.init.orthogonal_(pol.pi.weight, gain)
    return pol
