"""Imports only point down. Layers, bottom to top:

0. infra      settings, renderers, components, the base of the error tree (infra/errors.py)
1. verify     checks of a deployed stack from its outputs; knows nothing of the CLI or operations
2. elizadb    errors, config and the local executor (elizadb.local) of infra's declaration
3. elizadb    operations (elizadb.ops) and drills (elizadb.drills), which drive the executor
4. elizadb    the CLI (elizadb.cli*, elizadb.__main__)

Every import counts, including those inside functions and under TYPE_CHECKING: a module may
import its own layer or a lower one, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("infra", "verify", "elizadb")

# Longest prefix wins.
LAYERS: dict[str, int] = {
    "infra": 0,
    "verify": 1,
    "elizadb": 2,
    "elizadb.errors": 2,
    "elizadb.config": 2,
    "elizadb.local": 2,
    "elizadb.ops": 3,
    "elizadb.drills": 3,
    "elizadb.cli": 4,
    "elizadb.cli_backup": 4,
    "elizadb.cli_drill": 4,
    "elizadb.cli_move": 4,
    "elizadb.__main__": 4,
}


def layer(module: str) -> int | None:
    """The layer of a project module; None for anything outside the project."""
    best: str | None = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return None if best is None else LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) of every import in the source, at any depth, relative ones resolved."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from elizadb import cli` imports elizadb.cli
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def upward_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    own = layer(module)
    assert own is not None, f"{module} is in no layer: add it to LAYERS"
    problems = []
    for line, target in imported(source, module, is_package):
        theirs = layer(target)
        if theirs is not None and theirs > own:
            problems.append(f"{module}:{line} imports {target} (layer {theirs} above {own})")
    return problems


def project_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_every_import_points_down() -> None:
    problems = []
    for path in project_modules():
        problems += upward_imports(
            path.read_text(), module_name(path), is_package=path.name == "__init__.py"
        )
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_the_modules_are_found() -> None:
    names = {module_name(p) for p in project_modules()}
    assert {"infra.settings", "verify.suite", "elizadb.ops.failover", "elizadb.cli"} <= names


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("infra.settings", "from elizadb.errors import ConfigError\n"),
        ("verify.suite", "def f():\n    from elizadb.ops import failover\n"),
        ("verify.checks.tls", "import elizadb.cli\n"),
        ("elizadb.ops.failover", "from elizadb import cli_drill\n"),
        ("elizadb.local.apply", "from ..ops import backup\n"),
        (
            "infra.program",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import verify\n",
        ),
    ],
)
def test_an_upward_import_is_caught(module: str, source: str) -> None:
    assert upward_imports(source, module)


def test_a_downward_import_passes(tmp_path: Path) -> None:
    source = "from infra.errors import UsageError\nfrom verify import report\nimport os\n"
    written = tmp_path / "mod.py"
    written.write_text(source)
    assert upward_imports(written.read_text(), "elizadb.cli") == []
    assert upward_imports("from .settings import X\n", "infra.program") == []
