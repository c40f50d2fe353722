"""What a checkpoint says about itself, and whether it fits this run: the ``meta`` item
(``make_meta``: resolved config and network shape), the refusal of a checkpoint written for
another network or frozen config (``check_compatible``) or holding another state tree
(``check_tree``), the state tree's leaves as Orbax saves and restores them (``savable_leaf``,
``abstract_leaf``), and the one-line errors ``CheckpointError`` / ``CorruptCheckpoint``.
``jax_reset.run.checkpoint`` reads and writes the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_reset import config as config_lib
from jax_reset import config_tree
from jax_reset.run.layout import RunFailure

META_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing or cannot be used for this run; the message is one line."""


class CorruptCheckpoint(CheckpointError):
    """A checkpoint's files cannot be read back (truncated, garbled, missing, or array data
    that no longer match their checksums); one line."""


class NonFiniteState(CheckpointError, RunFailure):
    """A state holding NaN or infinite values, refused before it is saved; one line."""


DIGESTS_FORMAT = 1


def _host_bytes(leaf: Any) -> np.ndarray:
    """A leaf's values on the host: a replicated array's local copy (every process holds the
    same one; a typed PRNG key's raw data), a NumPy array or scalar as it is."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        leaf = leaf.addressable_data(0)
    return np.ascontiguousarray(np.asarray(leaf))


def array_digests(tree: Any) -> tuple[dict[str, str], list[str]]:
    """({leaf path: sha256 of its bytes}, the paths of floating leaves holding a NaN or an
    infinity) of a state tree. A checkpoint saves the digests beside its arrays and a restore
    compares them: flipped bytes in the array data are a corrupt checkpoint, not silently
    altered weights."""
    digests, non_finite = {}, []
    for name, leaf in _named_leaves(tree):
        values = _host_bytes(leaf)
        digests[name] = hashlib.sha256(values.tobytes()).hexdigest()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            non_finite.append(name)
    return digests, non_finite


def check_digests(saved: Mapping[str, Any], restored: Any, where: str) -> None:
    """Raises ``CorruptCheckpoint`` when a restored leaf's bytes differ from the digest saved
    with it (``saved``: the checkpoint's digests item)."""
    expected = saved.get("sha256", {})
    got, _ = array_digests(restored)
    differ = sorted(name for name, digest in got.items()
                    if name in expected and expected[name] != digest)
    if differ:
        raise CorruptCheckpoint(f"{where} cannot be used: its array data do not match their "
                                f"checksums ({len(differ)} of {len(got)} arrays differ, e.g. "
                                f"'{differ[0]}')")


def first_line(err: BaseException, limit: int = 160) -> str:
    text = (str(err).strip().splitlines() or [""])[0].split(". See full TensorStore")[0]
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def network_shape(params: Any) -> dict[str, list[Any]]:
    """{"path/to/param": [shape, dtype]} for every leaf of a parameter tree."""
    return {path: [list(shape), dtype] for path, (shape, dtype) in _leaf_specs(params).items()}


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for name, leaf in _named_leaves(tree):
        shape = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)  # arrays and metadata
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
        out[name] = (tuple(int(d) for d in shape), str(np.dtype(dtype)))
    return out


def _named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(``"path/to/leaf"``, leaf) for every leaf of a tree: the names the metadata, the shape
    checks and the digests share."""
    return [("/".join(_key_name(k) for k in path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def make_meta(config: Any, params: Any, **extra: Any) -> dict[str, Any]:
    """The ``meta`` item: resolved config (dataclass or dict), network shape, anything else."""
    cfg = config if isinstance(config, Mapping) else config_tree.to_dict(config)
    return {"format": META_FORMAT, "config": cfg, "network_shape": network_shape(params),
            **extra}


def check_compatible(saved: Mapping[str, Any], current: Mapping[str, Any],
                     frozen: Iterable[str], where: str = "checkpoint") -> list[str]:
    """Refuses a checkpoint whose network shape or frozen config keys differ.

    ``frozen`` names config keys or sections (dotted prefixes, e.g. ``"network"``,
    ``"train.num_envs"``) that shape what the checkpoint holds. Returns the other config keys
    that differ (allowed, e.g. a lower learning rate on resume, which the trainer reports).
    """
    if saved.get("format") != META_FORMAT:
        raise CheckpointError(f"{where}: metadata format {saved.get('format')!r} is not "
                              f"{META_FORMAT}, the one this code writes")
    a, b = saved.get("network_shape", {}), current.get("network_shape", {})
    if a != b:
        changes = [f"{k}: {a.get(k, 'absent')} -> {b.get(k, 'absent')}"
                   for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise CheckpointError(f"{where} was written for a different network shape "
                              f"({len(changes)} parameters differ, e.g. {changes[0]})")
    differ = config_tree.diff(saved.get("config", {}), current.get("config", {}))
    refused = config_lib.frozen_keys(differ, tuple(frozen))
    if refused:
        old, new = saved.get("config", {}), current.get("config", {})
        shown = ", ".join(f"{k} ({_lookup(old, k)!r} -> {_lookup(new, k)!r})" for k in refused[:4])
        raise CheckpointError(f"{where} was written with a different config: {shown}; start a "
                              "new run directory to change these")
    return differ


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return "absent"
        node = node[part]
    return node


def check_tree(stored_tree: Any, abstract: Any, where: str) -> None:
    """Refuses (``CheckpointError``, one line) a stored state tree (the checkpoint's array
    index) whose leaves differ in name or shape from ``abstract``, this run's state; ``where``
    names the checkpoint."""
    stored = _leaf_specs(stored_tree)
    wanted = _leaf_specs(abstract)
    # Parameters first: their difference is the one worth naming.
    for name in sorted(set(stored) | set(wanted), key=lambda n: ("params" not in n, n)):
        if name not in stored:
            raise CheckpointError(f"{where}: the checkpoint has no '{name}' (it was written "
                                  "by a different network or optimizer)")
        if name not in wanted:
            raise CheckpointError(f"{where}: the checkpoint holds '{name}', which this run's "
                                  "state does not (different network or optimizer)")
        if stored[name][0] != wanted[name][0]:
            raise CheckpointError(f"{where}: '{name}' has shape {stored[name][0]} in the "
                                  f"checkpoint, {wanted[name][0]} in this run")


def savable_leaf(x: Any) -> Any:
    # Orbax saves arrays, not Python or NumPy scalars: counters become 0-d int64 arrays.
    if isinstance(x, int | float | np.generic):
        return np.asarray(x)
    return x


def abstract_leaf(x: Any) -> Any:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return ocp.utils.to_shape_dtype_struct(savable_leaf(x))
