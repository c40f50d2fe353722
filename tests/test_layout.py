"""The package's structure, as rules a change can break: which layer imports which, no module
handing on names it does not define, function-level imports only where they are needed, and
what ``python -m jax_reset.train`` imports before JAX starts."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO

PACKAGE = REPO / "jax_reset"
LOWER = ("demos", "envs", "networks", "ppo", "curriculum")  # the libraries the trainer uses
HIGHER = ("run", "training", "parallel", "evaluation", "bench")
ENTRY_POINTS = ("train", "evaluate", "plot", "demo", "export")
FACES = ("curriculum", "envs", "demos", "networks")  # package APIs: their __init__ re-exports


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text(), str(path))
    return out


def imported(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """(module imported, node) for every ``jax_reset`` import; ``from jax_reset import x``
    names ``jax_reset.x``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "jax_reset"):
            if node.module == "jax_reset":
                out += [(f"jax_reset.{a.name}", node) for a in node.names]
            else:
                out.append((node.module, node))
        elif isinstance(node, ast.Import):
            out += [(a.name, node) for a in node.names if a.name.startswith("jax_reset")]
    return out


def top(module: str) -> str:
    """The first component under ``jax_reset``: "run" for ``jax_reset.run.state``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_top_level_holds_entry_points_configs_metrics_and_packages_only() -> None:
    files = {p.stem for p in PACKAGE.glob("*.py")}
    assert files == {"__init__", *ENTRY_POINTS, "config", "config_tree", "metrics",
                     "milestones"}, files


def test_no_import_from_a_lower_layer_to_a_higher_one() -> None:
    bad = []
    for name, tree in modules().items():
        layer = top(name)
        if layer in LOWER:
            forbidden = (*HIGHER, *ENTRY_POINTS)
        elif layer == "run":
            forbidden = ("training", "evaluation", "bench", *ENTRY_POINTS)
        else:
            continue
        bad += [f"{name} imports {mod}" for mod, _ in imported(tree) if top(mod) in forbidden]
    assert not bad, bad


def test_no_module_re_exports_a_name_it_does_not_define() -> None:
    bad = []
    for name, tree in modules().items():
        if name in {f"jax_reset.{f}" for f in FACES}:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                bad += [f"{name}: import {a.name} as {a.asname}" for a in node.names
                        if a.asname is not None and a.asname == a.name]
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
                bad.append(f"{name}: __all__")
    assert not bad, bad


def test_function_level_package_imports_are_few_and_say_why() -> None:
    """At most 20, each with a comment on its line or above its block of imports (the pre-JAX
    rule, an optional dependency)."""
    found = []
    for name, tree in modules().items():
        path = PACKAGE.parent / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = PACKAGE.parent / name.replace(".", "/") / "__init__.py"
        lines = path.read_text().splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and any(
                        mod.startswith("jax_reset") for mod, _ in imported(
                            ast.Module(body=[node], type_ignores=[]))):
                    above = node.lineno - 2
                    while lines[above].strip().startswith(("from ", "import ")):
                        above -= 1  # the comment may head a block of imports
                    found.append((name, node.lineno, "#" in lines[node.lineno - 1]
                                  or lines[above].strip().startswith("#")))
    assert len(found) <= 20, found
    assert all(commented for *_, commented in found), [f for f in found if not f[2]]


def test_the_train_command_checks_its_input_before_jax_is_imported() -> None:
    code = ("import sys, jax_reset.train, jax_reset.bench.train; "
            "print(sorted(m for m in ('jax', 'flax', 'orbax.checkpoint') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
