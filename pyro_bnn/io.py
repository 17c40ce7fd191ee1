"""Save and load a fitted :class:`~pyro_bnn.posterior.Posterior`, whatever its method,
without pickle.

One file in the safetensors format: every tensor (draws, training data, each chain's Pyro
parameters, the method's own state such as a Laplace chain's Gaussian, sampler
statistics, loss histories, the model's buffers) is a named tensor; everything else
(method, options, the zoo name and arguments of the model, versions, site shapes,
diagnostics, warnings, the layout of the method's state) is JSON in the file's header,
with a SHA-256 of the tensors' bytes. Loading parses JSON and tensors only: it never runs
code from the file. The method's state is rebuilt from an explicit table of the library's
own state types (:data:`STATE_TYPES`); a type outside it is refused.

A model built by :func:`pyro_bnn.zoo.build` with JSON arguments is rebuilt from the file;
a model written by hand is passed to :func:`load`, and its latent sites' names and shapes
are checked against the file's. Writes are atomic: the file is written beside its
destination and renamed over it, so an interrupted save leaves the previous file intact.

Example:
    >>> import tempfile, torch
    >>> from pyro_bnn import fit, load, zoo
    >>> model = zoo.build("bayesian-linear-regression", in_features=1, noise_scale=0.1)
    >>> x = torch.linspace(-1, 1, 20)[:, None]
    >>> post = fit(model, x, 2 * x[:, 0], method="meanfield", num_steps=100,
    ...            num_draws=50, progress_bar=False, seed=0)
    >>> path = tempfile.mkdtemp() + "/post.safetensors"
    >>> post.save(path)
    >>> again = load(path)
    >>> bool(torch.equal(again.predict(x, seed=1).mean, post.predict(x, seed=1).mean))
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.distributions import constraints

from pyro_bnn.infer.laplace import LaplaceState
from pyro_bnn.infer.swag import SWAGState
from pyro_bnn.posterior import Posterior
from pyro_bnn.precision import Diagonal, Full, Kron, KronBlock, LowRank

__all__ = ["FORMAT", "FORMAT_VERSION", "STATE_TYPES", "from_bytes", "load", "save", "to_bytes"]

FORMAT = "pyro-bnn-posterior"
FORMAT_VERSION = 1
HEADER_KEY = "pyro_bnn"

#: The method-state types a file may name: the library's own dataclasses, nothing else.
STATE_TYPES: dict[str, type] = {
    t.__name__: t for t in (LaplaceState, Full, Diagonal, Kron, KronBlock, LowRank, SWAGState)
}

# constraints a parameter store may hold, by name (a parametrised one stores its bounds)
_CONSTRAINTS: dict[str, Any] = {
    name: value
    for name, value in sorted(vars(constraints).items())
    if isinstance(value, constraints.Constraint) and not name.startswith("_")
}
_BOUNDED = {
    "interval": constraints.interval,
    "greater_than": constraints.greater_than,
    "less_than": constraints.less_than,
}


class PosteriorFileError(ValueError):
    """A file that is not a readable pyro-bnn posterior: truncated, corrupt, foreign or
    from a newer format version."""


# ---------------------------------------------------------------------------------------
# the public API


def save(posterior: Posterior, path: str | os.PathLike) -> None:
    """Write ``posterior`` to ``path`` (atomically: an interrupted save leaves any
    previous file at ``path`` intact)."""
    data = to_bytes(posterior)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot save a posterior to {path}: it is a directory")
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike, *, model: Any = None) -> Posterior:
    """The posterior saved at ``path``. ``model``: the model it was fitted to, needed when
    it was not built by the zoo with JSON arguments (its sites are checked against the
    file's); given for a zoo model, it replaces the rebuilt one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no posterior file at {path}")
    return from_bytes(path.read_bytes(), model=model, source=str(path))


def to_bytes(posterior: Posterior) -> bytes:
    """``posterior`` as the bytes of a posterior file."""
    from safetensors.torch import save as save_tensors

    if not isinstance(posterior, Posterior):
        raise TypeError(f"expected a pyro_bnn Posterior, got {type(posterior).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    writer = _Writer(tensors)
    header: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "method": posterior.method,
        "options": writer.options(posterior.options),
        "model": _model_spec(writer, posterior.model),
        "sites": {k: list(v.shape[2:]) for k, v in posterior.draws.items()},
        "num_chains": posterior.num_chains,
        "num_draws": posterior.num_draws,
        "diagnostics": writer.tree(posterior.diagnostics, "diagnostics"),
        "warnings": list(posterior.warnings),
        "wall_time": posterior.wall_time,
        "timings": writer.tree(posterior.timings, "timings"),
        "losses": [
            writer.tensor(torch.tensor(c, dtype=torch.float64), f"losses/{i}")
            for i, c in enumerate(posterior.losses)
        ],
        "sample_stats": {
            k: writer.tree(np.asarray(v), f"sample_stats/{k}")
            for k, v in posterior.sample_stats.items()
        },
        "param_states": [
            _param_state(writer, s, f"params/{i}") for i, s in enumerate(posterior.param_states)
        ],
        "states": [writer.tree(s, f"states/{i}") for i, s in enumerate(posterior.states)],
        "model_state": _model_state(writer, posterior.model),
    }
    for name, value in posterior.draws.items():
        writer.tensor(value, f"draws/{name}")
    writer.tensor(posterior.x_train, "x_train")
    writer.tensor(posterior.y_train, "y_train")
    header["sha256"] = _digest(tensors, header)
    return save_tensors(tensors, metadata={HEADER_KEY: json.dumps(header)})


def from_bytes(data: bytes, *, model: Any = None, source: str = "the data") -> Posterior:
    """The posterior in ``data`` (the bytes of a posterior file); see :func:`load`."""
    from pyro_bnn.infer.methods import REGISTRY
    from pyro_bnn.infer.options import parse_options

    header, tensors = _read(data, source)
    name = header.get("method")
    if name not in REGISTRY:
        raise PosteriorFileError(f"{source} names an unknown method {name!r}")
    reader = _Reader(tensors, source)
    draws = {k: reader.tensor(f"draws/{k}") for k in header["sites"]}
    model = _resolve_model(header, model, reader)
    _check_sites(model, header, draws, reader, source)
    _load_model_state(model, header.get("model_state"), reader, source)
    options = reader.tree(header["options"])
    chosen = REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(chosen.options)}  # not method, distributed
    restorable = {k: v for k, v in options.items() if k in fields and not _is_repr(v)}
    predictive = None
    if chosen.predictive is not None:
        predictive = chosen.predictive(parse_options(chosen.options, name, restorable))
    return Posterior(
        model=model,
        method=name,
        draws=draws,
        x_train=reader.tensor("x_train"),
        y_train=reader.tensor("y_train"),
        losses=[reader.tensor(ref).tolist() for ref in header["losses"]],
        sample_stats={k: reader.tree(v) for k, v in header["sample_stats"].items()},
        diagnostics=reader.tree(header["diagnostics"]),
        warnings=list(header["warnings"]),
        param_states=[_read_param_state(reader, s) for s in header["param_states"]],
        options=options,
        states=[reader.tree(s) for s in header["states"]],
        predictive=predictive,
        wall_time=float(header["wall_time"]),
        timings=reader.tree(header["timings"]),
    )


# ---------------------------------------------------------------------------------------
# writing


class _Writer:
    """Encodes values as JSON nodes, putting their tensors into ``tensors``."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def tensor(self, value: torch.Tensor, key: str) -> dict[str, str]:
        if key in self.tensors:
            raise ValueError(f"two tensors would be saved as {key!r}")
        self.tensors[key] = value.detach().cpu().contiguous().clone()
        return {"tensor": key}

    def tree(self, value: Any, key: str) -> Any:
        """A JSON node for ``value``: tensors, numpy arrays and scalars, the library's state
        dataclasses, dicts with string keys, lists, tuples and JSON scalars."""
        if isinstance(value, torch.Tensor):
            return self.tensor(value, key)
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise TypeError(f"cannot save {key}: an array of Python objects")
            return {"ndarray": self.tensor(torch.from_numpy(np.ascontiguousarray(value)),
                                           key)["tensor"]}  # fmt: skip
        if isinstance(value, np.generic):
            return self.tree(value.item(), key)
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, tuple | list):
            items = [self.tree(v, f"{key}/{i}") for i, v in enumerate(value)]
            return {"tuple": items} if isinstance(value, tuple) else items
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"cannot save {key}: a dict with keys that are not strings")
            return {"dict": {k: self.tree(v, f"{key}/{k}") for k, v in value.items()}}
        if dataclasses.is_dataclass(value) and type(value).__name__ in STATE_TYPES:
            if STATE_TYPES[type(value).__name__] is not type(value):
                raise TypeError(f"cannot save {key}: {type(value)} shadows a state type")
            fields = {f.name: self.tree(getattr(value, f.name), f"{key}/{f.name}")
                      for f in dataclasses.fields(value)}  # fmt: skip
            return {"state": type(value).__name__, "fields": fields}
        raise TypeError(
            f"cannot save {key}: a {type(value).__name__} is not a tensor, array, number, "
            "string, list or dict, nor one of pyro_bnn.io.STATE_TYPES"
        )

    def options(self, options: dict[str, Any]) -> dict:
        """The options as given; one that cannot be saved (a function, an object) is kept
        as its repr, and the method's default replaces it on loading."""
        out = {}
        for key, value in options.items():
            try:
                out[key] = self.tree(value, f"options/{key}")
            except TypeError:
                out[key] = {"repr": repr(value)}
        return {"dict": out}


def _versions() -> dict[str, str]:
    from pyro_bnn import __version__

    return {"pyro_bnn": __version__, "torch": torch.__version__, "pyro": pyro.__version__}


def _model_spec(writer: _Writer, model: Any) -> dict[str, Any]:
    """How to rebuild the model: its zoo name and arguments (when they are data), or only
    its class name (then :func:`load` needs the model)."""
    spec: dict[str, Any] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    zoo = getattr(model, "zoo_spec", None)
    if zoo is not None:
        try:
            kwargs = writer.tree(zoo["kwargs"], "zoo_kwargs")
        except TypeError as error:
            spec["zoo_not_saved"] = f"an argument of zoo model {zoo['name']!r}: {error}"
        else:
            spec["zoo"] = {"name": zoo["name"], "kwargs": kwargs}
    return spec


def _model_state(writer: _Writer, model: Any) -> list[str] | None:
    """The model's own tensors (buffers, deterministic parameters), if it is a module."""
    if not isinstance(model, torch.nn.Module):
        return None
    state = model.state_dict()
    for key, value in state.items():
        writer.tensor(value, f"model_state/{key}")
    return list(state)


def _param_state(writer: _Writer, state: dict, key: str) -> dict:
    params = {name: writer.tensor(value, f"{key}/{name}")["tensor"]
              for name, value in state.get("params", {}).items()}  # fmt: skip
    return {"params": params,
            "constraints": {name: _constraint_spec(c, name)
                            for name, c in state.get("constraints", {}).items()}}  # fmt: skip


def _constraint_spec(constraint: Any, name: str) -> dict[str, Any]:
    for label, known in _CONSTRAINTS.items():
        if constraint is known:
            return {"name": label}
    if isinstance(constraint, constraints.independent):
        return {"name": "independent", "base": _constraint_spec(constraint.base_constraint, name),
                "ndims": int(constraint.reinterpreted_batch_ndims)}  # fmt: skip
    for label, kind in _BOUNDED.items():
        if type(constraint) is type(kind(0.0, 1.0) if label == "interval" else kind(0.0)):
            bounds = {k: float(getattr(constraint, k)) for k in ("lower_bound", "upper_bound")
                      if hasattr(constraint, k)}  # fmt: skip
            return {"name": label, **bounds}
    raise TypeError(f"cannot save parameter {name!r}: its constraint {constraint} is not one "
                    f"of {sorted([*_CONSTRAINTS, *_BOUNDED, 'independent'])}")  # fmt: skip


def _constraint(spec: dict, name: str, source: str) -> Any:
    label = spec.get("name")
    if label in _CONSTRAINTS:
        return _CONSTRAINTS[label]
    if label == "independent":
        return constraints.independent(_constraint(spec["base"], name, source), spec["ndims"])
    if label == "interval":
        return constraints.interval(spec["lower_bound"], spec["upper_bound"])
    if label in _BOUNDED:
        return _BOUNDED[label](next(v for k, v in spec.items() if k != "name"))
    raise PosteriorFileError(f"{source}: parameter {name!r} has an unknown constraint {label!r}")


def _digest(tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> str:
    """SHA-256 of the header (less this digest) and of every tensor's name, type and bytes."""
    digest = hashlib.sha256()
    rest = {k: v for k, v in header.items() if k != "sha256"}
    digest.update(json.dumps(rest, sort_keys=True).encode())
    for key in sorted(tensors):
        value = tensors[key]
        digest.update(key.encode())
        digest.update(str(value.dtype).encode() + str(tuple(value.shape)).encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes()
                      if value.numel() else b"")  # fmt: skip
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# reading


def _read(data: bytes, source: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The header and tensors of a posterior file, or a clear error for anything else."""
    from safetensors.torch import load as load_tensors

    if not isinstance(data, bytes | bytearray):
        raise TypeError(f"expected the bytes of a posterior file, got {type(data).__name__}")
    if len(data) < 8:
        raise PosteriorFileError(f"{source} is not a pyro-bnn posterior file: it is empty or "
                                 f"truncated ({len(data)} bytes)")  # fmt: skip
    header_size = int.from_bytes(bytes(data[:8]), "little")
    if header_size > len(data) - 8:
        raise PosteriorFileError(
            f"{source} is truncated or not a pyro-bnn posterior file: its header claims "
            f"{header_size} bytes, {len(data) - 8} follow"
        )
    try:
        raw = json.loads(bytes(data[8 : 8 + header_size]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PosteriorFileError(f"{source} is not a pyro-bnn posterior file (no safetensors "
                                 "header)") from None  # fmt: skip
    metadata = raw.get("__metadata__") if isinstance(raw, dict) else None
    if not isinstance(metadata, dict) or HEADER_KEY not in metadata:
        raise PosteriorFileError(f"{source} is a safetensors file, but not a pyro-bnn "
                                 "posterior (no pyro_bnn header)")  # fmt: skip
    try:
        header = json.loads(metadata[HEADER_KEY])
    except json.JSONDecodeError:
        raise PosteriorFileError(f"{source}: its pyro_bnn header is corrupt") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise PosteriorFileError(f"{source} is not a pyro-bnn posterior file")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        written = header.get("versions", {}).get("pyro_bnn", "?")
        raise PosteriorFileError(
            f"{source} has format version {version} (written by pyro-bnn {written}); this "
            f"pyro-bnn reads versions up to {FORMAT_VERSION}: upgrade pyro-bnn"
        )
    try:
        tensors = load_tensors(bytes(data))
    except Exception as error:  # safetensors' own errors name the defect
        raise PosteriorFileError(f"{source} is corrupt or truncated: {error}") from None
    if _digest(tensors, header) != header.get("sha256"):
        raise PosteriorFileError(f"{source} is corrupt: its header and tensors do not match "
                                 "the checksum written with them")  # fmt: skip
    return header, tensors


class _Reader:
    """Decodes the JSON nodes written by :class:`_Writer`."""

    def __init__(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        self.tensors, self.source = tensors, source

    def tensor(self, key: str | dict) -> torch.Tensor:
        if isinstance(key, dict):
            key = key["tensor"]
        if key not in self.tensors:
            raise PosteriorFileError(f"{self.source} lacks the tensor {key!r}")
        return self.tensors[key]

    def tree(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        if isinstance(node, list):
            return [self.tree(v) for v in node]
        if not isinstance(node, dict) or len(node) not in (1, 2):
            raise PosteriorFileError(f"{self.source} holds a malformed value: {node!r:.80}")
        if "tensor" in node:
            return self.tensor(node)
        if "ndarray" in node:
            return self.tensor(node["ndarray"]).numpy()
        if "float" in node:
            return float(node["float"])
        if "tuple" in node:
            return tuple(self.tree(v) for v in node["tuple"])
        if "dict" in node:
            return {k: self.tree(v) for k, v in node["dict"].items()}
        if "repr" in node:
            return {"repr": node["repr"]}
        if "state" in node:
            kind = STATE_TYPES.get(node["state"])
            if kind is None:
                raise PosteriorFileError(f"{self.source} names an unknown state type "
                                         f"{node['state']!r}")  # fmt: skip
            return kind(**{k: self.tree(v) for k, v in node["fields"].items()})
        raise PosteriorFileError(f"{self.source} holds a malformed value: {node!r:.80}")


def _is_repr(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"repr"}


def _read_param_state(reader: _Reader, node: dict) -> dict:
    params = {name: reader.tensor(key) for name, key in node["params"].items()}
    found = {name: _constraint(spec, name, reader.source)
             for name, spec in node["constraints"].items()}  # fmt: skip
    return {"params": params, "constraints": found}


def _resolve_model(header: dict, model: Any, reader: _Reader) -> Any:
    source = reader.source
    spec = header.get("model", {})
    if model is not None:
        return model
    if "zoo" not in spec:
        why = spec.get("zoo_not_saved", "it was not built by pyro_bnn.zoo.build")
        raise ValueError(
            f"{source} holds a posterior of a {spec.get('class', 'model')}, which cannot be "
            f"rebuilt from the file ({why}): pass it, load(path, model=...)"
        )
    from pyro_bnn import zoo

    zoo_spec = spec["zoo"]
    try:
        zoo.entry(zoo_spec["name"])
    except ValueError as error:
        raise PosteriorFileError(f"{source}: {error}") from None
    return zoo.build(zoo_spec["name"], **reader.tree(zoo_spec["kwargs"]))


def _check_sites(model, header: dict, draws: dict, reader: _Reader, source: str) -> None:
    """The model's latent sites have the file's names and shapes."""
    from pyro_bnn.validation import latent_site_shapes, short_error

    x = reader.tensor("x_train")[:2]
    y = reader.tensor("y_train")[:2]
    with pyro.get_param_store().scope():
        try:
            found = latent_site_shapes(model, x, y)
        except (RuntimeError, ValueError, TypeError, IndexError) as error:
            raise ValueError(
                f"the model does not match the posterior in {source}: it fails on the saved "
                f"training inputs, of shape {tuple(x.shape[1:])} per row: {short_error(error)}"
            ) from None
    saved = {k: tuple(v) for k, v in header["sites"].items()}
    if found != saved:
        missing = sorted(set(saved) - set(found))
        extra = sorted(set(found) - set(saved))
        shapes = sorted(k for k in set(saved) & set(found) if saved[k] != found[k])
        detail = "; ".join(part for part in (
            f"sites in the file but not the model: {missing}" if missing else "",
            f"sites in the model but not the file: {extra}" if extra else "",
            *(f"site {k!r} is {found[k]} in the model, {saved[k]} in the file"
              for k in shapes),
        ) if part)  # fmt: skip
        raise ValueError(f"the model does not match the posterior in {source}: {detail}")


def _load_model_state(model: Any, keys: list[str] | None, reader: _Reader, source: str) -> None:
    if keys is None or not isinstance(model, torch.nn.Module):
        return
    state = {k: reader.tensor(f"model_state/{k}") for k in keys}
    own = model.state_dict()
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    if wrong or set(own) != set(state):
        raise ValueError(
            f"the model's tensors do not match those in {source}: "
            f"{sorted(set(own) ^ set(state)) + wrong}"
        )
    model.load_state_dict(state)
