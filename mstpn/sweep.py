"""Device-parameter sweeps of the m-STPN in the loop, on Ray (``mstpn sweep SPEC -o OUT``).

A **trial** is one seeded device-in-the-loop evaluation of a checkpoint: the converted network
(thresholds 0) on ``Simulator(net, synapses="device")`` (spec ``backend: "numpy"``, the reference) or
on the torch runner of the device model with its elementwise device step torch.compile'd
(``backend: "torch"``: the same pulses, logits within 1e-9, ~1.5x faster per frame) with the file's
device mapping, changed by the trial's parameters (DeviceParams fields such as ``d2d_sigma``,
``c2c_sigma``, ``n_levels``, ``tau0``, ``v_bias_min`` / ``v_bias_max``, and the mapping's
``stuck_fraction``, ``lt_drift_tau_s``, ``lt_age_s``), device seed = the trial's seed, plays ``games`` greedy games of Pong closed loop,
each capped at ``max_steps`` agent steps.  A game's score is points won - points lost; a capped
game reports its partial score and ``truncated: true``.  Game seeds are ``game_seed + seed * games
+ i`` (i = 0 .. games-1): the same for every parameter value, so parameter values are compared on
the same games.

The **trial id** is a SHA-256 (16 hex digits) of everything that determines the trial's result:
its parameters, seed, protocol, backend, games, max_steps, game_seed and the checkpoint's SHA-256
(``backend: "numpy"`` is left out of the hash, so the ids of specs written before the key existed
are unchanged).  A completed trial is one record ``OUT/trials/<trial_id>.json``, written
atomically by the driver when Ray returns the trial's result; a sweep started again on the same
folder runs only the trials without a record.  Ray runs each trial as a task with ``max_retries=2`` and
``retry_exceptions=False``: a worker that dies is replaced and the trial re-run (at most twice); an
exception inside the trial is not retried (it would fail again) and is reported.  The record's
existence is the truth: a trial is never counted twice (one file per id) nor half-written.

A **training trial** (spec ``"trial": "train"`` with a ``train`` block, :data:`TRAIN_KEYS`) trains
an m-STPN from scratch first (hardware-aware training: the m-STPN's device parameters are the
trial's DeviceParams fields, its training seed the trial's seed; :func:`train_config`) in
``OUT/runs/<trial_id>/`` with :func:`snn_agent.train.train`, then evaluates the trained checkpoint
as an evaluate trial (the mapping parameters such as ``stuck_fraction`` act only there).  A sweep
started again resumes an unfinished run from its latest checkpoint and does not train a finished
one again; the record (written once, by the driver) adds a ``training`` block.  Its trial id hashes
the ``train`` block instead of a checkpoint's SHA-256.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np

from mstpn_base.errors import DataFormatError, MstpnError, ParameterError
from mstpn_base.io import atomic_path, atomic_write_json, atomic_write_text, ensure_dir, read_json

SPEC_SCHEMA = "mstpn.sweep-spec"
RECORD_SCHEMA = "mstpn.sweep-trial"
VERSION = 1
#: protocols: sticky actions (repeat_action_probability 0.25) or deterministic (0)
PROTOCOLS = {"sticky": 0.25, "deterministic": 0.0}
#: sweepable parameters of the device mapping (conversion.device_layer.Mapping), with unit
MAPPING_PARAMS = {"stuck_fraction": ("stuck_fraction", "1"), "lt_drift_tau_s": ("lt_drift_tau", "s"),
                  "lt_age_s": ("lt_age", "s")}
SPEC_KEYS = {"checkpoint", "games", "max_steps", "seeds", "protocol", "game_seed", "grid", "random", "fixed",
             "backend", "trial", "train"}
#: what a trial does: evaluate the spec's checkpoint, or train an m-STPN with the trial's devices and
#: then evaluate it
TRIAL_KINDS = ("evaluate", "train")
#: keys of a training trial's ``train`` block (the names of ``mstpn train``'s flags) -> RunConfig
#: (section, field).  Not settable: the seed (the trial's), the model (mstpn), the device parameters
#: (the trial's), threads (one CPU per trial), distillation, resume / init-from (the sweep resumes)
TRAIN_KEYS = {"frames": ("train", "frames"), "algo": ("train", "algo"), "num_envs": ("train", "num_envs"),
              "n_steps": ("train", "n_steps"), "lr": ("train", "lr"), "entropy_coef": ("train", "entropy_coef"),
              "grad_clip": ("train", "grad_clip"), "gae_lambda": ("train", "gae_lambda"),
              "clip_coef": ("train", "clip_coef"), "epochs": ("train", "update_epochs"),
              "minibatches": ("train", "num_minibatches"), "compile": ("train", "compile"),
              "checkpoint_every": ("train", "checkpoint_every_s"),
              "snapshot_every": ("train", "snapshot_every_frames"),
              "sticky": ("env", "repeat_action_probability"), "frameskip": ("env", "frameskip"),
              "hidden": ("model", "hidden"), "action_set": ("env", "action_set")}
#: simulators a trial can play on: the NumPy reference, or the torch runner of the device model with its
#: elementwise device step torch.compile'd (snn_agent.torch_backend; same pulses, logits within 1e-9)
BACKENDS = ("numpy", "torch")
#: trial fields added after the first records were written: at these values they are left out of the
#: hashed trial id, so the ids (and records) of earlier sweeps stay valid
ID_DEFAULTS = {"backend": "numpy", "kind": "evaluate"}
#: a training trial's run folder, below the sweep's output folder
RUNS = "runs"
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")
MAX_TRIALS = 100_000


def _err(msg: str) -> ParameterError:
    return ParameterError(f"sweep spec: {msg}")


# -- the spec -------------------------------------------------------------------------------------
def parameter_names() -> list[str]:
    from memristor.params import DeviceParams

    return DeviceParams.parameter_names() + list(MAPPING_PARAMS)


def unit_of(name: str) -> str:
    from memristor.params import DeviceParams

    if name in MAPPING_PARAMS:
        return MAPPING_PARAMS[name][1]
    return next(r["unit"] for r in DeviceParams.describe() if r["name"] == name)


def read_spec(path) -> dict:
    """Read a spec file (.json, or .yaml / .yml when PyYAML is installed) and validate it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError:
            raise MstpnError(f"{path}: YAML specs need PyYAML (pip install pyyaml), or write the spec as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataFormatError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    elif path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}: not valid JSON ({exc})") from None
    else:
        raise ParameterError(f"sweep spec {path} must be a .json, .yaml or .yml file")
    return validate_spec(data)


def _int(v, name, lo=0):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(f"{name} must be an integer >= {lo}, got {v!r}")
    return v


def _check_swept(name, where: str, names: set, fixed: dict) -> None:
    """A swept parameter must be known and not also fixed."""
    if name not in names:
        raise _err(f"unknown parameter {name!r} in {where} (known: {', '.join(sorted(names))})")
    if name in fixed:
        raise _err(f"parameter {name!r} is both fixed and swept")


def _value(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(f"{name} values must be finite numbers, got {v!r}")
    return v


def validate_spec(data) -> dict:
    """The normalised spec (a new dict) or a one-line ParameterError naming the problem."""
    if not isinstance(data, dict):
        raise _err("must be an object (mapping)")
    unknown = set(data) - SPEC_KEYS
    if unknown:
        raise _err(f"unknown keys {sorted(unknown)} (known: {sorted(SPEC_KEYS)})")
    kind = data.get("trial", "evaluate")
    if not isinstance(kind, str) or kind not in TRIAL_KINDS:
        raise _err(f"trial must be one of {list(TRIAL_KINDS)} (evaluate: play the spec's checkpoint; train: train an "
                   f"m-STPN per trial with its devices, then play it), got {kind!r}")
    for key in ("checkpoint", "games", "max_steps", "seeds") if kind == "evaluate" else ("train", "games",
                                                                                          "max_steps", "seeds"):
        if key not in data:
            raise _err(f"'{key}' is required" + (" (trial: train: a train block {frames: N, algo: a2c|ppo, ...})"
                                                  if key == "train" else ""))
    if kind == "train":
        if "checkpoint" in data:
            raise _err("trial: train trains every network from scratch: leave out 'checkpoint'")
    elif "train" in data:
        raise _err("a train block needs \"trial\": \"train\" (evaluate trials play the spec's checkpoint)")
    elif not isinstance(data["checkpoint"], str) or not data["checkpoint"]:
        raise _err("checkpoint must be a file path")
    seeds = data["seeds"]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(_int(seeds, "seeds (a count)", 1)))
    if not isinstance(seeds, list) or not seeds:
        raise _err("seeds must be a non-empty list of integers (device seeds) or a count")
    seeds = [_int(s, "each seed") for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise _err("seeds must not repeat")
    protocol = data.get("protocol", "sticky")
    protocols = [protocol] if isinstance(protocol, str) else protocol
    if not isinstance(protocols, list) or not protocols or any(p not in PROTOCOLS for p in protocols):
        raise _err(f"protocol must be one of {sorted(PROTOCOLS)} or a list of them, got {protocol!r}")
    if len(set(protocols)) != len(protocols):
        raise _err("protocols must not repeat")
    backend = data.get("backend", "numpy")
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise _err(f"backend must be one of {list(BACKENDS)} (numpy: the reference simulator; torch: the torch "
                   f"runner with its device step compiled), got {backend!r}")
    spec = {"trial": kind} if kind == "train" else {"checkpoint": data["checkpoint"]}
    spec.update({"backend": backend, "games": _int(data["games"], "games", 1),
            "max_steps": _int(data["max_steps"], "max_steps", 1), "seeds": seeds, "protocol": protocols,
            "game_seed": _int(data.get("game_seed", 1000), "game_seed")})
    if kind == "train":
        if len(protocols) != 1:
            raise _err("trial: train evaluates under one protocol (each trial trains its own network); "
                       "run one sweep per protocol")
        spec["train"] = _train_block(data["train"])
    names = set(parameter_names())
    fixed = data.get("fixed", {})
    if not isinstance(fixed, dict):
        raise _err("fixed must be an object {parameter: value}")
    for k, v in fixed.items():
        if k not in names:
            raise _err(f"unknown parameter {k!r} in fixed (known: {', '.join(sorted(names))})")
        _value(k, v)
    spec["fixed"] = dict(fixed)
    if ("grid" in data) == ("random" in data):
        raise _err("give exactly one of 'grid' or 'random'")
    if "grid" in data:
        grid = data["grid"]
        if not isinstance(grid, dict) or not grid:
            raise _err("grid must be a non-empty object {parameter: [values]}")
        for k, vals in grid.items():
            _check_swept(k, "grid", names, fixed)
            if not isinstance(vals, list) or not vals:
                raise _err(f"grid {k} must be a non-empty list of values")
            for v in vals:
                _value(k, v)
            if len(set(vals)) != len(vals):
                raise _err(f"grid {k} values must not repeat")
        spec["grid"] = {k: list(v) for k, v in grid.items()}
    else:
        rnd = data["random"]
        if not isinstance(rnd, dict) or set(rnd) - {"n", "seed", "distributions"} or "distributions" not in rnd:
            raise _err("random must be {n: N, seed: S (optional), distributions: {parameter: {kind: args}}}")
        dists = rnd["distributions"]
        if not isinstance(dists, dict) or not dists:
            raise _err("random distributions must be a non-empty object")
        for k, d in dists.items():
            _check_swept(k, "random distributions", names, fixed)
            if not isinstance(d, dict) or len(d) != 1 or next(iter(d)) not in DISTRIBUTIONS:
                raise _err(f"distribution of {k} must be one of {{kind: args}} with kind in {DISTRIBUTIONS}")
            kind, args = next(iter(d.items()))
            if kind == "choice":
                if not isinstance(args, list) or not args:
                    raise _err(f"{k}: choice needs a non-empty list")
                for v in args:
                    _value(k, v)
            else:
                if not isinstance(args, list) or len(args) != 2:
                    raise _err(f"{k}: {kind} needs [low, high]")
                lo, hi = (_value(k, v) for v in args)
                if not lo <= hi:
                    raise _err(f"{k}: {kind} needs low <= high, got {args}")
                if kind == "loguniform" and lo <= 0:
                    raise _err(f"{k}: loguniform needs low > 0")
                if kind == "randint" and not all(isinstance(v, int) for v in args):
                    raise _err(f"{k}: randint needs integer bounds")
        spec["random"] = {"n": _int(rnd.get("n"), "random n", 1), "seed": _int(rnd.get("seed", 0), "random seed"),
                          "distributions": {k: dict(d) for k, d in dists.items()}}
    return spec


def _train_block(block) -> dict:
    """The validated ``train`` block (keys of :data:`TRAIN_KEYS`; ``frames`` required)."""
    if not isinstance(block, dict) or "frames" not in block:
        raise _err("train must be an object {frames: N, algo: a2c|ppo, ...} with at least frames")
    unknown = set(block) - set(TRAIN_KEYS)
    if unknown:
        hint = {"seed": "the trial's seed is the training seed", "model": "training trials train an m-STPN",
                "params": "the trial's device parameters are the m-STPN's",
                "threads": "one CPU per trial", "env_threads": "one CPU per trial"}
        why = "; ".join(f"{k}: {hint[k]}" for k in sorted(unknown) if k in hint)
        raise _err(f"unknown keys {sorted(unknown)} in train{' (' + why + ')' if why else ''} "
                   f"(known: {', '.join(sorted(TRAIN_KEYS))})")
    try:
        cfg = train_config(block, {}, 0).to_dict()
    except MstpnError as exc:
        raise _err(f"train: {str(exc).splitlines()[0]}") from None
    return {k: cfg[TRAIN_KEYS[k][0]][TRAIN_KEYS[k][1]] for k in block}   # as the trainer reads them: 2e3 -> 2000


def split_params(params: dict) -> tuple[dict, dict]:
    """A trial's parameters as (DeviceParams fields, device Mapping fields)."""
    dev = {k: v for k, v in params.items() if k not in MAPPING_PARAMS}
    mp = {MAPPING_PARAMS[k][0]: float(v) for k, v in params.items() if k in MAPPING_PARAMS}
    if "n_levels" in dev:
        if float(dev["n_levels"]) != int(dev["n_levels"]):
            raise ParameterError(f"n_levels must be an integer, got {dev['n_levels']!r}")
        dev["n_levels"] = int(dev["n_levels"])
    return dev, mp


def train_config(block: dict, params: dict, seed: int):
    """The RunConfig of a training trial: an m-STPN whose device parameters are the published preset
    changed by the trial's DeviceParams fields (as ``mstpn train --params``), training seed ``seed``,
    one torch and one environment thread, the ``train`` block's settings (a PPO run takes
    snn_agent.config.PPO_DEFAULTS for what the block does not set, as ``mstpn train --algo ppo``)."""
    from memristor.params import DeviceParams
    from snn_agent.config import FRAME_RATE_HZ, PPO_DEFAULTS, RunConfig

    base = RunConfig().validate().to_dict()
    base["model"]["kind"] = "mstpn"
    for key, value in block.items():
        sec, name = TRAIN_KEYS[key]
        base[sec][name] = value
    base["model"]["dt"] = base["env"]["frameskip"] / FRAME_RATE_HZ
    if base["train"]["algo"] == "ppo":
        given = {TRAIN_KEYS[k][1] for k in block if TRAIN_KEYS[k][0] == "train"}
        base["train"].update({k: v for k, v in PPO_DEFAULTS.items() if k not in given})
    base["train"].update(seed=int(seed), threads=1, env_threads=1)
    base["model"]["device_params"] = DeviceParams().replace(**split_params(params)[0]).to_dict()
    return RunConfig.from_dict(base)


def swept(spec: dict) -> list[str]:
    return list(spec["grid"]) if "grid" in spec else list(spec["random"]["distributions"])


def parameter_sets(spec: dict) -> list[dict]:
    """The parameter combinations of the spec (grid: every combination, in the grid's order;
    random: ``n`` draws from the distributions, deterministic in the random seed)."""
    import itertools

    if "grid" in spec:
        keys = list(spec["grid"])
        combos = [dict(zip(keys, vals)) for vals in itertools.product(*(spec["grid"][k] for k in keys))]
    else:
        rng = np.random.default_rng(spec["random"]["seed"])
        combos = []
        for _ in range(spec["random"]["n"]):
            c = {}
            for k, d in spec["random"]["distributions"].items():
                kind, a = next(iter(d.items()))
                if kind == "uniform":
                    c[k] = float(rng.uniform(a[0], a[1]))
                elif kind == "loguniform":
                    c[k] = float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
                elif kind == "randint":
                    c[k] = int(rng.integers(a[0], a[1] + 1))
                else:
                    c[k] = a[int(rng.integers(len(a)))]
            combos.append(c)
    return [{**spec["fixed"], **c} for c in combos]


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def trial_id(trial: dict) -> str:
    """SHA-256 (first 16 hex digits) of the trial's canonical JSON (its parameters, seed, protocol,
    backend, ...); a field of :data:`ID_DEFAULTS` at its default value is left out."""
    key = {k: v for k, v in trial.items() if k != "id" and not (k in ID_DEFAULTS and v == ID_DEFAULTS[k])}
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def make_trials(spec: dict, checkpoint_sha256: str | None = None) -> list[dict]:
    """Every trial of the spec: parameter sets x protocols x seeds, each with its ``id``.  An
    evaluate trial names the checkpoint's SHA-256; a training trial its ``train`` block instead."""
    kind = spec.get("trial", "evaluate")
    trials = []
    for params in parameter_sets(spec):
        for protocol in spec["protocol"]:
            for seed in spec["seeds"]:
                t = {"kind": kind, "params": params, "seed": seed, "protocol": protocol,
                     "backend": spec.get("backend", "numpy"), "games": spec["games"],
                     "max_steps": spec["max_steps"], "game_seed": spec["game_seed"]}
                if kind == "train":
                    t["train"] = dict(spec["train"])
                else:
                    t["checkpoint_sha256"] = checkpoint_sha256
                trials.append({"id": trial_id(t), **t})
    if len(trials) > MAX_TRIALS:
        raise _err(f"{len(trials)} trials is more than {MAX_TRIALS}")
    return trials


def mapping_for(base, params: dict, seed: int):
    """The device mapping of a trial: ``base`` (conversion.device_layer.Mapping) with the trial's
    parameters and device seed (ParameterError names a parameter out of range)."""
    dev, mp = split_params(params)
    m = base.replace(params=base.params.replace(**dev), seed=int(seed), **mp)
    m.check_runnable()
    return m


# -- one trial ------------------------------------------------------------------------------------
def load_network(checkpoint):
    """The checkpoint converted for device-in-the-loop play (thresholds 0: the event-driven network
    computes the dense policy) and the checkpoint's SHA-256.  The network must have a device block
    (an m-STPN)."""
    from conversion.convert import convert_policy
    from snn_agent.checkpoint import load_policy

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    policy, meta = load_policy(path)
    net = convert_policy(policy, metadata={"env": dataclasses.asdict(meta["config"].env)})
    if not [n for n, node in net.nodes.items() if getattr(node, "device", None)]:
        raise ParameterError(f"{path}: the converted network has no device block (a sweep needs an m-STPN checkpoint)")
    return net, file_sha256(path)


class _Player:
    """The trial's network with its devices on one backend, kept for all of the trial's games (the
    cycle-to-cycle noise of a step is indexed by the layer's step counter, which goes on across
    games, the same on both backends): ``play(env, seed, max_steps)``, ``stats``, ``devices``."""

    def __init__(self, net, node: str, mapping, backend: str):
        self.backend, self.node = backend, node
        if backend == "torch":
            from mstpn_base import registry

            # the device step is torch.compile'd once per process: the compiled graph is reused by
            # every later runner (other devices, other parameter values) in the same worker
            self.runner = registry.make_runner("torch", net, synapses="device", device=mapping, compile=True)
        else:
            from conversion.simulator import Simulator

            self.sim = Simulator(net, synapses="device", device=mapping)

    def play(self, env, seed: int, max_steps: int) -> dict:
        from snn_agent.play import play_runner, play_simulator

        if self.backend == "numpy":
            return play_simulator(self.sim, env, seed=seed, max_frames=max_steps)
        return play_runner(self.runner, env, seed, max_steps)

    @property
    def stats(self) -> dict:
        src = self.runner.device_stats["stpn"] if self.backend == "torch" else self.sim.device_stats[self.node]
        return {k: (float(v) if isinstance(v, float) else int(v)) for k, v in src.items()}

    @property
    def devices(self):
        return self.runner.policy.core.devices if self.backend == "torch" else self.sim.devices[self.node]


def run_trial(trial: dict, net) -> dict:
    """Run one trial (module docstring) in this process, single-threaded; returns its record.  A
    training trial (``kind: "train"``) trains in ``trial["run_dir"]`` first (``net`` unused)."""
    if trial.get("kind", "evaluate") == "train":
        return train_trial(trial)
    return evaluate_trial(trial, net)


def train_trial(trial: dict) -> dict:
    """Train an m-STPN with the trial's devices and seed in ``trial["run_dir"]`` (resuming a run
    found there from its latest checkpoint; a finished run is not trained again), then evaluate its
    latest checkpoint as an evaluate trial; the record gets a ``training`` block."""
    from snn_agent.checkpoint import read_metadata
    from snn_agent.train import LATEST, train

    run = Path(trial["run_dir"])
    cfg = train_config(trial["train"], trial["params"], trial["seed"])
    latest = run / LATEST
    start = int(read_metadata(latest)["progress"].get("frames", 0)) if latest.is_file() else None
    t0 = time.perf_counter()
    if start is None or start < cfg.train.frames:
        train(cfg, run, resume=start is not None, progress=False, log=lambda *a: None)
    seconds = time.perf_counter() - t0
    prog = read_metadata(latest)["progress"]
    net, sha = load_network(latest)
    rec = evaluate_trial({**trial, "checkpoint_sha256": sha}, net)
    rec["trial"].pop("checkpoint_sha256")
    score = prog.get("recent_score")
    rec["training"] = {
        "frames": int(prog["frames"]), "agent_steps": int(prog.get("agent_steps", 0)),
        "updates": int(prog.get("updates", 0)), "episodes": int(prog.get("episodes", 0)),
        "wall_s": round(float(prog.get("wall_s", 0.0)), 3), "seconds_this_attempt": round(seconds, 3),
        "resumed_from_frames": start, "final_score": None if score is None else float(score),
        "checkpoint": str(Path(RUNS) / run.name / LATEST), "checkpoint_sha256": sha,
        "config": cfg.to_dict()}
    rec["seconds"] = round(rec["seconds"] + seconds, 3)
    return rec


def evaluate_trial(trial: dict, net) -> dict:
    """Play an evaluate trial's games on ``net`` (the converted checkpoint); returns its record."""
    import torch
    from threadpoolctl import threadpool_limits

    from conversion import device_layer as dl
    from snn_agent.play import env_config

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    node = next(n for n, nd in net.nodes.items() if getattr(nd, "device", None))
    mapping = mapping_for(dl.Mapping.from_block(net.nodes[node].device), trial["params"], trial["seed"])
    env = dataclasses.replace(env_config(net), repeat_action_probability=PROTOCOLS[trial["protocol"]])
    backend = trial.get("backend", "numpy")
    if backend not in BACKENDS:
        raise _err(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    games = []
    with threadpool_limits(1):
        player = _Player(net, node, mapping, backend)
        for i in range(trial["games"]):
            seed = trial["game_seed"] + trial["seed"] * trial["games"] + i
            g = player.play(env, seed, trial["max_steps"])
            games.append({"seed": seed, "score": g["score"], "steps": g["steps"], "truncated": not g["finished"],
                          "seconds": round(g["seconds"], 3),
                          "actions_sha256": hashlib.sha256(np.asarray(g["actions"], np.int64).tobytes()).hexdigest()})
    stats = player.stats
    scores = [g["score"] for g in games]
    return {"schema": RECORD_SCHEMA, "version": VERSION, "trial_id": trial["id"],
            "trial": {k: v for k, v in trial.items() if k not in ("id", "run_dir")}, "games": games,
            "score_mean": float(np.mean(scores)), "truncated_games": sum(g["truncated"] for g in games),
            "devices": player.devices.summary(), "device_stats": stats,
            "seconds": round(time.perf_counter() - t0, 3), "host": socket.gethostname(), "pid": os.getpid()}


def _execute(fn, trial, net):
    """What a Ray worker runs (``fn`` is :func:`run_trial` or a replacement with its signature)."""
    return fn(trial, net)


# -- records --------------------------------------------------------------------------------------
def read_records(out, trials: list[dict]) -> tuple[dict, list[str]]:
    """{trial_id: record} of the trials with a valid record in ``OUT/trials``, and the names of
    record files that are unreadable or belong to no trial of this spec (left as they are)."""
    folder = Path(out) / "trials"
    ids = {t["id"] for t in trials}
    done, other = {}, []
    if not folder.is_dir():
        return done, other
    for f in sorted(folder.glob("*.json")):
        try:
            rec = read_json(f)
            ok = (isinstance(rec, dict) and rec.get("schema") == RECORD_SCHEMA and rec.get("trial_id") == f.stem
                  and isinstance(rec.get("games"), list))
        except (MstpnError, OSError, ValueError):
            ok = False
        if ok and f.stem in ids:
            done[f.stem] = rec
        else:
            other.append(f.name)
    return done, other


def write_record(out, rec: dict) -> Path:
    path = Path(out) / "trials" / f"{rec['trial_id']}.json"
    atomic_write_json(path, rec)
    return path


# -- summary and plots ----------------------------------------------------------------------------
def summarise(spec: dict, trials: list[dict], records: dict) -> dict:
    """Per protocol and per swept parameter value (pooled over seeds and the other parameters):
    trials, n games, mean, std and 95 % t-interval of the game scores
    (:func:`snn_agent.stats.mean_ci`), truncated games, mean steps; and the same per full
    parameter set."""
    from snn_agent.stats import mean_ci

    names = swept(spec)

    def stats(recs):
        scores = [g["score"] for r in recs for g in r["games"]]
        row = {"trials": len(recs), "n": len(scores)}
        if scores:
            ci = mean_ci(scores)
            row.update(mean=ci["mean"], std=ci["std"], ci95=ci["ci"],
                       truncated=sum(g["truncated"] for r in recs for g in r["games"]),
                       mean_steps=float(np.mean([g["steps"] for r in recs for g in r["games"]])))
        trained = [r["training"] for r in recs if "training" in r]
        if trained:   # training trials: the trainer's final score (mean of its last 20 games) per network
            finals = [t["final_score"] for t in trained if t["final_score"] is not None]
            row.update(train_frames=int(np.mean([t["frames"] for t in trained])),
                       train_final_score=float(np.mean(finals)) if finals else None)
        return row

    rows, cells = [], []
    for protocol in spec["protocol"]:
        tp = [t for t in trials if t["protocol"] == protocol]
        for name in names:
            values = sorted({t["params"][name] for t in tp})
            for v in values:
                recs = [records[t["id"]] for t in tp if t["params"][name] == v and t["id"] in records]
                rows.append({"protocol": protocol, "parameter": name, "value": v, "unit": unit_of(name),
                             "planned_trials": sum(t["params"][name] == v for t in tp), **stats(recs)})
        seen = []
        for t in tp:
            if t["params"] not in seen:
                seen.append(t["params"])
        for params in seen:
            recs = [records[t["id"]] for t in tp if t["params"] == params and t["id"] in records]
            cells.append({"protocol": protocol, "params": params, **stats(recs)})
    return {"schema": "mstpn.sweep-summary", "version": VERSION, "swept": names, "backend": spec.get("backend", "numpy"),
            "units": {n: unit_of(n) for n in names}, "trials_planned": len(trials),
            "trials_done": sum(t["id"] in records for t in trials),
            "score": "points won - points lost per game, greedy; games capped at max_steps agent steps "
                     "(a capped game counts its partial score)",
            "games_per_trial": spec["games"], "max_steps": spec["max_steps"], "by_value": rows, "by_parameter_set": cells}


def write_summary(out, summary: dict) -> None:
    import csv
    import io

    atomic_write_json(Path(out) / "summary.json", summary)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    trained = any("train_frames" in r for r in summary["by_value"])
    w.writerow(["protocol", "parameter", "value", "unit", "trials", "n_games", "mean", "std", "ci95_low",
                "ci95_high", "truncated_games", "mean_steps"] + (["train_frames", "train_final_score"] if trained else []))
    for r in summary["by_value"]:
        ci = r.get("ci95") or [None, None]
        w.writerow([r["protocol"], r["parameter"], r["value"], r["unit"], r["trials"], r["n"], r.get("mean"),
                    r.get("std"), ci[0], ci[1], r.get("truncated"), r.get("mean_steps")]
                   + ([r.get("train_frames"), r.get("train_final_score")] if trained else []))
    atomic_write_text(Path(out) / "summary.csv", buf.getvalue())


def write_plots(out, summary: dict) -> list[Path]:
    """One PNG per swept parameter: mean score vs value with the 95 % CI band, one line per protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in summary["swept"]:
        rows = [r for r in summary["by_value"] if r["parameter"] == name and r["n"] > 0]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            rs = [r for r in rows if r["protocol"] == protocol]
            x = np.array([r["value"] for r in rs], float)
            y = np.array([r["mean"] for r in rs], float)
            lo = np.array([r["ci95"][0] if r["ci95"] else r["mean"] for r in rs], float)
            hi = np.array([r["ci95"][1] if r["ci95"] else r["mean"] for r in rs], float)
            line, = ax.plot(x, y, "o-", label=f"{protocol} (n = {min(r['n'] for r in rs)}-{max(r['n'] for r in rs)} "
                                                f"games per point)")
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        if np.all(x > 0) and x.max() / x.min() >= 100:
            ax.set_xscale("log")
        unit = summary["units"][name]
        ax.set_xlabel(f"{name} [{'dimensionless' if unit == '1' else unit}]")
        ax.set_ylabel(f"score per game [points won - lost]\n(capped at {summary['max_steps']} agent steps)")
        ax.set_title(f"m-STPN, devices in the loop: score vs {name}\n(mean, band: 95 % CI)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(out) / f"score_vs_{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# -- the sweep on Ray -----------------------------------------------------------------------------
def start_ray(address: str | None, workers: int | None) -> bool:
    """Connect to Ray: an already initialised session (returns False: not ours to stop), the cluster
    at ``address`` (or $RAY_ADDRESS), else an embedded local Ray with ``workers`` CPUs (no
    dashboard).  Returns True when this call started the connection (stop it with ray.shutdown)."""
    try:
        import ray
    except ModuleNotFoundError:
        raise MstpnError("mstpn sweep needs Ray: pip install 'ray>=2.10' (or pip install -e '.[sweep]')") from None
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     logging_level="WARNING", log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise MstpnError(f"cannot start or reach Ray{' at ' + address if address else ''}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        for s, h in handlers.items():   # Ctrl-C / SIGTERM keep the command's stop path
            if h is not None and signal.getsignal(s) is not h:
                signal.signal(s, h)
    return True


def run_sweep(spec: dict, out, address: str | None = None, workers: int | None = None, trial_fn=None,
              progress: bool = True, log=print) -> dict:
    """Run (or resume) the sweep ``spec`` into ``out`` on Ray; returns the summary.  At most
    ``workers`` trials run at a time (default: as many as Ray's CPUs allow, one CPU per trial)."""
    from mstpn_base.lock import lock_folder

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ParameterError(f"--workers must be an integer >= 1, got {workers!r}")
    out = ensure_dir(out)
    lock = lock_folder(out, "sweep")
    try:
        # the summary's t-interval, loaded before any trial: a Ctrl-C must not land in its import
        import scipy.stats  # noqa: F401
        from conversion import device_layer as dl

        training = spec.get("trial", "evaluate") == "train"
        if training:     # every trial trains its own network: nothing to load
            net, sha = None, None
        else:
            net, sha = load_network(spec["checkpoint"])
            node = next(n for n, nd in net.nodes.items() if getattr(nd, "device", None))
            base = dl.Mapping.from_block(net.nodes[node].device)
        trials = make_trials(spec, sha)
        for params in {json.dumps(t["params"], sort_keys=True) for t in trials}:  # fail before any trial runs
            try:
                if training:
                    from memristor.params import DeviceParams

                    mcfg = train_config(spec["train"], json.loads(params), 0).model
                    base = dl.Mapping(DeviceParams.from_dict(mcfg.device_params), dt=mcfg.dt, w_max=mcfg.w_max)
                mapping_for(base, json.loads(params), 0)
            except MstpnError as exc:
                raise _err(f"parameters {params}: {str(exc).splitlines()[0]}") from None
        atomic_write_json(out / "spec.json", {"schema": SPEC_SCHEMA, "version": VERSION, "spec": spec,
                                              "checkpoint_sha256": sha, "trials": trials})
        records, other = read_records(out, trials)
        missing = [t for t in trials if t["id"] not in records]
        log(f"sweep: {len(trials)} trials ({len(records)} already done, running {len(missing)})"
            + (f"; {len(other)} other files in {out / 'trials'} ignored" if other else ""))
        failures = []
        if missing:
            failures = _run_missing(missing, net, out, records, spec, trials, address, workers,
                                    trial_fn or run_trial, progress, log)
        summary = summarise(spec, trials, records)
        write_summary(out, summary)
        write_plots(out, summary)
        if failures:
            raise MstpnError(f"{len(failures)} of {len(trials)} trials failed ({failures[0]}); run the same command "
                             "again to retry them")
        return summary
    finally:
        lock.release()


def _run_missing(missing, net, out, records, spec, trials, address, workers, fn, progress, log) -> list[str]:
    import ray

    owned = start_ray(address, workers)
    failures = []
    bar = None
    try:
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(missing), desc="trials", unit="trial", dynamic_ncols=True)
        training = TrainingProgress(out, [t for t in missing if t.get("kind") == "train"], progress, log)
        remote = ray.remote(max_retries=2, retry_exceptions=False, num_cpus=1)(_execute)
        net_ref = ray.put(net)
        limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        queue, pending, last = list(missing), {}, time.monotonic()
        while queue or pending:
            while queue and len(pending) < limit:
                t = queue.pop(0)
                task = t if t.get("kind") != "train" else {**t, "run_dir": str((Path(out) / RUNS / t["id"]).resolve())}
                pending[remote.remote(fn, task, net_ref)] = t
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)   # short: Ctrl-C gets through
            training.update()
            for ref in ready:
                t = pending.pop(ref)
                try:
                    rec = ray.get(ref)
                except (ray.exceptions.RayError, MstpnError) as exc:
                    msg = f"trial {t['id']}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
                    failures.append(msg)
                    log(f"sweep: {msg}")
                    continue
                write_record(out, rec)
                records[t["id"]] = rec
                training.done(t)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"last {t['id']}: {rec['score_mean']:+.2f}")
                if time.monotonic() - last > 10:   # results as they complete
                    write_summary(out, summarise(spec, trials, records))
                    last = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        training.close()
        if owned:
            ray.shutdown()
    return failures


class TrainingProgress:
    """The training trials' emulator frames, read from their run folders' curve.csv (where the
    driver can read them: a local Ray, or an output folder shared with the workers): a second
    progress bar, or with ``progress=False`` a log line every minute."""

    def __init__(self, out, trials: list[dict], progress: bool, log, every_s: float = 5.0):
        self.out, self.trials, self.log, self.every = Path(out), trials, log, every_s
        self.target = {t["id"]: int(t["train"]["frames"]) for t in trials}
        self.finished: set = set()
        self.last, self.last_log, self.bar = 0.0, time.monotonic(), None
        if trials and progress:
            from tqdm import tqdm

            self.bar = tqdm(total=sum(self.target.values()), desc="training", unit="frame", unit_scale=True,
                            dynamic_ncols=True)
        self.update(force=True)

    def frames(self, tid: str) -> int:
        if tid in self.finished:
            return self.target[tid]
        from snn_agent.train import read_curve

        try:
            rows = read_curve(self.out / RUNS / tid)
        except (OSError, ValueError, KeyError):
            return 0
        return min(self.target[tid], int(rows[-1]["frames"])) if rows else 0

    def done(self, t: dict) -> None:
        if t["id"] in self.target:
            self.finished.add(t["id"])
            self.update(force=True)

    def update(self, force: bool = False) -> None:
        if not self.trials or (not force and time.monotonic() - self.last < self.every):
            return
        self.last = time.monotonic()
        total = sum(self.frames(t) for t in self.target)
        if self.bar is not None:
            self.bar.n = total
            self.bar.set_postfix_str(f"{len(self.finished)} of {len(self.target)} trained", refresh=False)
            self.bar.refresh()
        elif force or time.monotonic() - self.last_log >= 60:
            self.last_log = time.monotonic()
            self.log(f"sweep: training {total} of {sum(self.target.values())} frames "
                     f"({len(self.finished)} of {len(self.target)} trials trained)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
