"""Configuration of a Pong agent run: model, environment, training (JSON-serialisable dataclasses).

A config file is JSON ``{"model": {...}, "env": {...}, "train": {...}}``; missing keys take the
defaults below, unknown keys are an error (typos should not pass silently).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mstpn_base.io import read_json
from mstpn_base.errors import DataFormatError, ParameterError

MODELS = ("stpn", "mstpn", "lstm")
ALGOS = ("a2c", "ppo")

#: sticky actions of the standard ALE protocol (Machado et al., JAIR 2018): with this probability
#: the emulator repeats the previous action instead of the agent's, every emulator frame
STICKY_ACTIONS = 0.25

#: training environments are seeded below this: env seed = (train.seed * 100_003 + updates at the
#: (re)start) mod TRAIN_SEED_SPACE, its sub-environments seed, seed + 1, ..., seed + num_envs - 1
TRAIN_SEED_SPACE = 1_000_000_000
#: ``mstpn evaluate`` plays game i on seed EVAL_SEED_BASE + i by default: never a training seed
#: (training seeds < TRAIN_SEED_SPACE + num_envs <= 1,000,004,096)
EVAL_SEED_BASE = 1_500_000_000

#: action subsets of Pong's minimal action set [NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE]
ACTION_SETS = {
    "minimal": (0, 1, 2, 3, 4, 5),   # the 6 actions of the reference
    "updown": (0, 2, 3),             # NOOP, RIGHT (up), LEFT (down): same control, easier credit
}


#: the Atari emulator's frame rate [Hz]; one agent step lasts frameskip / FRAME_RATE_HZ seconds
FRAME_RATE_HZ = 60.0


@dataclass
class ModelConfig:
    """Network: conv torso (fixed as the reference) -> recurrent core (``kind``) -> heads."""

    kind: str = "stpn"           # stpn | mstpn | lstm
    hidden: int = 64             # H of the STPN / LSTM
    n_actions: int = 6           # set from env.action_set
    # m-STPN only
    dt: float = 4.0 / 60.0       # physical duration of one agent step [s]
    w_max: float = 1.0           # largest |W| in weight units (sets the conductance scale)
    quantise: bool = True        # W on the n_levels grid (STE)
    noise: bool = True           # cycle-to-cycle noise on the Hebbian updates while training
    device_params: dict | None = None   # DeviceParams.to_dict(); None = published preset

    def validate(self):
        if self.kind not in MODELS:
            raise ParameterError(f"model kind must be one of {MODELS}, got {self.kind!r}")
        if not (isinstance(self.hidden, int) and 1 <= self.hidden <= 4096):
            raise ParameterError(f"hidden must be an integer in [1, 4096], got {self.hidden!r}")
        if not (isinstance(self.n_actions, int) and self.n_actions >= 2):
            raise ParameterError(f"n_actions must be an integer >= 2, got {self.n_actions!r}")
        _positive("dt", self.dt)
        _positive("w_max", self.w_max)


@dataclass
class EnvConfig:
    """ale-py vector environment: 84x84 grayscale, one frame (no stacking), frameskip 4.

    ``repeat_action_probability``: sticky actions, 0.25 by default (the standard ALE protocol);
    0 gives the deterministic emulator (only the 0..``noop_max`` no-op starts differ per seed)."""

    game: str = "pong"
    action_set: str = "minimal"
    frameskip: int = 4
    noop_max: int = 30
    repeat_action_probability: float = STICKY_ACTIONS
    reward_clipping: bool = True
    max_episode_frames: int = 108000

    def validate(self):
        if self.action_set not in ACTION_SETS:
            raise ParameterError(f"action_set must be one of {sorted(ACTION_SETS)}, got {self.action_set!r}")
        if not (isinstance(self.frameskip, int) and self.frameskip >= 1):
            raise ParameterError(f"frameskip must be an integer >= 1, got {self.frameskip!r}")
        p = self.repeat_action_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p < 1.0):
            raise ParameterError(f"repeat_action_probability (sticky actions) must lie in [0, 1), got {p!r}")
        if not (isinstance(self.noop_max, int) and self.noop_max >= 0):
            raise ParameterError(f"noop_max must be an integer >= 0, got {self.noop_max!r}")
        if not (isinstance(self.max_episode_frames, int) and self.max_episode_frames >= self.frameskip):
            raise ParameterError(f"max_episode_frames must be an integer >= frameskip, got {self.max_episode_frames!r}")

    @property
    def actions(self) -> tuple[int, ...]:
        return ACTION_SETS[self.action_set]


@dataclass
class TrainConfig:
    """A2C or recurrent PPO with truncated BPTT (A2C defaults follow the reference where it has
    one; the PPO fields follow CleanRL's ppo_atari_lstm and apply only with ``algo = "ppo"``)."""

    algo: str = "a2c"             # a2c (snn_agent/a2c.py) | ppo (snn_agent/ppo.py)

    frames: int = 10_000_000      # emulator frames (= agent steps x frameskip)
    num_envs: int = 16
    n_steps: int = 5              # rollout length = BPTT truncation [agent steps] (baselines A2C)
    lr: float = 7e-4              # linearly decayed to 0 over ``frames``
    discount: float = 0.99
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    grad_clip: float = 40.0
    adam_eps: float = 1e-5
    seed: int = 0
    threads: int = 1              # torch intra-op threads
    env_threads: int = 1          # ale-py vector env worker threads
    compile: bool = True          # torch.compile the STPN step (same equations, ~2.5x faster on CPU)
    checkpoint_every_s: float = 180.0   # latest checkpoint (resume point)
    snapshot_every_frames: int = 500_000  # kept snapshots (pick the best one later)
    log_every_updates: int = 10
    # PPO (snn_agent/ppo.py); n_steps is the rollout length, grad_clip the gradient-norm clip
    gae_lambda: float = 0.95
    clip_coef: float = 0.1        # ratio clipped to [1 - clip_coef, 1 + clip_coef]
    clip_vloss: bool = True       # value loss clipped around the rollout's values (same clip_coef)
    update_epochs: int = 4        # passes over each rollout
    num_minibatches: int = 4      # minibatches of whole environments per pass (divides num_envs)
    norm_adv: bool = True         # advantages normalised per minibatch
    # distillation (snn_agent/distill.py) instead of A2C when a teacher checkpoint is given
    teacher: str | None = None    # checkpoint path of the teacher policy
    teacher_prob: float = 0.0     # probability that the teacher's greedy action is executed
    teacher_temperature: float = 1.0   # target softmax(teacher logits / temperature)

    def validate(self):
        if self.algo not in ALGOS:
            raise ParameterError(f"train.algo must be one of {ALGOS}, got {self.algo!r}")
        for name in ("frames", "num_envs", "n_steps", "threads", "env_threads", "log_every_updates",
                     "snapshot_every_frames", "update_epochs", "num_minibatches"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ParameterError(f"train.{name} must be a positive integer, got {v!r}")
        for name in ("lr", "grad_clip", "checkpoint_every_s", "adam_eps", "teacher_temperature"):
            _positive(f"train.{name}", getattr(self, name))
        if self.algo == "ppo" and self.num_envs % self.num_minibatches:
            raise ParameterError(f"train.num_minibatches ({self.num_minibatches}) must divide train.num_envs "
                                 f"({self.num_envs}): PPO minibatches are whole environments")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0):
            raise ParameterError(f"train.seed must be an integer >= 0, got {self.seed!r}")
        _positive("train.clip_coef", self.clip_coef)
        for name in ("discount", "gae_lambda"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ParameterError(f"train.{name} must lie in [0, 1], got {v!r}")
        for name in ("entropy_coef", "value_coef"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ParameterError(f"train.{name} must be >= 0, got {v!r}")
        if not (isinstance(self.teacher_prob, (int, float)) and 0.0 <= self.teacher_prob <= 1.0):
            raise ParameterError(f"train.teacher_prob must lie in [0, 1], got {self.teacher_prob!r}")
        if self.teacher is not None and not isinstance(self.teacher, str):
            raise ParameterError(f"train.teacher must be a checkpoint path, got {self.teacher!r}")
        if self.teacher is not None and self.algo != "a2c":
            raise ParameterError("train.teacher (distillation) replaces the RL algorithm: leave train.algo at 'a2c'")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "RunConfig":
        self.env.validate()
        self.model.n_actions = len(self.env.actions)
        self.model.validate()
        step = self.env.frameskip / FRAME_RATE_HZ
        if not math.isclose(self.model.dt, step, rel_tol=1e-9):
            raise ParameterError(f"model.dt = {self.model.dt:g} s is not the agent's step: env.frameskip "
                                 f"{self.env.frameskip} / {FRAME_RATE_HZ:g} Hz = {step:g} s (the m-STPN's lambda "
                                 "range depends on it); set both, e.g. `mstpn train --frameskip 1`")
        self.train.validate()
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data) -> "RunConfig":
        if not isinstance(data, dict):
            raise DataFormatError("config must be a JSON object with 'model', 'env', 'train'")
        unknown = set(data) - {"model", "env", "train"}
        if unknown:
            raise DataFormatError(f"unknown config sections: {sorted(unknown)}")
        parts = {}
        for name, klass in (("model", ModelConfig), ("env", EnvConfig), ("train", TrainConfig)):
            parts[name] = _from_section(klass, data.get(name, {}), name)
        return cls(**parts).validate()

    @classmethod
    def load(cls, path) -> "RunConfig":
        path = Path(path)
        return cls.from_dict(read_json(path))


def _from_section(klass, section, name):
    if not isinstance(section, dict):
        raise DataFormatError(f"config section {name!r} must be an object")
    known = {f.name: f for f in fields(klass)}
    unknown = set(section) - set(known)
    if unknown:
        raise DataFormatError(f"unknown keys in config section {name!r}: {sorted(unknown)}")
    obj = klass()
    for key, value in section.items():
        default = getattr(obj, key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ParameterError(f"{name}.{key} must be true/false, got {value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
                and value.is_integer():
            value = int(value)
        setattr(obj, key, value)
    return obj


def _positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ParameterError(f"{name} must be a positive finite number, got {v!r}")


def replace(cfg: RunConfig, **sections) -> RunConfig:
    """Copy of ``cfg`` with ``sections`` = {"train": {"seed": 1}, ...} applied and validated."""
    d = cfg.to_dict()
    for sec, changes in sections.items():
        d[sec].update(changes)
    return RunConfig.from_dict(d)


#: CleanRL's ppo_atari_lstm settings that differ from the A2C defaults above; ``mstpn train --algo
#: ppo`` applies them unless --config or a flag sets them
PPO_DEFAULTS = {"n_steps": 128, "lr": 2.5e-4, "grad_clip": 0.5, "num_envs": 8}


def train_env_seed(train: TrainConfig, updates: int) -> int:
    """First seed of the training environments at a (re)start after ``updates`` updates."""
    return (train.seed * 100_003 + int(updates)) % TRAIN_SEED_SPACE


__all__ = ["RunConfig", "ModelConfig", "EnvConfig", "TrainConfig", "ACTION_SETS", "MODELS", "ALGOS", "replace",
           "PPO_DEFAULTS", "STICKY_ACTIONS", "TRAIN_SEED_SPACE", "EVAL_SEED_BASE", "train_env_seed"]
