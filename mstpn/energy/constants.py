"""Every number the energy accounting uses, each with its unit, its source and a provenance tag.

Tags: ``published`` (read from the publication named in ``source``), ``measured`` (this project's
own measurement, named), ``derived`` (computed from other constants here, formula in ``source``),
``assumption`` (a choice of this project, justified in ``source``).  docs/energy.md lists them all;
:data:`CONSTANTS` is the registry the docs and the tests walk.
"""
from __future__ import annotations

from dataclasses import dataclass

TAGS = ("published", "measured", "derived", "assumption")

WEILENMANN = "Weilenmann et al., Nat. Commun. 15, 6898 (2024), doi 10.1038/s41467-024-51093-3"
DAVIES = "Davies et al., 'Loihi: a neuromorphic manycore processor with on-chip learning', IEEE Micro 38(1), 2018"
HOROWITZ = "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014 (45 nm)"
H200_RUN = "measured on an H200 with NVML's total-energy counter, 2026-11"


@dataclass(frozen=True)
class Constant:
    """A number with its unit, provenance tag and source (citation or formula)."""

    value: float
    unit: str
    tag: str
    source: str

    def __post_init__(self):
        assert self.tag in TAGS, self.tag


# -- time base of a game ----------------------------------------------------------------------
FRAME_RATE_HZ = Constant(60.0, "Hz", "published",
                         "Atari 2600 frame rate as emulated by the Arcade Learning Environment (NTSC, ~60 Hz)")
FRAMESKIP = Constant(4, "frames/step", "assumption",
                     "agent acts every 4 emulator frames: this project's setting (DeepMind preprocessing, ale_py "
                     "AtariVectorEnv frameskip=4). The STPN reference's RLlib configuration (preprocessor_pref "
                     "'rllib', no DeepMind wrappers) reads as acting every frame: frameskip 1, dt = 1/60 s")

# -- the Pong STPN network (reference NeuromorphicComputing/STPN, rllib_nets.py) ----------------
PONG_CONV_FEATURES = Constant(2592, "1", "published",
                              "STPN input I: flattened Conv2d(16,32,k4,s2) output 32x9x9 of the reference Pong network")
PONG_HIDDEN = Constant(64, "1", "published", "STPN hidden size H of the reference Pong network")
PONG_SYNAPSES = Constant(169_984, "1", "published",
                         f"STPN synapses H*(I+H) = 64*(2592+64); {WEILENMANN}")
PONG_N_ACTIONS = Constant(6, "1", "assumption",
                          "Pong's minimal ALE action set (NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE), as the reference")

# -- the memristive synapse (publication) -----------------------------------------------------
P_IDLE_PER_SYNAPSE_W = Constant(4.3e-9, "W", "published",
                                f"idle power per synapse at G = 0 under V_bias = 0.6 V (worst case); {WEILENMANN}")
V_BIAS_WORST_V = Constant(0.6, "V", "published", f"relaxation bias applied to every synapse (worst case); {WEILENMANN}")
PUB_BIAS_J = Constant(35.6e-3, "J", "published", f"decay-bias energy of one Pong game, 169,984 synapses; {WEILENMANN}")
PUB_PULSE_J = Constant(0.4e-3, "J", "published", f"update-pulse energy of one Pong game; {WEILENMANN}")
PUB_TOTAL_J = Constant(36.0e-3, "J", "published", f"synaptic energy of one Pong game (bias + pulses); {WEILENMANN}")
PUB_GAME_SECONDS = Constant(35.6e-3 / (4.3e-9 * 169_984), "s", "derived",
                            "35.6 mJ / (4.3 nW x 169,984) = 48.7 s: the game length the bias figure implies "
                            "(inferred, not stated in the publication)")
PUB_GAME_STEPS = Constant(730, "steps", "derived",
                          "48.7 s x 60 Hz = 2,922 frames; taken as 730 agent steps of 4 frames = 2,920 frames "
                          "(48.67 s; the bias figure then comes out 0.08% low)")
PULSES_PER_SYNAPSE_STEP = Constant(1, "pulses", "assumption",
                                   "the dense STPN applies its Hebbian update F += gamma h z^T to every plastic "
                                   "synapse every agent step: one update pulse per synapse per step")

# -- GPU: the publication's A100 comparison (synaptic operations only, median of 100 runs) --------
A100_FP16_OPTIMAL_J = Constant(3463.9e-3, "J", "published",
                               f"A100 40GB fp16 'optimal' (measured at ~2^21 synapses, scaled to 169,984), per game; {WEILENMANN}")
A100_FP16_STANDARD_J = Constant(34780.5e-3, "J", "published", f"A100 fp16 'standard' (network as written), per game; {WEILENMANN}")
A100_FP32_STANDARD_J = Constant(34932.3e-3, "J", "published", f"A100 fp32 'standard', per game; {WEILENMANN}")
A100_FP32_OPTIMAL_J = Constant(6292.0e-3, "J", "published", f"A100 fp32 'optimal', per game; {WEILENMANN}")
PUB_RATIO_OPTIMAL = Constant(96, "1", "published", f"A100 fp16 optimal / memristive synapses; {WEILENMANN}")
PUB_RATIO_STANDARD = Constant(966, "1", "published", f"A100 fp16 standard / memristive synapses; {WEILENMANN}")

# -- GPU: this project's H200 (STPN layer step, 169,984 synapses, batch 1, fp32) ----------------
H200_EAGER_J_PER_STEP = Constant(19.5e-3, "J/step", "measured", f"eager PyTorch, including idle draw; {H200_RUN}")
H200_EAGER_DYN_J_PER_STEP = Constant(1.16e-3, "J/step", "measured", f"eager PyTorch, dynamic (above idle); {H200_RUN}")
H200_EAGER_STEPS_PER_S = Constant(6700, "steps/s", "measured", f"eager PyTorch throughput; {H200_RUN}")
H200_GRAPH_J_PER_STEP = Constant(5.0e-3, "J/step", "measured", f"CUDA graph, including idle draw; {H200_RUN}")
H200_GRAPH_DYN_J_PER_STEP = Constant(1.24e-3, "J/step", "measured", f"CUDA graph, dynamic (above idle); {H200_RUN}")
H200_GRAPH_STEPS_PER_S = Constant(32000, "steps/s", "measured", f"CUDA graph throughput; {H200_RUN}")
H200_IDLE_W = Constant(122.0, "W", "measured", f"H200 idle draw; {H200_RUN}")

# -- Loihi 1 --------------------------------------------------------------------------------
LOIHI_SYNOP_J = Constant(23.6e-12, "J", "published", f"energy per synaptic spike op (min); {DAVIES}")
LOIHI_TRANSPORT_J = Constant(3.5e-12, "J", "published", f"spike transport per spike (tile hop); {DAVIES}")
LOIHI_NEURON_UPDATE_J = Constant(81e-12, "J", "published", f"energy per neuron update (active); {DAVIES}")

# -- 45 nm arithmetic -----------------------------------------------------------------------
FP32_ADD_J = Constant(0.9e-12, "J", "published", f"fp32 add; {HOROWITZ}")
FP32_MULT_J = Constant(3.7e-12, "J", "published", f"fp32 multiply; {HOROWITZ}")
INT32_ADD_J = Constant(0.1e-12, "J", "published", f"int32 add; {HOROWITZ}")

# -- operation mix of the STPN rule (counted from the equations in snn_agent/stpn.py) ------------
STPN_MAC_MULTS = Constant(1, "mult/synapse/step", "derived", "forward pass G z: one multiply per synapse")
STPN_MAC_ADDS = Constant(1, "add/synapse/step", "derived", "forward pass G z: one accumulate per synapse")
STPN_UPDATE_MULTS = Constant(5, "mult/update", "derived",
                             "per plastic synapse update: G^2 (row norm), F*(1/N), lambda*(.), h*z, gamma*(.)")
STPN_UPDATE_ADDS = Constant(3, "add/update", "derived",
                            "per plastic synapse update: G = W + F, norm accumulate, lambda F/N + gamma h z")


def _registry() -> dict[str, Constant]:
    return {k: v for k, v in globals().items() if isinstance(v, Constant)}


#: name -> Constant, every constant of this module
CONSTANTS: dict[str, Constant] = _registry()
