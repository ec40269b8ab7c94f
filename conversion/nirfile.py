"""The portable network file: NIR's HDF5 layout plus a versioned extension (docs/file_format.md).

``write_network(path, net)`` / ``read_network(path) -> Network``.  Nodes NIR has a primitive for
(Input, Scale, Conv2d, Flatten, Affine, Output) are built as ``nir`` objects and stored with their
own ``to_dict()`` in NIR's layout (``/version``, ``/node/nodes/<name>/...``, ``/node/edges``) and
read back with ``nir.dict2NIRNode``.  SigmaDelta, RateIF and PlasticSTPN have no NIR primitive:
they are stored in the same layout under the node types ``mstpn.SigmaDelta``, ``mstpn.RateIF``,
``mstpn.PlasticSTPN`` with a ``schema_version``.  ``/mstpn`` holds the evaluation order, the
metadata (JSON), the fixed-point parameters and a manifest (dtype, shape and SHA-256 of every
dataset) that detects corrupted data.  Arrays are stored in their dtype with lossless gzip, so a
round trip is bit-identical.  Every problem on reading raises :class:`DataFormatError` naming it;
after the checksums, :func:`conversion.validate.validate_network` checks the content (parameter
ranges, metadata, the fixed-point block).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np

from conversion import graph as g
from conversion.validate import validate_network
from mstpn_base.errors import DataFormatError, MstpnError
from mstpn_base.io import atomic_path

FORMAT = "mstpn.event-network"
FORMAT_VERSION = 2
#: versions this reader understands (1: the project's nodes under node types "mstpn.<Kind>")
READABLE_VERSIONS = (1, 2)
EXT_PREFIX = "mstpn."
EXT_SCHEMA_VERSION = 1
#: fixed-point arrays stored as int8 (8-bit mantissas); everything else int64
INT8_KEYS = ("weight_mant", "w_mant", "gamma_mant")


# -- writing ------------------------------------------------------------------------------------
def _nir_node(node):
    import nir

    if isinstance(node, g.Input):
        return nir.Input(input_type={"input": np.array(node.shape)})
    if isinstance(node, g.Output):
        return nir.Output(output_type={"output": np.array(node.shape)})
    if isinstance(node, g.Scale):
        return nir.Scale(scale=node.scale)
    if isinstance(node, g.Conv2d):
        return nir.Conv2d(input_shape=node.input_shape, weight=node.weight, stride=node.stride,
                          padding=node.padding, dilation=(1, 1), groups=1, bias=node.bias)
    if isinstance(node, g.Flatten):
        return nir.Flatten(input_type={"input": np.array(node.input_shape)}, start_dim=0, end_dim=-1)
    if isinstance(node, g.Affine):
        return nir.Affine(weight=node.weight, bias=node.bias)
    raise TypeError(type(node).__name__)


#: where the project's own node kinds stand in a plain NIR reader's view: the standard node whose
#: meaning is nearest (what ``nir.read`` and other tools see), with the node itself in metadata
STAND_INS = {
    "SigmaDelta": "Scale(ones): the value passed on (exact for identity activation at threshold 0)",
    "RateIF": "IF(r = 1, v_threshold, v_reset = 0): an integrate-and-fire neuron",
    "PlasticSTPN": "Affine(W[:, :I], b): the long-term feed-forward weights",
}


def _ext_dict(node) -> dict:
    """A project node as a standard NIR node (its stand-in, :data:`STAND_INS`) whose metadata
    carries the node losslessly (``mstpn_type``, ``mstpn_schema_version`` and its fields)."""
    import nir

    meta = {"mstpn_type": type(node).__name__, "mstpn_schema_version": np.int64(EXT_SCHEMA_VERSION)}
    if isinstance(node, g.SigmaDelta):
        meta.update(activation=node.activation, threshold=node.threshold)
        std = nir.Scale(scale=np.ones(node.out_shape))
    elif isinstance(node, g.RateIF):
        meta.update(v_threshold=node.v_threshold, steps=np.int64(node.steps), v_init=np.float64(node.v_init))
        v = np.asarray(node.v_threshold, np.float64)
        std = nir.IF(r=np.ones_like(v), v_threshold=v, v_reset=np.zeros_like(v))
    else:
        meta.update(W=node.W, b=node.b, lam=node.lam, gamma=node.gamma, post=node.post,
                    f_max=np.float64(node.f_max), norm_eps=np.float64(node.norm_eps),
                    device_json=json.dumps(node.device, allow_nan=False))
        std = nir.Affine(weight=node.W[:, :node.input_size], bias=node.b)
    d = std.to_dict()
    d["metadata"] = meta
    return d


def _recurrent_view(net: g.Network) -> tuple[dict, list]:
    """The NIR view of each plastic layer's recurrence: a node ``<stpn>_recurrent`` =
    Affine(W[:, I:], 0) on the edge post -> post (NIR sums a node's inputs, so a plain reader sees
    h = W_x x + b + W_h h_prev, the layer's long-term weights as a recurrent network) in place of
    the project's edge post -> stpn.  Returns (extra nodes as NIR dicts, the NIR edge list); the
    project's own edges are stored under /mstpn and the reader drops these view nodes."""
    import nir

    extra, edges = {}, list(net.edges)
    for name in net.of_type(g.PlasticSTPN):
        node = net.nodes[name]
        rec = f"{name}_recurrent"
        d = nir.Affine(weight=node.W[:, node.input_size:], bias=np.zeros(node.hidden_size)).to_dict()
        d["metadata"] = {"mstpn_view": f"recurrent long-term weights of {name} (not a node of the network)"}
        extra[rec] = d
        edges = [e for e in edges if e != (node.post, name)] + [(node.post, rec), (rec, node.post)]
    return extra, edges


def _write_dict(group: h5py.Group, d: dict) -> None:
    for k, v in d.items():
        if k == "metadata":
            if v:
                _write_dict(group.create_group(k), v)
        elif isinstance(v, dict):
            _write_dict(group.create_group(str(k)), v)
        elif isinstance(v, str):
            group.create_dataset(k, data=v, dtype=h5py.string_dtype())
        elif isinstance(v, np.ndarray) and v.ndim > 0:
            group.create_dataset(k, data=v, dtype=v.dtype, compression="gzip")
        else:
            group.create_dataset(k, data=v)


def _digest(value) -> str:
    if isinstance(value, bytes):
        raw = b"bytes:" + value
    else:
        a = np.asarray(value)
        if a.dtype.kind == "O":
            items = [x if isinstance(x, bytes) else str(x).encode() for x in a.ravel()]
            raw = f"obj{a.shape}".encode() + b"\0".join(items)
        else:
            raw = f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(raw).hexdigest()


def _datasets(f: h5py.File) -> dict:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name != "mstpn/manifest_json":
            out[name] = obj
    f.visititems(visit)
    return out


def write_network(path, net: g.Network) -> None:
    """Write ``net`` to ``path`` (HDF5) atomically."""
    import nir

    g.validate(net)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("version", data=nir.version, dtype=h5py.string_dtype())
            root = f.create_group("node")
            root.create_dataset("type", data="NIRGraph", dtype=h5py.string_dtype())
            nodes = root.create_group("nodes")
            for name, node in net.nodes.items():
                d = _nir_node(node).to_dict() if type(node).__name__ in g.NIR_KINDS else _ext_dict(node)
                _write_dict(nodes.create_group(name), d)
            view_nodes, view_edges = _recurrent_view(net)
            for name, d in view_nodes.items():
                _write_dict(nodes.create_group(name), d)
            root.create_dataset("edges", data=np.array(view_edges, dtype=object).reshape(-1, 2),
                                dtype=h5py.string_dtype())
            m = f.create_group("mstpn")
            m.attrs["format"] = FORMAT
            m.attrs["format_version"] = FORMAT_VERSION
            m.create_dataset("order", data=np.array(net.order, dtype=object), dtype=h5py.string_dtype())
            m.create_dataset("edges", data=np.array(net.edges, dtype=object).reshape(-1, 2),
                             dtype=h5py.string_dtype())
            m.create_dataset("metadata_json", data=json.dumps(net.metadata, allow_nan=False, default=_json_default),
                             dtype=h5py.string_dtype())
            if net.fixed is not None:
                fp = m.create_group("fixed_point")
                for node_name, entry in net.fixed.items():
                    grp = fp.create_group(node_name)
                    for k, v in entry.items():
                        a = np.asarray(v)
                        if a.dtype.kind not in "iu":
                            raise DataFormatError(f"fixed-point parameter {node_name}.{k} must be an integer")
                        a = a.astype(np.int8 if k in INT8_KEYS else np.int64)
                        if k in INT8_KEYS and not np.array_equal(a, np.asarray(v)):
                            raise DataFormatError(f"fixed-point mantissa {node_name}.{k} does not fit 8 bits")
                        grp.create_dataset(k, data=a, compression="gzip" if a.ndim else None)
            f.flush()
            manifest = {name: _digest(ds[()]) for name, ds in _datasets(f).items()}
            m.create_dataset("manifest_json", data=json.dumps(manifest, sort_keys=True), dtype=h5py.string_dtype())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serialisable")


# -- reading ------------------------------------------------------------------------------------
def _str(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _group_dict(group: h5py.Group) -> dict:
    out = {}
    for k, item in group.items():
        out[k] = _group_dict(item) if isinstance(item, h5py.Group) else item[()]
        if isinstance(out[k], bytes):
            out[k] = out[k].decode("utf-8")
    return out


def _from_nir(nn, kind: str):
    if kind == "Input":
        return g.Input(tuple(np.asarray(nn.input_type["input"]).tolist()))
    if kind == "Output":
        return g.Output(tuple(np.asarray(nn.output_type["output"]).tolist()))
    if kind == "Scale":
        return g.Scale(nn.scale)
    if kind == "Conv2d":
        if isinstance(nn.padding, str) or tuple(np.ravel(nn.dilation)) != (1, 1) or int(nn.groups) != 1:
            raise DataFormatError("Conv2d with string padding, dilation or groups is not supported")
        return g.Conv2d(nn.weight, nn.bias, tuple(np.ravel(nn.input_shape)), tuple(np.ravel(nn.stride)),
                        tuple(np.ravel(nn.padding)))
    if kind == "Flatten":
        if int(nn.start_dim) != 0 or int(nn.end_dim) != -1:
            raise DataFormatError("Flatten must flatten all dimensions (start_dim 0, end_dim -1)")
        return g.Flatten(tuple(np.asarray(nn.input_type["input"]).tolist()))
    if kind == "Affine":
        return g.Affine(nn.weight, nn.bias)
    raise DataFormatError(f"unsupported NIR node type {kind!r}")


def _need(d: dict, key: str, name: str):
    if key not in d:
        raise DataFormatError(f"node {name!r} lacks {key!r}")
    return d[key]


def _from_ext(d: dict, kind: str, name: str):
    ver = int(_need(d, "schema_version", name))
    if ver != EXT_SCHEMA_VERSION:
        raise DataFormatError(f"node {name!r} ({EXT_PREFIX}{kind}) has schema version {ver}, this reader "
                              f"understands {EXT_SCHEMA_VERSION}")
    if kind == "SigmaDelta":
        return g.SigmaDelta(_str(_need(d, "activation", name)), _need(d, "threshold", name))
    if kind == "RateIF":
        return g.RateIF(_need(d, "v_threshold", name), int(_need(d, "steps", name)), float(_need(d, "v_init", name)))
    if kind == "PlasticSTPN":
        try:
            device = json.loads(_str(_need(d, "device_json", name)))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"node {name!r}: device_json is not valid JSON ({exc})") from None
        f_max = float(_need(d, "f_max", name))
        if math.isnan(f_max):
            raise DataFormatError(f"node {name!r}: f_max is NaN")
        return g.PlasticSTPN(*(_need(d, k, name) for k in ("W", "b", "lam", "gamma")), post=_str(_need(d, "post", name)),
                             f_max=f_max, norm_eps=float(_need(d, "norm_eps", name)), device=device)
    raise DataFormatError(f"node {name!r} has unknown extension type {EXT_PREFIX}{kind!r}")


def _is_view(node) -> bool:
    return isinstance(node, h5py.Group) and "metadata" in node and "mstpn_view" in node["metadata"]


def read_network(path) -> g.Network:
    """Read and verify a network file; raises :class:`DataFormatError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"network file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(f"{path}: not a readable HDF5 network file (truncated or corrupted?): {exc}") from None
    try:
        with f:
            return _read(f, path)
    except MstpnError as exc:
        if isinstance(exc, DataFormatError) and str(exc).startswith(str(path)):
            raise
        raise DataFormatError(f"{path}: {exc}") from None
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError,
            ZeroDivisionError, OverflowError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: corrupted network file ({type(exc).__name__}: {exc})") from None


def _read(f: h5py.File, path: Path) -> g.Network:
    import nir

    if "mstpn" not in f or "node" not in f:
        raise DataFormatError("not an mstpn event-network file (no /mstpn or /node group; a plain NIR "
                              "graph cannot carry the plastic layer)")
    m = f["mstpn"]
    fmt = _str(m.attrs.get("format", ""))
    if fmt != FORMAT:
        raise DataFormatError(f"format is {fmt!r}, expected {FORMAT!r}")
    ver = m.attrs.get("format_version")
    if ver is None or int(ver) not in READABLE_VERSIONS:
        raise DataFormatError(f"file has format version {ver}, this reader understands versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))}")
    if "manifest_json" not in m:
        raise DataFormatError("manifest missing (incomplete file)")
    manifest = json.loads(_str(m["manifest_json"][()]))
    present = _datasets(f)
    missing = sorted(set(manifest) - set(present))
    extra = sorted(set(present) - set(manifest))
    if missing:
        raise DataFormatError(f"dataset {missing[0]!r} is missing ({len(missing)} missing in all)")
    if extra:
        raise DataFormatError(f"dataset {extra[0]!r} is not in the manifest (file was altered)")
    for name, ds in present.items():
        try:
            value = ds[()]
        except OSError as exc:
            raise DataFormatError(f"dataset {name!r} cannot be read (corrupted data): {exc}") from None
        if _digest(value) != manifest[name]:
            raise DataFormatError(f"dataset {name!r} is corrupted (checksum mismatch)")
    order = [_str(x) for x in m["order"][()]]
    group = f["node"]["nodes"]
    names = [k for k in group.keys() if not _is_view(group[k])]
    if sorted(order) != sorted(names):
        raise DataFormatError("node list and evaluation order disagree")
    nodes = {}
    for name in order:
        d = _group_dict(group[name])
        kind = _str(d.get("type", ""))
        meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
        try:
            if "mstpn_type" in meta:           # a project node behind its standard stand-in
                nodes[name] = _from_ext({k.removeprefix("mstpn_"): v for k, v in meta.items()},
                                        _str(meta["mstpn_type"]), name)
            elif kind.startswith(EXT_PREFIX):  # format version 1
                nodes[name] = _from_ext(d, kind[len(EXT_PREFIX):], name)
            elif kind in g.NIR_KINDS:
                if kind == "Conv2d" and np.any(np.asarray(d.get("stride", 1)) < 1):
                    raise DataFormatError(f"stride {d.get('stride')} must be >= 1")
                nodes[name] = _from_nir(nir.dict2NIRNode(d), kind)
            else:
                raise DataFormatError(f"node {name!r} has unsupported type {kind!r}")
        except MstpnError as exc:
            raise DataFormatError(f"node {name!r}: {exc}") from None
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(f"node {name!r} ({kind}) is malformed: {exc}") from None
    stored = m["edges"] if "edges" in m else f["node"]["edges"]    # version 1: the NIR edges are ours
    edges = [(_str(a), _str(b)) for a, b in np.asarray(stored[()]).reshape(-1, 2)]
    try:
        meta = json.loads(_str(m["metadata_json"][()]))
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"metadata is not valid JSON ({exc})") from None
    fixed = None
    if "fixed_point" in m:
        fixed = {}
        for node_name, grp in m["fixed_point"].items():
            if not isinstance(grp, h5py.Group):
                raise DataFormatError(f"fixed-point entry {node_name!r} must be a group")
            fixed[node_name] = {k: v[()] for k, v in grp.items() if isinstance(v, h5py.Dataset)}
    return validate_network(nodes, edges, meta, fixed)
