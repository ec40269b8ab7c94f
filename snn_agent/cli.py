"""``mstpn train``, ``mstpn evaluate`` and ``mstpn curves`` (registered by the dispatcher :mod:`mstpn.cli`)."""
from __future__ import annotations

import sys
from pathlib import Path

from mstpn_base.checks import check_device, check_output_file, check_seed
from mstpn_base.cliargs import add_out, json_output, print_json
from mstpn_base.errors import MstpnError, ParameterError
from mstpn_base.io import atomic_write_json
from mstpn_base.registry import SYNAPSE_MODELS
from snn_agent.config import EVAL_SEED_BASE, STICKY_ACTIONS

EVAL_EPISODES = 30   # snn_agent.evaluate.EVAL_EPISODES (not imported here: that pulls in torch)


def register(subparsers) -> None:
    from snn_agent.config import EnvConfig, ModelConfig, TrainConfig

    t, m, env = TrainConfig(), ModelConfig(), EnvConfig()
    p = subparsers.add_parser("train", help="train an STPN / m-STPN / LSTM Pong agent with A2C or PPO",
                              description="Train a Pong agent (A2C or recurrent PPO, truncated BPTT). Settings: "
                                          "--config JSON, then flags. Writes checkpoints, curve.csv/png and "
                                          "tensorboard events (tb/) to --out. A flag's default is the "
                                          "value of --config (or of the stored config on --resume) if that sets it.")
    p.add_argument("--config", type=Path, help="JSON {model:{...}, env:{...}, train:{...}} "
                                               "(default: the built-in settings shown here)")
    p.add_argument("--model", choices=("stpn", "mstpn", "lstm"), help=f"recurrent core (default: {m.kind})")
    p.add_argument("--params", type=Path, metavar="PARAMS.json",
                   help="device parameters of the m-STPN (a `mstpn device params --out` / `mstpn device fit` "
                        "file, validated; stored in the checkpoints) (default: the published preset)")
    p.add_argument("--algo", choices=("a2c", "ppo"), help=f"RL algorithm (default: {t.algo}); ppo also sets n_steps "
                                                         "128, lr 2.5e-4, grad_clip 0.5, num_envs 8 unless given")
    p.add_argument("--sticky", type=float, help="sticky-action probability of the training env (default 0.25, "
                                                "the standard ALE protocol; 0 = deterministic emulator)")
    p.add_argument("--frameskip", type=int, help="emulator frames per agent step (default: 4, this project's "
                                                 "setting; 1 = the STPN reference's RLlib reading); the m-STPN's step "
                                                 "duration follows (dt = frameskip / 60 s)")
    p.add_argument("--grad-clip", type=float, help="gradient-norm clip (A2C default 40, PPO 0.5)")
    p.add_argument("--entropy-coef", type=float, help="entropy bonus coefficient (default 0.01)")
    p.add_argument("--gae-lambda", type=float, help="PPO: GAE lambda (default 0.95)")
    p.add_argument("--clip-coef", type=float, help="PPO: ratio / value clip (default 0.1)")
    p.add_argument("--epochs", type=int, help="PPO: passes over each rollout (default 4)")
    p.add_argument("--minibatches", type=int, help="PPO: minibatches of whole envs per pass (default 4)")
    p.add_argument("--seed", type=int, help=f"training seed (default: {t.seed})")
    p.add_argument("--frames", type=int, help=f"emulator frames to train in total (agent steps x 4) "
                                              f"(default: {t.frames})")
    p.add_argument("--num-envs", type=int, help=f"parallel environments (default: {t.num_envs})")
    p.add_argument("--n-steps", type=int, help=f"rollout length = BPTT truncation [agent steps] "
                                               f"(default: {t.n_steps})")
    p.add_argument("--lr", type=float, help=f"learning rate, linearly decayed to 0 (default: {t.lr:g})")
    p.add_argument("--hidden", type=int, help=f"recurrent units (default: {m.hidden})")
    p.add_argument("--action-set", choices=("minimal", "updown"),
                   help=f"actions of the policy: the 6 of the minimal set or up/down/no-op (default: {env.action_set})")
    p.add_argument("--threads", type=int, help=f"torch threads (default: {t.threads})")
    p.add_argument("--env-threads", type=int, help=f"ale-py environment threads (default: {t.env_threads})")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="torch.compile the STPN step (default; ~2.5x faster training on CPU)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="eager PyTorch only (default: torch.compile)")
    p.add_argument("--checkpoint-every", type=float, help=f"seconds between resume checkpoints "
                                                          f"(default: {t.checkpoint_every_s:g})")
    p.add_argument("--snapshot-every", type=int, help=f"emulator frames between kept snapshots "
                                                      f"(default: {t.snapshot_every_frames})")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--time-limit", type=float, help="stop after this many seconds (resume checkpoint kept) "
                                                    "(default: no limit)")
    add_out(p, required=True, metavar="DIR", help="output folder (checkpoints, curves, config.json)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint "
                                                         "(default: a new run)")
    p.add_argument("--init-from", type=Path, help="new run starting from this checkpoint's weights and progress "
                                                  "(fresh optimiser), e.g. a shipped artifacts/*/policy.safetensors "
                                                  "(default: a random initialisation)")
    p.add_argument("--teacher", type=str, help="train by distillation (DAgger) from this checkpoint's greedy "
                                               "policy instead of A2C, e.g. artifacts/lstm/policy.safetensors "
                                               "(default: none, reinforcement learning)")
    p.add_argument("--teacher-prob", type=float, help="distillation: probability that the teacher's action is "
                                                      "executed (default 0: the student's greedy action)")
    p.add_argument("--teacher-temperature", type=float, help="distillation: target softmax(teacher logits / T) "
                                                             "(default 1; < 1 sharpens towards its greedy action)")
    p.add_argument("--no-progress", action="store_true",
                   help="log JSON lines instead of a progress bar (default: a progress bar)")
    p.set_defaults(func=cmd_train)

    e = subparsers.add_parser("evaluate", help="greedy play of a trained checkpoint (standard ALE protocol)",
                              description="Play N greedy Pong games on CPU with fixed seeds never used in "
                                          "training, sticky actions 0.25 by default; print mean, std, 95% "
                                          "confidence interval and the protocol.")
    e.add_argument("checkpoint", type=Path, help="policy checkpoint (.safetensors)")
    e.add_argument("--episodes", type=int, default=EVAL_EPISODES, help="games")
    e.add_argument("--seed", type=int, default=EVAL_SEED_BASE,
                   help=f"game i is seeded SEED + i (default {EVAL_SEED_BASE}: training seeds lie below 10^9 + 4096)")
    e.add_argument("--sticky", type=float, default=STICKY_ACTIONS,
                   help=f"sticky-action probability (default {STICKY_ACTIONS}; 0 = deterministic emulator), "
                        "whatever the checkpoint was trained with")
    e.add_argument("--max-frames", type=int, help="cap per episode [emulator frames] (default: the game's own "
                                                  "limit)")
    e.add_argument("--num-envs", type=int, default=8, help="games played in parallel")
    e.add_argument("--gif", type=Path, help="write the first game as an animated GIF (default: none)")
    add_out(e, metavar="JSON", help="write the result as JSON (default: none)")
    e.add_argument("--json", nargs="?", const=True, default=None, metavar="FILE",
                   help="print the result as JSON on stdout instead of the summary line (progress goes to "
                        "stderr); --json FILE: the same as --out FILE (default: the summary line)")
    e.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a progress bar on stderr)")
    e.add_argument("--synapses", choices=SYNAPSE_MODELS, default="ideal",
                   help="plastic layer: ideal (the PyTorch policy) or device (the converted network with its "
                        "synapses as memristor device pairs, on --backend; m-STPN checkpoints)")
    e.add_argument("--device-seed", type=int, default=None, metavar="N",
                   help="seed of the device draws with --synapses device (default: the device block's seed)")
    e.add_argument("--backend", default=None, metavar="B",
                   help="backend that plays the converted network with --synapses device (default: numpy)")
    e.set_defaults(func=cmd_evaluate)

    c = subparsers.add_parser("curves", help="training curves of several runs (seeds): mean, 95%% CI, frames to a score",
                              description="Read the curve.csv of each training run folder, group the runs by what "
                                          "they train (model, algorithm, sticky actions; config.json), and print "
                                          "per group the final training score (mean, 95% CI over runs) and the "
                                          "frames until each run's score (mean of its last 20 games) first reached "
                                          "--threshold; --plot draws mean and 95% CI band against frames.")
    c.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="training run folder (or its curve.csv)")
    c.add_argument("--threshold", type=float, default=19.0, help="score [points] whose first crossing is reported")
    c.add_argument("--plot", type=Path, metavar="PNG", help="write the curves as a PNG plot (default: none)")
    add_out(c, metavar="JSON", help="write the summary as JSON (default: none)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON (default: a table per group)")
    c.set_defaults(func=cmd_curves)


_FLAG_TO_KEY = {"seed": ("train", "seed"), "frames": ("train", "frames"), "num_envs": ("train", "num_envs"),
                "n_steps": ("train", "n_steps"), "lr": ("train", "lr"), "threads": ("train", "threads"),
                "compile": ("train", "compile"), "env_threads": ("train", "env_threads"),
                "checkpoint_every": ("train", "checkpoint_every_s"),
                "snapshot_every": ("train", "snapshot_every_frames"),
                "teacher": ("train", "teacher"), "teacher_prob": ("train", "teacher_prob"),
                "teacher_temperature": ("train", "teacher_temperature"),
                "algo": ("train", "algo"), "grad_clip": ("train", "grad_clip"),
                "entropy_coef": ("train", "entropy_coef"), "gae_lambda": ("train", "gae_lambda"),
                "clip_coef": ("train", "clip_coef"), "epochs": ("train", "update_epochs"),
                "minibatches": ("train", "num_minibatches"), "sticky": ("env", "repeat_action_probability"),
                "model": ("model", "kind"), "hidden": ("model", "hidden"), "action_set": ("env", "action_set")}


def build_config(args):
    """RunConfig from (the run's stored config.json on --resume | --config | defaults), then flags.
    A new PPO run takes :data:`snn_agent.config.PPO_DEFAULTS` for what neither sets."""
    from mstpn_base.io import read_json
    from snn_agent.config import FRAME_RATE_HZ, PPO_DEFAULTS, RunConfig

    given: set = set()
    if args.resume and (args.out / "config.json").exists():
        base = RunConfig.load(args.out / "config.json").to_dict()
        given = set(base["train"])
    elif args.config is not None:
        base = RunConfig.load(args.config).to_dict()
        given = set(read_json(args.config).get("train", {}))
    else:
        base = RunConfig().validate().to_dict()
    for flag, (sec, key) in _FLAG_TO_KEY.items():
        v = getattr(args, flag, None)
        if v is not None:
            base[sec][key] = v
            if sec == "train":
                given.add(key)
    if getattr(args, "frameskip", None) is not None:
        if args.resume and args.frameskip != base["env"]["frameskip"]:
            raise ParameterError(f"--frameskip {args.frameskip} differs from the run's {base['env']['frameskip']}; "
                                 "a resumed run keeps its agent step")
        base["env"]["frameskip"] = args.frameskip
        base["model"]["dt"] = args.frameskip / FRAME_RATE_HZ
    if getattr(args, "params", None) is not None:
        base["model"]["device_params"] = _device_params(args, base["model"].get("device_params"))
    if base["train"]["algo"] == "ppo":
        base["train"].update({k: v for k, v in PPO_DEFAULTS.items() if k not in given})
    return RunConfig.from_dict(base)


def _device_params(args, stored: dict | None) -> dict:
    """``--params``: the file's device parameters (validated by DeviceParams.load); on --resume they
    must be those the run was started with."""
    from memristor.cli import load_params
    from memristor.params import DeviceParams

    given = load_params(args.params).to_dict()
    if args.resume and (args.out / "config.json").exists():
        before = (DeviceParams.from_dict(stored) if stored else DeviceParams()).to_dict()
        if before != given:
            raise ParameterError(f"--params {args.params} differs from the device parameters of the run in "
                                 f"{args.out}; a resumed run keeps its device (drop --params)")
    return given


def cmd_train(args) -> int:
    from snn_agent.train import train

    check_device(args.device)
    cfg = build_config(args)
    check_seed(cfg.train.seed, "--seed (train.seed)")
    if args.init_from is not None:
        if args.params is not None:
            raise ParameterError("--init-from takes the device parameters from its checkpoint: drop --params")
        _check_init_from(args)
    elif args.params is not None and cfg.model.kind != "mstpn":
        raise ParameterError(f"--params sets the device of the m-STPN; --model {cfg.model.kind} has no "
                             "memristive synapses (use --model mstpn)")
    if args.resume and args.config is not None:
        print("note: --resume uses the run's stored config.json; --config is ignored", file=sys.stderr)
    if args.time_limit is not None and not args.time_limit > 0:
        raise ParameterError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    prog = train(cfg, args.out, device=args.device, resume=args.resume, progress=not args.no_progress,
                 time_limit_s=args.time_limit, init_from=args.init_from)
    print(f"trained {prog['frames']} frames, {prog['episodes']} episodes, recent score "
          f"{prog['recent_score']}; checkpoints in {args.out}")
    return 0


def _check_init_from(args) -> None:
    """--init-from takes model and env from the checkpoint: a flag asking for another is an error."""
    from snn_agent.checkpoint import read_metadata

    meta = read_metadata(args.init_from)
    arch, env = meta["architecture"], meta["env"]
    for flag, given, stored in (("--model", args.model, arch.get("kind")), ("--hidden", args.hidden, arch.get("hidden")),
                                ("--action-set", args.action_set, env.get("action_set"))):
        if given is not None and given != stored:
            raise ParameterError(f"{flag} {given} contradicts --init-from {args.init_from}, which holds "
                                 f"{flag.lstrip('-')} {stored}; drop {flag} (the checkpoint sets it)")


def cmd_curves(args) -> int:
    from snn_agent import curves

    if not -21.0 <= args.threshold <= 21.0:
        raise ParameterError(f"--threshold must lie in Pong's score range [-21, 21], got {args.threshold:g}")
    for path, flag in ((args.plot, "--plot"), (args.out, "--out")):
        if path is not None:
            check_output_file(path, flag)
    runs = [curves.load_run(p) for p in args.runs]
    summary = curves.summarise(runs, args.threshold)
    if args.plot is not None:
        if not any(r.frames.size for r in runs):
            raise MstpnError("nothing to plot: no run has a logged score yet (each needs 20 finished games)")
        curves.plot(runs, args.plot, args.threshold)
    if args.out is not None:
        atomic_write_json(args.out, {"threshold": args.threshold, "groups": summary})
    if args.json:
        print_json({"threshold": args.threshold, "groups": summary})
        return 0
    for g in summary:
        print(f"{g['group']}: {g['n_runs']} run(s)")
        for r in g["runs"]:
            final = "-" if r["final_score_mean20"] is None else f"{r['final_score_mean20']:+.2f}"
            reach = "not yet" if r["frames_to_threshold"] is None else f"{r['frames_to_threshold'] / 1e6:.2f}M frames"
            print(f"  {r['run']} (seed {r['seed']}): {r['frames'] / 1e6:.2f}M frames, score {final}, "
                  f">= {args.threshold:+g}: {reach}")
        if g["final_score"] is not None:
            print(f"  final score {_mean_ci_text(g['final_score'])}; reached {args.threshold:+g}: {g['reached']} of "
                  f"{g['n_runs']}" + (f", after {_mean_ci_text(g['frames_to_threshold'], 1e6, 'M frames')}"
                                      if g["frames_to_threshold"] else ""))
    return 0


def _mean_ci_text(ci: dict, scale: float = 1.0, unit: str = "") -> str:
    text = f"{ci['mean'] / scale:+.2f}{unit}" if not unit else f"{ci['mean'] / scale:.2f}{unit}"
    if ci["ci"] is None:
        return text + " (n = 1, no CI)"
    lo, hi = (v / scale for v in ci["ci"])
    return text + f" (95% CI [{lo:.2f}, {hi:.2f}], n = {ci['n']})"


def cmd_evaluate(args) -> int:
    if args.episodes < 1 or args.num_envs < 1:
        raise MstpnError("--episodes and --num-envs must be >= 1")
    to_stdout = args.json is True
    if args.json not in (None, True):   # --json FILE, the older spelling of --out FILE
        if args.out is not None:
            raise ParameterError("give the result file once: --out FILE (or the older --json FILE)")
        args.out, args.json = Path(args.json), None
    if args.synapses != "device":
        for given, flag in ((args.device_seed, "--device-seed"), (args.backend, "--backend")):
            if given is not None:
                raise ParameterError(f"{flag} needs --synapses device (the ideal rule is played by the "
                                     "PyTorch policy)")
    for path, flag in ((args.gif, "--gif"), (args.out, "--out")):
        if path is not None:
            check_output_file(path, flag)  # before the games are played
    with json_output(to_stdout):
        res = _evaluate(args)
    if to_stdout:
        print_json(res)
    return 0


def _evaluate(args) -> dict:
    from snn_agent.checkpoint import load_policy
    from snn_agent.evaluate import describe_protocol, evaluate, protocol_env, protocol_record

    policy, meta = load_policy(args.checkpoint, device="cpu")
    device_run = _prepare_device(args, policy, meta) if args.synapses == "device" else None
    trained = meta["config"].env
    env_cfg = protocol_env(trained, args.sticky)
    print(f"protocol: {describe_protocol(protocol_record(env_cfg, args.episodes, args.seed, args.max_frames))}"
          + (f"; the checkpoint was trained with sticky actions {trained.repeat_action_probability:g}"
             if trained.repeat_action_probability != env_cfg.repeat_action_probability else ""))
    if device_run is not None:
        from snn_agent.evaluate import evaluate_converted

        backend, net, mapping = device_run
        res = evaluate_converted(net, env_cfg, episodes=args.episodes, seed=args.seed, max_frames=args.max_frames,
                                 gif=args.gif, backend=backend, device=mapping, progress=not args.no_progress)
        res["device_mapping"] = mapping.to_block()
    else:
        res = evaluate(policy, env_cfg, episodes=args.episodes, seed=args.seed,
                       max_frames=args.max_frames, gif=args.gif, num_envs=args.num_envs,
                       progress=not args.no_progress)
        res["synapses"] = "ideal"
    res["checkpoint"] = str(args.checkpoint)
    res["model"] = meta["architecture"]["kind"]
    res["frames_trained"] = meta["progress"].get("frames")
    res["trained_repeat_action_probability"] = trained.repeat_action_probability
    trunc = sum(res["truncated"])
    ci = f", 95% CI [{res['ci95'][0]:.2f}, {res['ci95'][1]:.2f}]" if res["ci95"] else ""
    how = f", device synapses on {res['backend']} (device seed {res['device_mapping']['seed']})" \
        if res["synapses"] == "device" else ""
    print(f"{args.checkpoint}: {res['model']}{how}, {res['episodes']} games, score {res['mean']:.2f} "
          f"+- {res['std']:.2f} (sample std){ci}" + (f" ({trunc} cut at --max-frames)" if trunc else ""))
    if args.out:
        atomic_write_json(args.out, res)
    return res


def _prepare_device(args, policy, meta) -> tuple:
    """``evaluate --synapses device``: (backend, the checkpoint converted with thresholds 0 (the
    event-driven network computes the dense policy), the device mapping), checked before any game."""
    import dataclasses

    from conversion.convert import convert_policy
    from snn_agent.evaluate import DEFAULT_BACKEND, check_device_backend, device_mapping

    backend = check_device_backend(args.backend or DEFAULT_BACKEND)
    net = convert_policy(policy, metadata={"env": dataclasses.asdict(meta["config"].env)})
    _, mapping = device_mapping(net, args.device_seed,
                                what=f"{args.checkpoint} ({meta['architecture'].get('kind', '?')} checkpoint)")
    return backend, net, mapping


def main(argv=None) -> int:
    """Stand-alone entry (``python -m snn_agent.cli train ...``), same behaviour as ``mstpn train``."""
    import argparse

    from mstpn_base.cliargs import style

    parser = argparse.ArgumentParser(prog="python -m snn_agent.cli")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    style(parser)
    from mstpn_base import signals
    from mstpn_base.commands import dispatch

    args = parser.parse_args(argv)
    with signals.handled():
        return dispatch(args, prog="python -m snn_agent.cli")


if __name__ == "__main__":
    sys.exit(main())
