"""The network file: lossless round trip, and a clear DataFormatError for every kind of bad file."""
import json
import os

import h5py
import numpy as np
import pytest
import torch

from conversion import nirfile
from conversion.calibrate import calibrate, set_thresholds
from conversion.convert import convert_policy
from conversion.quantise import quantise
from conversion.simulator import Simulator, run_sequence
from conversion.synthetic import pong_like_frames
from mstpn_base.errors import DataFormatError
from snn_agent.checkpoint import build_policy
from snn_agent.config import ModelConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net():
    n = convert_policy(build_policy(ModelConfig(kind="mstpn", hidden=8, n_actions=3), seed=2))
    frames = pong_like_frames(4)
    cal = calibrate(n, frames)
    set_thresholds(n, cal, 0.01)
    quantise(n, cal)
    n.metadata["calibration"] = cal.to_dict()
    return n


@pytest.fixture
def written(net, tmp_path):
    path = tmp_path / "net.nir"
    nirfile.write_network(path, net)
    return path


def assert_same(a, b):
    assert a.order == b.order and a.edges == b.edges and a.metadata == b.metadata
    for name in a.order:
        na, nb = a.nodes[name], b.nodes[name]
        assert type(na) is type(nb)
        for k, v in vars(na).items():
            w = getattr(nb, k)
            if isinstance(v, np.ndarray):
                assert v.dtype == w.dtype and v.shape == w.shape and v.tobytes() == w.tobytes(), (name, k)
            else:
                assert v == w, (name, k)
    assert a.fixed.keys() == b.fixed.keys()
    for name, entry in a.fixed.items():
        for k, v in entry.items():
            w = b.fixed[name][k]
            assert type(v) is type(w) and np.array_equal(v, w), (name, k)


def test_round_trip_is_bit_identical_and_runs_the_same(net, written, tmp_path):
    back = nirfile.read_network(written)
    assert_same(net, back)
    frames = pong_like_frames(3, seed=5)
    for fixed in (False, True):
        r1 = run_sequence(Simulator(net, fixed=fixed), frames)
        r2 = run_sequence(Simulator(back, fixed=fixed), frames)
        assert r1["logits"].tobytes() == r2["logits"].tobytes()
    again = tmp_path / "again.nir"
    nirfile.write_network(again, back)
    assert_same(back, nirfile.read_network(again))


def test_standard_nodes_use_nir_layout(written):
    import nir

    with h5py.File(written, "r") as f:
        assert f["version"][()].decode() == nir.version
        conv = nirfile._group_dict(f["node/nodes/conv1"])
        assert conv["type"] == "Conv2d"
        node = nir.dict2NIRNode(conv)           # plain NIR can read the standard nodes
        assert isinstance(node, nir.Conv2d) and tuple(node.output_type["output"]) == (16, 20, 20)
        # the project's nodes stand behind standard NIR nodes, carried in their metadata
        assert f["node/nodes/stpn/type"][()].decode() == "Affine"
        assert f["node/nodes/stpn/metadata/mstpn_type"][()].decode() == "PlasticSTPN"
        assert f["node/nodes/stpn/metadata/mstpn_schema_version"][()] == 1
        assert f["node/nodes/h/type"][()].decode() == "Scale"
        assert f["mstpn/fixed_point/conv1/weight_mant"].dtype == np.int8


def test_plain_nir_reads_the_file(net, written):
    """nir.read (with its type checks) opens the file: standard stand-ins for the project's nodes,
    the plastic layer's long-term weights as a recurrent Affine pair (x -> stpn -> h, h -> h)."""
    import nir

    graph = nir.read(written)
    st = net.nodes["stpn"]
    assert set(graph.nodes) == set(net.order) | {"stpn_recurrent"}
    assert isinstance(graph.nodes["stpn"], nir.Affine) and isinstance(graph.nodes["stpn_recurrent"], nir.Affine)
    np.testing.assert_array_equal(graph.nodes["stpn"].weight, st.W[:, :st.input_size])
    np.testing.assert_array_equal(graph.nodes["stpn_recurrent"].weight, st.W[:, st.input_size:])
    assert ("h", "stpn_recurrent") in graph.edges and ("stpn_recurrent", "h") in graph.edges
    assert ("h", "stpn") not in graph.edges
    assert graph.nodes["sd1"].metadata["mstpn_type"] in ("SigmaDelta", b"SigmaDelta")
    np.testing.assert_array_equal(graph.nodes["stpn"].metadata["gamma"], st.gamma)


def test_format_version_1_files_still_read(net, tmp_path):
    """A file of the first format version (the project's nodes under types "mstpn.<Kind>", the
    NIR edge list = the network's) reads back to the same network."""
    p = tmp_path / "v1.nir"
    nirfile.write_network(p, net)

    def to_v1(f):
        f["mstpn"].attrs["format_version"] = 1
        del f["mstpn/edges"]
        for name in list(f["node/nodes"]):
            grp = f["node/nodes"][name]
            if "metadata" in grp and "mstpn_view" in grp["metadata"]:
                del f["node/nodes"][name]
            elif "metadata" in grp and "mstpn_type" in grp["metadata"]:
                meta = nirfile._group_dict(grp["metadata"])
                for k in list(grp):
                    del grp[k]
                grp.create_dataset("type", data="mstpn." + meta.pop("mstpn_type"), dtype=h5py.string_dtype())
                grp.create_dataset("schema_version", data=meta.pop("mstpn_schema_version"))
                for k, v in meta.items():
                    grp.create_dataset(k, data=v, dtype=h5py.string_dtype() if isinstance(v, str) else None)
        del f["node/edges"]
        f["node"].create_dataset("edges", data=np.array(net.edges, dtype=object).reshape(-1, 2),
                                 dtype=h5py.string_dtype())
        _refresh_manifest(f)
    _edit(p, to_v1)
    assert_same(net, nirfile.read_network(p))


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def test_other_format_version_is_refused(written):
    _edit(written, lambda f: f["mstpn"].attrs.__setitem__("format_version", 3))
    with pytest.raises(DataFormatError, match="format version 3, this reader understands versions 1, 2"):
        nirfile.read_network(written)


def test_other_extension_schema_version_is_refused(written):
    def bump(f):
        del f["node/nodes/stpn/metadata/mstpn_schema_version"]
        f["node/nodes/stpn/metadata"].create_dataset("mstpn_schema_version", data=7)
        _refresh_manifest(f)
    _edit(written, bump)
    with pytest.raises(DataFormatError, match="'stpn'.*schema version 7"):
        nirfile.read_network(written)


def _refresh_manifest(f):
    manifest = {n: nirfile._digest(ds[()]) for n, ds in nirfile._datasets(f).items()}
    del f["mstpn/manifest_json"]
    f["mstpn"].create_dataset("manifest_json", data=json.dumps(manifest), dtype=h5py.string_dtype())


def test_truncated_file(written):
    size = os.path.getsize(written)
    with open(written, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(DataFormatError, match="truncated or corrupted"):
        nirfile.read_network(written)


def test_corrupted_array_is_named(written):
    def flip(f):
        w = f["node/nodes/stpn/metadata/W"][()]
        w[3, 5] += 1e-9
        f["node/nodes/stpn/metadata/W"][...] = w
    _edit(written, flip)
    with pytest.raises(DataFormatError, match="'node/nodes/stpn/metadata/W' is corrupted \\(checksum mismatch\\)"):
        nirfile.read_network(written)


def test_corrupted_bytes_on_disk(written):
    with h5py.File(written, "r") as f:
        chunk = f["node/nodes/stpn/metadata/lam"].id.get_chunk_info(0)     # gzip-compressed: one chunk
    pos = chunk.byte_offset + chunk.size // 2
    with open(written, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(16)
        fh.seek(pos)
        fh.write(bytes(x ^ 0xFF for x in b))
    with pytest.raises(DataFormatError, match="dataset 'node/nodes/stpn/metadata/lam' cannot be read \\(corrupted data\\)"):
        nirfile.read_network(written)


def test_nan_in_weights_names_node(written):
    def poison(f):
        w = f["node/nodes/conv2/weight"][()]
        w[0, 0, 1, 1] = np.nan
        del f["node/nodes/conv2/weight"]
        f["node/nodes/conv2"].create_dataset("weight", data=w)
        _refresh_manifest(f)
    _edit(written, poison)
    with pytest.raises(DataFormatError, match="'conv2'.*NaN"):
        nirfile.read_network(written)


def test_missing_field_and_wrong_shape(written, tmp_path, net):
    def drop(f):
        del f["node/nodes/stpn/metadata/gamma"]
        _refresh_manifest(f)
    _edit(written, drop)
    with pytest.raises(DataFormatError, match="node 'stpn' lacks 'gamma'"):
        nirfile.read_network(written)
    p2 = tmp_path / "shape.nir"
    nirfile.write_network(p2, net)

    def reshape(f):
        del f["node/nodes/pi/weight"]
        f["node/nodes/pi"].create_dataset("weight", data=np.zeros((3, 9)))
        _refresh_manifest(f)
    _edit(p2, reshape)
    with pytest.raises(DataFormatError, match=r"'pi' expects input shape \(9,\)"):
        nirfile.read_network(p2)


def test_not_hdf5_plain_nir_and_missing_dataset(tmp_path, written):
    txt = tmp_path / "x.nir"
    txt.write_text("hello")
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        nirfile.read_network(txt)
    import nir

    plain = tmp_path / "plain.nir"
    nir.write(plain, nir.NIRGraph.from_list(nir.Affine(np.ones((2, 3)), np.zeros(2))))
    with pytest.raises(DataFormatError, match="not an mstpn event-network file"):
        nirfile.read_network(plain)
    _edit(written, lambda f: f.__delitem__("mstpn/fixed_point/h/lut"))
    with pytest.raises(DataFormatError, match="'mstpn/fixed_point/h/lut' is missing"):
        nirfile.read_network(written)
    with pytest.raises(FileNotFoundError):
        nirfile.read_network(tmp_path / "nope.nir")


def test_failed_write_keeps_old_file(net, written, monkeypatch):
    before = written.read_bytes()

    def boom(node):
        raise RuntimeError("disk full")
    monkeypatch.setattr(nirfile, "_ext_dict", boom)
    with pytest.raises(RuntimeError):
        nirfile.write_network(written, net)
    assert written.read_bytes() == before
    assert sorted(p.name for p in written.parent.iterdir()) == ["net.nir"]
