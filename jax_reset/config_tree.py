"""Generic machinery over trees of frozen dataclasses and TOML config files (no JAX, no schema).

It builds a frozen dataclass tree from nested mappings with every key and type checked, each
problem a ``ConfigError`` of one line naming the dotted key (``from_dict``), and turns one back
into plain data (``to_dict``); parses command-line ``section.key=value`` overrides as TOML values
and sets them in a nested mapping (``parse_value``, ``parse_override``, ``apply_overrides``);
reads a TOML (or saved JSON) file with its ``base`` chain merged in and its CPU overlay as the
``[on_cpu]`` table (``read_file``, the linking rules are ``jax_reset.config``'s docstring);
and merges, compares and atomically saves such trees (``merge``, ``diff``, ``save_json``). The
run's own schema and its loader are ``jax_reset.config``; callers import these names from here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

# Reserved top-level keys of a config file: the file it extends, its CPU overlay (both paths
# relative to the file naming them) and the inline form of the overlay.
BASE_KEY = "base"
CPU_KEY = "cpu"
CPU_TABLE = "on_cpu"


class ConfigError(ValueError):
    """A config file, a key or a value is unusable; the message is one line naming the key."""


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_describe(args[0])}"
        return "list [" + ", ".join(_describe(a) for a in args) + "]"
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list",
            tuple: "list", dict: "table"}.get(type(value), type(value).__name__)


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns the typed value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table, got {_type_name(value)} {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {_type_name(value)} {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str | int | bool):
            return value
        raise ConfigError(f"{key}: expected one of {_describe(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {_type_name(value)} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        # bool is an int in Python, never in a config; 1e6 is accepted for an integral int.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise ConfigError(f"{key}: the schema's type {tp!r} is not supported by the config reader")
    raise ConfigError(f"{key}: expected {_describe(tp)}, got {_type_name(value)} {value!r}")


def from_dict(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds the frozen dataclass ``cls`` from a nested mapping, checking keys and types.

    Missing keys take the schema's defaults (a key without a default is an error). The
    dataclass's own ``__post_init__`` checks (``ValueError``) are reported with the section name.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    where = f"{prefix}." if prefix else ""
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key '{where}{key}' (known: {known})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where + name)
        elif (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING):
            if dataclasses.is_dataclass(hints[name]):
                kwargs[name] = from_dict(hints[name], {}, prefix=where + name)
            else:
                raise ConfigError(f"missing key '{where}{name}'")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        section = prefix or cls.__name__
        raise ConfigError(f"{section}: {err}") from None


def to_dict(obj: Any) -> Any:
    """The plain-data form of a dataclass tree (tuples as lists), for TOML/JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def parse_value(text: str) -> Any:
    """A command-line value: a TOML value if it parses as one, else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """``"ppo.lr=3e-4"`` → ``("ppo.lr", 3e-4)``."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}': expected section.key=value")
    return key, parse_value(text.strip())


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str] | Mapping[str, Any],
                    ) -> dict[str, Any]:
    """Returns a copy of the nested mapping with dotted overrides set (types checked later)."""
    result = _deep_copy(data)
    items = (overrides.items() if isinstance(overrides, Mapping)
             else [parse_override(o) for o in overrides])
    for key, value in items:
        parts = key.split(".")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{key}': '{'.'.join(parts[:i + 1])}' is not a table")
            node = child
        node[parts[-1]] = value
    return result


def drop_retired_keys(data: Mapping[str, Any], retired: Mapping[str, Any],
                      ) -> dict[str, Any]:
    """A saved config (nested) without the ``retired`` keys (dotted key -> the one accepted
    value; a copy); a retired key with another value than the accepted one is a
    ``ConfigError``."""
    result = _deep_copy(data)
    for dotted, accepted in retired.items():
        *sections, name = dotted.split(".")
        node: Any = result
        for part in sections:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, dict) or name not in node:
            continue
        if node[name] != accepted:
            raise ConfigError(f"{dotted} = {node[name]!r}: this key was removed and only "
                              f"{accepted!r} can be read (the saved run used another value)")
        del node[name]
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _parse(path: Path, retired: Mapping[str, Any]) -> dict[str, Any]:
    """One TOML (or, for a saved run config, JSON) file as it is written: a nested dict (a
    saved config without its ``retired`` keys)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
        else:
            with path.open("rb") as f:
                data = tomllib.load(f)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise ConfigError(f"{path}: not valid {kind}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table at the top level")
    if path.suffix == ".json":
        try:
            return drop_retired_keys(data, retired)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return data


def _linked(path: Path, data: dict[str, Any], key: str, chain: tuple[Path, ...],
            retired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The file that ``path``'s ``key`` (``base`` or ``cpu``) names, read with its own links."""
    if key not in data:
        return None
    value = data.pop(key)
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key}: expected a string (a path relative to this file), "
                          f"got {_type_name(value)} {value!r}")
    target = path.parent / value
    if not target.is_file():
        raise ConfigError(f"{path}: {key} = {value!r}: no such config file ({target})")
    return read_file(target, chain, retired=retired)


def read_file(path: str | os.PathLike, _chain: tuple[Path, ...] = (),
              retired: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Reads a config file into a nested dict, with its ``base`` chain merged in and its CPU
    overlay (a ``cpu`` file, an ``[on_cpu]`` table or both) as the ``[on_cpu]`` table.

    A cycle of ``base``/``cpu`` links is refused with one line naming the files. A JSON file
    (a saved config) loses its ``retired`` keys (``drop_retired_keys``).
    """
    retired = {} if retired is None else retired
    path = Path(path)
    chain = (*_chain, path)
    if any(path.resolve() == p.resolve() for p in _chain):
        raise ConfigError(f"{chain[0]}: the {BASE_KEY}/{CPU_KEY} links form a cycle: "
                          + " -> ".join(str(p) for p in chain))
    data = _parse(path, retired)
    base = _linked(path, data, BASE_KEY, chain, retired) or {}
    overlay = _linked(path, data, CPU_KEY, chain, retired)
    if CPU_TABLE in data and not isinstance(data[CPU_TABLE], Mapping):
        raise ConfigError(f"{path}: {CPU_TABLE}: expected a table of overrides")
    if overlay is not None and CPU_TABLE in overlay:
        raise ConfigError(f"{path}: {CPU_KEY}: a CPU overlay cannot have a CPU overlay itself")
    result = merge(base, data)  # the [on_cpu] tables merge like any table
    if overlay is not None:  # a file's own cpu file replaces the one its base named
        result[CPU_TABLE] = merge(overlay, data.get(CPU_TABLE, {}))
    return result


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``os.umask`` can
    only be read by setting it, which races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any],
                 binary: bool = False) -> Path:
    """Writes ``path`` whole or not at all: ``write(f)`` fills a temporary file beside it, which
    then replaces ``path`` by a rename (a crash leaves the old file or the new one, never a
    torn one; the temporary file is removed on failure). The package's one atomic write
    (configs, metrics logs, demo files); it lives here because this module imports nothing of
    the package, so every layer may use it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if binary else "utf-8"
        with os.fdopen(fd, "wb" if binary else "w", encoding=encoding) as f:
            write(f)
        # mkstemp makes the file private (0600): give it the mode open() would (a demo, a
        # config or a log that other users of the machine can read, as before the rewrite).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_json(obj: Any, path: str | os.PathLike) -> Path:
    """Writes the config (dataclass or dict) as JSON, atomically (``atomic_write``)."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text))


def diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested mappings (sorted)."""
    out = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key, _ABSENT), b.get(key, _ABSENT)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff(va, vb, prefix=name + ".")
        elif _norm(va) != _norm(vb):
            out.append(name)
    return out


_ABSENT = object()


def _norm(value: Any) -> Any:
    return [_norm(v) for v in value] if isinstance(value, list | tuple) else value


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two nested mappings; ``extra`` wins."""
    out = _deep_copy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = _deep_copy(value) if isinstance(value, Mapping) else value
    return out

