"""Policy checkpoints: one ``.safetensors`` file = weights + JSON metadata in its header.

The safetensors header's ``__metadata__`` holds one key, ``"mstpn"``, whose value is a JSON
document (schema ``mstpn.snn-checkpoint``, version 1)::

    schema, version, mstpn_version, created (UTC ISO time)
    architecture   ModelConfig as a dict (kind, hidden, n_actions, dt, w_max, quantise, noise,
                   device_params) + input_shape [1, 84, 84] + conv_features 2592
    device_params  DeviceParams.to_dict() (m-STPN: the constraining device; STPN/LSTM: the preset
                   that energy estimates should assume)
    env, train     EnvConfig / TrainConfig as dicts;  seed
    progress       frames (emulator frames trained), agent_steps, updates, episodes, recent_score
    dtype          float32 | float64;  tensors {name: shape}
    sha256         SHA-256 of the tensor payload (:func:`tensor_digest`), verified on loading;
                   checkpoints written before it existed have none and still load

Resuming also needs the optimiser and RNG states: they go to a separate torch file next to the
checkpoint (``<stem>.resume.pt``) that records the ``sha256`` of the checkpoint it belongs to;
:func:`save_checkpoint` with ``optimizer=`` writes the pair, :func:`load_resume_state` refuses a
resume state that belongs to another checkpoint (a save that was killed between the two files).
Every write is atomic.

:func:`load_policy` validates everything (schema, version, JSON types of the metadata,
architecture, env settings, names, shapes, dtypes, checksum, finiteness and size of the weights,
file length) and raises :class:`mstpn_base.errors.DataFormatError` naming the problem.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import struct
from pathlib import Path

import torch

from memristor.params import DeviceParams
from mstpn_base import __version__
from mstpn_base.errors import DataFormatError, MstpnError, ParameterError
from mstpn_base.io import atomic_path
from snn_agent.config import EnvConfig, ModelConfig, RunConfig, TrainConfig, _from_section
from snn_agent.policy import CONV_FEATURES, Policy

SCHEMA = "mstpn.snn-checkpoint"
VERSION = 1
_DTYPES = {torch.float32: "float32", torch.float64: "float64"}
_ST_DTYPES = {"F32": 4, "F64": 8}
#: largest |weight| a checkpoint may hold (trained policies stay below 10); more means corruption
WEIGHT_MAX = 1e4
#: env settings a checkpoint may carry (the policies play Pong; see EnvConfig for their meaning)
GAMES = ("pong",)
ENV_INT_RANGES = {"frameskip": (1, 16), "noop_max": (0, 1000), "max_episode_frames": (1, 10_000_000)}


def build_policy(config: RunConfig | ModelConfig | dict | None = None, seed: int = 0,
                 dtype=torch.float32) -> Policy:
    """A randomly initialised policy for ``config`` (default: STPN, 6 actions), deterministic in
    ``seed`` without touching the global RNG state."""
    if config is None:
        config = RunConfig().validate()
    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    mcfg = config.model if isinstance(config, RunConfig) else config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = Policy(mcfg)
    return policy.to(dtype)


def _device_params(mcfg: ModelConfig) -> DeviceParams:
    return DeviceParams.from_dict(mcfg.device_params) if mcfg.device_params else DeviceParams()


def checkpoint_metadata(policy: Policy, config: RunConfig, progress: dict | None = None) -> dict:
    mcfg = policy.cfg
    state = policy.state_dict()
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "mstpn_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "architecture": dict(_model_dict(mcfg), input_shape=[1, 84, 84], conv_features=CONV_FEATURES),
        "device_params": _device_params(mcfg).to_dict(),
        "env": config.to_dict()["env"],
        "train": config.to_dict()["train"],
        "seed": config.train.seed,
        "progress": dict(progress or {}),
        "dtype": _DTYPES[policy.dtype],
        "tensors": {k: list(v.shape) for k, v in state.items()},
    }


def _model_dict(mcfg: ModelConfig) -> dict:
    from dataclasses import asdict
    return asdict(mcfg)


def tensor_digest(tensors: dict) -> str:
    """SHA-256 of the tensor payload: for each tensor in name order, its name, dtype, shape and
    raw little-endian bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        v = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{v.dtype}\0{list(v.shape)}\0".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path, policy: Policy, config: RunConfig, progress: dict | None = None,
                    optimizer=None, resume_extra: dict | None = None) -> dict:
    """Write ``policy`` weights + metadata to ``path`` (.safetensors) atomically; returns the metadata.

    With ``optimizer``, the resume state (optimiser, RNG, ``resume_extra``) is written too, as a
    pair: both files are complete before either is published, and the resume state names the
    checkpoint's checksum, so a save killed between the two renames is detected on resuming."""
    from safetensors.torch import save_file

    meta = checkpoint_metadata(policy, config, progress)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise DataFormatError(f"refusing to save a checkpoint with NaN/inf in {k}")
    meta["sha256"] = tensor_digest(tensors)
    if optimizer is None:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"mstpn": json.dumps(meta, allow_nan=False)})
        return meta
    with atomic_path(resume_path(path)) as rtmp:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"mstpn": json.dumps(meta, allow_nan=False)})
            torch.save(_resume_state(optimizer, resume_extra, meta["sha256"]), rtmp)
    return meta


def _read_header(path: Path) -> tuple[dict, int]:
    """Parse the safetensors header ourselves (clear errors on truncated/corrupted files)."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise DataFormatError(f"{path}: is a directory, not a checkpoint file") from None
    if len(raw) < 8:
        raise DataFormatError(f"{path}: truncated checkpoint ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8 or n > 100_000_000:
        raise DataFormatError(f"{path}: truncated or not a safetensors checkpoint (header length {n})")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataFormatError(f"{path}: corrupted checkpoint header") from None
    if not isinstance(header, dict):
        raise DataFormatError(f"{path}: corrupted checkpoint header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise DataFormatError(f"{path}: corrupted entry {name!r} in checkpoint header") from None
    if 8 + n + end != len(raw):
        raise DataFormatError(f"{path}: truncated or corrupted checkpoint: {len(raw)} bytes, header "
                              f"announces {8 + n + end}")
    return header, len(raw)


def read_metadata(path) -> dict:
    """The validated JSON metadata of a checkpoint (without loading the weights)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    header, _ = _read_header(path)
    md = header.get("__metadata__") or {}
    if "mstpn" not in md:
        raise DataFormatError(f"{path}: a safetensors file but not an mstpn policy checkpoint (no metadata)")
    try:
        meta = json.loads(md["mstpn"])
    except json.JSONDecodeError:
        raise DataFormatError(f"{path}: corrupted checkpoint metadata") from None
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise DataFormatError(f"{path}: not an mstpn policy checkpoint (schema {meta.get('schema')!r})"
                              if isinstance(meta, dict) else f"{path}: corrupted checkpoint metadata")
    if meta.get("version") != VERSION:
        raise DataFormatError(f"{path}: checkpoint version {meta.get('version')!r} is not supported "
                              f"(this mstpn reads version {VERSION})")
    for key in ("architecture", "device_params", "env", "train", "progress", "tensors", "dtype"):
        if key not in meta:
            raise DataFormatError(f"{path}: checkpoint metadata lacks {key!r}")
        if key != "dtype" and not isinstance(meta[key], dict):
            raise DataFormatError(f"{path}: checkpoint metadata {key!r} must be a JSON object, "
                                  f"got {type(meta[key]).__name__}")
    if not isinstance(meta["dtype"], str) or meta["dtype"] not in _DTYPES.values():
        raise DataFormatError(f"{path}: unsupported dtype {meta['dtype']!r}")
    for k, v in meta["progress"].items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or (v < 0 and k not in ("recent_score", "best_score"))):  # scores: -21..21
            raise DataFormatError(f"{path}: checkpoint progress {k!r} must be a number >= 0 or null, got {v!r}")
    if "sha256" in meta and not (isinstance(meta["sha256"], str) and len(meta["sha256"]) == 64):
        raise DataFormatError(f"{path}: checkpoint checksum (sha256) is malformed")
    for k, shape in meta["tensors"].items():
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise DataFormatError(f"{path}: checkpoint metadata gives tensor {k!r} the shape {shape!r}")
    # header tensors must agree with the metadata
    names = {k for k in header if k != "__metadata__"}
    if names != set(meta["tensors"]):
        raise DataFormatError(f"{path}: tensors in the file do not match its metadata")
    for k in names:
        if not isinstance(header[k], dict) or list(header[k].get("shape", [])) != list(meta["tensors"][k]):
            raise DataFormatError(f"{path}: shape of {k} in the file does not match its metadata")
    return meta


def _check_env(env: EnvConfig) -> None:
    """Env settings of a checkpoint: a Pong game of sane length (EnvConfig.validate checks the rest)."""
    if env.game not in GAMES:
        raise ParameterError(f"env.game is {env.game!r}; the policies play {', '.join(GAMES)} only")
    for key, (lo, hi) in ENV_INT_RANGES.items():
        v = getattr(env, key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ParameterError(f"env.{key} must be an integer in [{lo}, {hi}], got {v!r}")
    if not isinstance(env.reward_clipping, bool):
        raise ParameterError(f"env.reward_clipping must be true/false, got {env.reward_clipping!r}")


def config_from_metadata(meta: dict) -> RunConfig:
    arch = {k: v for k, v in meta["architecture"].items() if k not in ("input_shape", "conv_features")}
    try:
        mcfg = _from_section(ModelConfig, arch, "architecture")
        env = _from_section(EnvConfig, meta["env"], "env")
        train = _from_section(TrainConfig, meta["train"], "train")
        _check_env(env)
        cfg = RunConfig(mcfg, env, train).validate()
    except MstpnError as exc:
        raise DataFormatError(f"checkpoint metadata is invalid: {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. a string where a number belongs
        raise DataFormatError(f"checkpoint metadata is invalid: {type(exc).__name__}: {exc}") from None
    if meta["architecture"].get("conv_features", CONV_FEATURES) != CONV_FEATURES or \
            meta["architecture"].get("input_shape", [1, 84, 84]) != [1, 84, 84]:
        raise DataFormatError("checkpoint architecture has another input or conv torso than this version")
    return cfg


def load_policy(path, dtype=None, device="cpu") -> tuple[Policy, dict]:
    """Load and validate a checkpoint. Returns ``(policy in eval mode, metadata dict)``.

    ``dtype`` (e.g. ``torch.float64``) converts the weights after loading (for bit-exact
    comparisons with other backends); default: the stored dtype.  ``metadata["config"]`` is the
    :class:`RunConfig` the policy was trained with.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        cfg = config_from_metadata(meta)
    except DataFormatError as exc:
        raise DataFormatError(f"{path}: {exc}") from None
    try:
        DeviceParams.from_dict(meta["device_params"])
    except MstpnError as exc:
        raise DataFormatError(f"{path}: invalid device parameters in checkpoint: {exc}") from None
    policy = Policy(cfg.model)
    expected = {k: list(v.shape) for k, v in policy.state_dict().items()}
    if expected != {k: list(v) for k, v in meta["tensors"].items()}:
        missing = sorted(set(expected) - set(meta["tensors"]))
        extra = sorted(set(meta["tensors"]) - set(expected))
        wrong = sorted(k for k in set(expected) & set(meta["tensors"]) if expected[k] != list(meta["tensors"][k]))
        raise DataFormatError(f"{path}: weights do not match the architecture "
                              f"(missing {missing}, unexpected {extra}, wrong shape {wrong})")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types on corrupted data
        raise DataFormatError(f"{path}: cannot read checkpoint weights ({exc})") from None
    for k, v in tensors.items():
        if _DTYPES.get(v.dtype) != meta["dtype"]:
            raise DataFormatError(f"{path}: tensor {k} has dtype {v.dtype}, metadata says {meta['dtype']}")
        if not torch.isfinite(v).all():
            raise DataFormatError(f"{path}: tensor {k} contains NaN or inf")
        if v.numel() and float(v.abs().max()) > WEIGHT_MAX:
            raise DataFormatError(f"{path}: tensor {k} holds a weight of {float(v.abs().max()):.3g}, beyond "
                                  f"{WEIGHT_MAX:g} (corrupted or diverged checkpoint)")
    if "sha256" in meta and tensor_digest(tensors) != meta["sha256"]:
        raise DataFormatError(f"{path}: the weights do not match the checkpoint's checksum (corrupted file); "
                              "restore it from its source")
    policy = policy.to({"float32": torch.float32, "float64": torch.float64}[meta["dtype"]])
    policy.load_state_dict(tensors, strict=True)
    if dtype is not None:
        policy = policy.to(dtype)
    policy = policy.to(device).eval()
    meta = dict(meta, config=cfg)
    return policy, meta


# -- resume state (optimiser, RNG) ---------------------------------------------------------------
def resume_path(checkpoint_path) -> Path:
    p = Path(checkpoint_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".resume.pt")


def _resume_state(optimizer, extra: dict | None, checkpoint_sha256: str | None) -> dict:
    return {"schema": SCHEMA + ".resume", "version": VERSION, "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(), "extra": extra or {}, "checkpoint_sha256": checkpoint_sha256}


def save_resume_state(checkpoint_path, optimizer, extra: dict | None = None) -> None:
    """The resume state of the checkpoint now at ``checkpoint_path`` (which must exist); prefer
    ``save_checkpoint(..., optimizer=)``, which writes both files as a pair."""
    sha = read_metadata(checkpoint_path).get("sha256")
    with atomic_path(resume_path(checkpoint_path)) as tmp:
        torch.save(_resume_state(optimizer, extra, sha), tmp)


def load_resume_state(checkpoint_path) -> dict:
    path = resume_path(checkpoint_path)
    if not path.exists():
        raise DataFormatError(f"cannot resume: {path} (optimiser state) is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataFormatError(f"{path}: corrupted resume state ({exc})") from None
    if not isinstance(state, dict) or state.get("schema") != SCHEMA + ".resume" or state.get("version") != VERSION:
        raise DataFormatError(f"{path}: not a resume state of this mstpn version")
    sha = read_metadata(checkpoint_path).get("sha256")
    if state.get("checkpoint_sha256") is not None and state["checkpoint_sha256"] != sha:
        raise DataFormatError(f"{path} belongs to another version of {Path(checkpoint_path).name} (a save was "
                              "interrupted between the two files): it cannot resume; start a new run from the "
                              "checkpoint's weights with --init-from")
    return state
