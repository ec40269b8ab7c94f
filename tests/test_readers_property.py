"""Property tests of the four readers of user files: random corruptions of a valid file either
read (the corruption was harmless) or raise one of the project's MstpnError types, never anything
else.  Derandomized (the same examples on every run), no deadline.

Readers: the network reader (conversion.nirfile.read_network), the checkpoint loader
(snn_agent.checkpoint.load_policy), the device parameter loader (DeviceParams.load) and the
device-fit CSV reader (memristor.fit.read_measurements).
"""
import json
import struct

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conversion import nirfile
from conversion.calibrate import calibrate, set_thresholds
from conversion.convert import convert_policy
from conversion.quantise import quantise
from conversion.synthetic import pong_like_frames
from memristor.fit import read_measurements
from memristor.params import DeviceParams
from mstpn_base.errors import MstpnError
from snn_agent.checkpoint import build_policy, load_policy, save_checkpoint
from snn_agent.config import RunConfig

torch.set_num_threads(1)
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Good(tuple):
    """A fixture's value with a short repr (hypothesis prints it with every failing example)."""

    def __repr__(self):
        return "<good file>"


def must_not_crash(read, path):
    try:
        read(path)
    except MstpnError:
        pass
    except FileNotFoundError:
        pass  # a user error the CLI reports on one line as well


# -- random JSON values ------------------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**400, max_value=10**400),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
                         st.sampled_from([0, -1, 1e300, -1e300, 2**63, "", "nan"]))
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c,
                                                                                               max_size=3),
                           max_leaves=6)


def paths(obj, prefix=()):
    """Every (path) to a value inside nested dicts/lists."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def set_at(obj, path, value):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def delete_at(obj, path):
    if not path:
        return obj
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return obj


@st.composite
def json_mutation(draw, doc):
    """A copy of ``doc`` with one value replaced or deleted."""
    doc = json.loads(json.dumps(doc))
    all_paths = list(paths(doc))
    path = draw(st.sampled_from(all_paths))
    if path and draw(st.booleans()):
        return delete_at(doc, path)
    return set_at(doc, path, draw(json_values))


@st.composite
def byte_mutation(draw, raw: bytes):
    """``raw`` truncated, or with a few bytes overwritten / inserted."""
    raw = bytearray(raw)
    how = draw(st.sampled_from(["truncate", "flip", "insert"]))
    if how == "truncate":
        return bytes(raw[:draw(st.integers(0, len(raw) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(raw) - 1))
        if how == "flip":
            raw[i] = draw(st.integers(0, 255))
        else:
            raw[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(raw)


# -- the device parameter loader ---------------------------------------------------------------------------
PARAMS = DeviceParams().to_dict()


@settings(max_examples=300, **SETTINGS)
@given(doc=json_mutation(PARAMS))
def test_params_loader_json_mutations(tmp_path_factory, doc):
    p = tmp_path_factory.getbasetemp() / "params.json"
    p.write_text(json.dumps(doc))
    must_not_crash(DeviceParams.load, p)


@settings(max_examples=200, **SETTINGS)
@given(raw=byte_mutation(json.dumps(PARAMS).encode()))
def test_params_loader_byte_mutations(tmp_path_factory, raw):
    p = tmp_path_factory.getbasetemp() / "params_b.json"
    p.write_bytes(raw)
    must_not_crash(DeviceParams.load, p)


# -- the device-fit CSV reader ---------------------------------------------------------------------------------
CSV_ROWS = [["kind", "trace_id", "v_bias_V", "t_s", "pulse_v_V", "pulse_width_s", "g_S"]]
CSV_ROWS += [["relaxation", "r1", "0.3", str(t * 0.5), "0", "0", f"{1e-9 + 2e-9 * np.exp(-t / 8):.6e}"] for t in range(8)]
CSV_ROWS += [["pulse_train", "p1", "0.0", str(t * 0.01), "1.0" if t % 2 else "0", "1e-4" if t % 2 else "0", "1e-9"]
             for t in range(6)]
CELL = st.one_of(st.text(max_size=6), st.sampled_from(["", "nan", "inf", "-1", "1e300", "1e-300", "0", "x",
                                                        "relaxation", "pulse_train", "\ufeff", '"', ","]),
                 st.floats().map(repr))


@st.composite
def csv_mutation(draw):
    rows = [list(r) for r in CSV_ROWS]
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["cell", "drop_row", "dup_row", "drop_col", "swap"]))
        i = draw(st.integers(0, len(rows) - 1)) if rows else 0
        if not rows:
            break
        if how == "cell":
            j = draw(st.integers(0, len(rows[i]) - 1)) if rows[i] else 0
            if rows[i]:
                rows[i][j] = draw(CELL)
        elif how == "drop_row":
            rows.pop(i)
        elif how == "dup_row":
            rows.insert(i, list(rows[i]))
        elif how == "drop_col" and rows[i]:
            rows[i].pop(draw(st.integers(0, len(rows[i]) - 1)))
        elif how == "swap" and len(rows) > 1:
            k = draw(st.integers(0, len(rows) - 1))
            rows[i], rows[k] = rows[k], rows[i]
    text = "\n".join(",".join(r) for r in rows) + "\n"
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


@settings(max_examples=300, **SETTINGS)
@given(raw=csv_mutation())
def test_fit_csv_reader(tmp_path_factory, raw):
    p = tmp_path_factory.getbasetemp() / "data.csv"
    p.write_bytes(raw)
    must_not_crash(read_measurements, p)


@settings(max_examples=150, **SETTINGS)
@given(raw=byte_mutation(("\n".join(",".join(r) for r in CSV_ROWS) + "\n").encode()))
def test_fit_csv_reader_bytes(tmp_path_factory, raw):
    p = tmp_path_factory.getbasetemp() / "data_b.csv"
    p.write_bytes(raw)
    must_not_crash(read_measurements, p)


# -- the checkpoint loader -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    cfg = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 4}, "env": {"action_set": "updown"}})
    p = tmp_path_factory.mktemp("ck") / "c.safetensors"
    save_checkpoint(p, build_policy(cfg, seed=0), cfg, progress={"frames": 10})
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return Good((raw, json.loads(raw[8:8 + n]), raw[8 + n:]))


def _with_header(hdr, payload) -> bytes:
    text = json.dumps(hdr).encode()
    return struct.pack("<Q", len(text)) + text + payload


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_checkpoint_loader_metadata_mutations(tmp_path_factory, checkpoint_bytes, data):
    _, hdr, payload = checkpoint_bytes
    meta = json.loads(hdr["__metadata__"]["mstpn"])
    meta = data.draw(json_mutation(meta))
    hdr = dict(hdr, __metadata__={"mstpn": json.dumps(meta)})
    p = tmp_path_factory.getbasetemp() / "meta.safetensors"
    p.write_bytes(_with_header(hdr, payload))
    must_not_crash(load_policy, p)


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_checkpoint_loader_header_mutations(tmp_path_factory, checkpoint_bytes, data):
    _, hdr, payload = checkpoint_bytes
    tensors = {k: v for k, v in hdr.items() if k != "__metadata__"}
    tensors = data.draw(json_mutation(tensors))
    new = dict(tensors) if isinstance(tensors, dict) else {"x": tensors}
    new["__metadata__"] = hdr["__metadata__"]
    p = tmp_path_factory.getbasetemp() / "hdr.safetensors"
    p.write_bytes(_with_header(new, payload))
    must_not_crash(load_policy, p)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_checkpoint_loader_byte_mutations(tmp_path_factory, checkpoint_bytes, data):
    raw, _, _ = checkpoint_bytes
    p = tmp_path_factory.getbasetemp() / "bytes.safetensors"
    p.write_bytes(data.draw(byte_mutation(raw)))
    must_not_crash(load_policy, p)


# -- the network reader -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    cfg = RunConfig.from_dict({"model": {"kind": "stpn", "hidden": 4}, "env": {"action_set": "updown"}})
    net = convert_policy(build_policy(cfg, seed=0))
    cal = calibrate(net, pong_like_frames(3))
    set_thresholds(net, cal, 0.01)
    quantise(net, cal)
    p = tmp_path_factory.mktemp("net") / "net.nir"
    nirfile.write_network(p, net)
    with h5py.File(p, "r") as f:
        names = sorted(nirfile._datasets(f))
    return Good((p, names))


ARRAY_VALUES = st.one_of(
    st.integers(-2**63, 2**63 - 1).map(np.int64), st.floats().map(np.float64),
    st.sampled_from([np.int64(0), np.int64(-1), np.float64(1e300), np.float64(np.nan), np.zeros(0),
                     np.zeros((2, 2)), np.full((3,), 10**15, np.int64), np.array([0, 0]), np.array(["a"], dtype="S1")]),
    st.text(max_size=6))


def _replace_and_rehash(path, name, value, scale):
    with h5py.File(path, "r+") as f:
        old = f[name][()]
        del f[name]
        old = np.asarray(old)
        if scale is not None:
            if old.dtype.kind not in "fiu":
                value = old  # strings: left as they are
            else:
                with np.errstate(all="ignore"):
                    value = (old.astype(np.float64) * scale).astype(old.dtype) if old.dtype.kind in "iu" \
                        else old * scale
        if isinstance(value, str):
            f.create_dataset(name, data=value, dtype=h5py.string_dtype())
        else:
            f.create_dataset(name, data=value)
        del f["mstpn/manifest_json"]
        manifest = {n: nirfile._digest(ds[()]) for n, ds in nirfile._datasets(f).items()}
        f["mstpn"].create_dataset("manifest_json", data=json.dumps(manifest, sort_keys=True),
                                  dtype=h5py.string_dtype())


@settings(max_examples=250, **SETTINGS)
@given(data=st.data())
def test_network_reader_consistent_content_mutations(tmp_path_factory, network_file, data):
    """A dataset replaced (or scaled) and the manifest recomputed: only validation can catch it."""
    good, names = network_file
    name = data.draw(st.sampled_from(names))
    scale = data.draw(st.one_of(st.none(), st.sampled_from([0, -1, 2, 1e6, 1e300, -3])))
    value = data.draw(ARRAY_VALUES) if scale is None else None
    p = tmp_path_factory.getbasetemp() / "mut.nir"
    p.write_bytes(good.read_bytes())
    _replace_and_rehash(p, name, value, scale)
    must_not_crash(nirfile.read_network, p)


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_network_reader_byte_mutations(tmp_path_factory, network_file, data):
    good, _ = network_file
    p = tmp_path_factory.getbasetemp() / "bytes.nir"
    p.write_bytes(data.draw(byte_mutation(good.read_bytes())))
    must_not_crash(nirfile.read_network, p)


# -- the energy counts reader: the measured device block ---------------------------------------------------------
def _counts_doc():
    from mstpn.energy.counts import DeviceCounts, LayerCounts, RunCounts

    layer = LayerCounts("stpn", n_synapses=400, plastic_synapses=400, update_pulses=900, memristive=True)
    dev = DeviceCounts("stpn", pulses=500, potentiating=350, depressing=150, pulse_energy_J=1e-9,
                       bias_energy_J=2e-6, device_steps=5, duration_s=5 / 15, seed=3, backend="numpy")
    return RunCounts((layer,), steps=5, frames=20, device=dev).to_dict()


COUNTS_DOC = _counts_doc()
DEVICE_FIELDS = sorted(COUNTS_DOC["device"])
#: values that are wrong for every device field (wrong type, or out of range for every numeric field)
BAD_DEVICE_VALUES = st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-300, allow_nan=False,
                                                                    allow_infinity=False),
                              st.just(10**400), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                                   st.integers(),
                                                                                                   max_size=2),
                              st.sampled_from([True, False]))


@settings(max_examples=200, **SETTINGS)
@given(doc=json_mutation(COUNTS_DOC))
def test_counts_reader_device_block_mutations(tmp_path_factory, doc):
    from mstpn.energy.counts import RunCounts

    p = tmp_path_factory.getbasetemp() / "counts.json"
    p.write_text(json.dumps(doc))
    must_not_crash(RunCounts.load, p)


@settings(max_examples=200, **SETTINGS)
@given(field=st.sampled_from(DEVICE_FIELDS), value=BAD_DEVICE_VALUES)
def test_counts_reader_bad_device_value_is_a_data_format_error_naming_the_field(tmp_path_factory, field, value):
    from mstpn.energy.counts import RunCounts
    from mstpn_base.errors import DataFormatError

    doc = json.loads(json.dumps(COUNTS_DOC))
    doc["device"][field] = value
    p = tmp_path_factory.getbasetemp() / "counts_bad.json"
    p.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError) as exc:
        RunCounts.load(p)
    assert f"device.{field}" in str(exc.value)


@settings(max_examples=100, **SETTINGS)
@given(field=st.sampled_from(DEVICE_FIELDS))
def test_counts_reader_missing_device_field(tmp_path_factory, field):
    from mstpn.energy.counts import RunCounts
    from mstpn_base.errors import DataFormatError

    doc = json.loads(json.dumps(COUNTS_DOC))
    del doc["device"][field]
    p = tmp_path_factory.getbasetemp() / "counts_missing.json"
    p.write_text(json.dumps(doc))
    try:
        RunCounts.load(p)   # an optional field (devices_per_synapse, seed, backend) takes its default
    except DataFormatError as exc:
        assert f"device.{field}" in str(exc)


@settings(max_examples=150, **SETTINGS)
@given(raw=byte_mutation(json.dumps(COUNTS_DOC).encode()))
def test_counts_reader_byte_mutations(tmp_path_factory, raw):
    from mstpn.energy.counts import RunCounts

    p = tmp_path_factory.getbasetemp() / "counts_b.json"
    p.write_bytes(raw)
    must_not_crash(RunCounts.load, p)
