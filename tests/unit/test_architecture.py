"""The module map holds (docs/architecture.md): imports run one way, no cycle, small modules with a docstring."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from hub.contract.topics import CONNECT_OFFSETS_TOPIC
from hub.core.config import ConnectConfig

ROOT = Path(__file__).resolve().parents[2]
CODE = ("hub", "connectors")
MAX_LINES = 400
# Generated files and data tables may be longer; none is today. Name each with the reason.
EXEMPT: dict[str, str] = {}

# What each package may import, bottom to top (itself included). The same table is in docs/architecture.md.
BELOW: dict[str, set[str]] = {
    "core": set(),
    "contract": {"core"},
    "kafka": {"core", "contract"},
    "routing": {"core", "contract"},
    "stages": {"core", "contract", "kafka", "routing"},
    "connectors": {"core", "contract", "kafka"},
    "runtime": {"core", "contract", "kafka", "routing", "stages"},
    "demo": {"core", "contract", "kafka", "routing", "stages", "connectors", "runtime"},
    "ops": {"core", "contract", "kafka", "routing", "stages", "connectors", "runtime", "demo"},
}


def package_of(module: str) -> str:
    """hub.stages.route -> stages; connectors.sql -> connectors; hub (the root) -> root."""
    parts = module.split(".")
    if parts[0] == "connectors":
        return "connectors"
    return parts[1] if len(parts) > 1 and parts[1] in BELOW else "root"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str, *, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) for every import of our code in a file, lazy ones inside functions too."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")
                if not path.name == "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
            # `from hub import x` imports the module hub.x when there is one
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in CODE]


def sources(root: Path = ROOT) -> list[Path]:
    return sorted(p for top in CODE for p in (root / top).rglob("*.py"))


def back_arrows(root: Path = ROOT) -> list[str]:
    """Every import that runs against the table above, as 'file:line: a -> b (package -> package)'."""
    known = {module_name(p, root) for p in sources(root)}
    problems = []
    for path in sources(root):
        module = module_name(path, root)
        here = package_of(module)
        for line, target in imports_of(path, module):
            if target not in known and target.rsplit(".", 1)[0] in known:
                continue  # `from pkg import name` also yields pkg.name; only real modules count
            there = package_of(target)
            if there == here or target == "hub":
                continue
            if here == "root":  # hub/__init__ may name the version (core); __main__ runs the CLI (ops)
                allowed = {"core"} if module == "hub" else {"ops"}
            else:
                allowed = BELOW[here]
            if there not in allowed:
                problems.append(f"{path.relative_to(root)}:{line}: {module} -> {target} ({here} -> {there})")
    return problems


def cycles(root: Path = ROOT) -> list[list[str]]:
    """Cycles among module-level imports (an import inside a function runs later and cannot deadlock)."""
    known = {module_name(p, root) for p in sources(root)}
    graph = {module_name(p, root): {t for _, t in imports_of(p, module_name(p, root), top_level_only=True)
                                    if t in known and t != module_name(p, root)}
             for p in sources(root)}
    # a package's __init__ is imported by its modules' importers; that edge is not a cycle of ours
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if node.startswith(nxt + "."):
                continue  # a module importing its own package's __init__
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_imports_run_one_way():
    assert back_arrows() == []


def test_no_import_cycle():
    assert cycles() == []


def test_production_code_never_imports_the_demo():
    offenders = [arrow for arrow in back_arrows() if arrow.endswith("-> demo)")]
    demo_users = [f"{p.relative_to(ROOT)}" for p in sources() if package_of(module_name(p, ROOT)) not in ("demo", "ops")
                  and any(package_of(t) == "demo" for _, t in imports_of(p, module_name(p, ROOT)))]
    assert offenders == [] and demo_users == []


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_and_says_what_it_owns(path):
    lines = len(path.read_text().splitlines())
    relative = str(path.relative_to(ROOT))
    assert relative in EXEMPT or lines <= MAX_LINES, f"{relative}: {lines} lines (limit {MAX_LINES}): split it"
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert path.name == "__main__.py" or docstring, f"{relative}: no module docstring saying what it owns"


def test_the_checks_catch_a_back_arrow_and_a_cycle(tmp_path):
    """The checker itself: a contract module importing a stage, and two modules importing each other."""
    for folder in ("hub/core", "hub/contract", "hub/stages", "connectors"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text('"""x"""\n')
    (tmp_path / "hub/__init__.py").write_text('"""x"""\n')
    (tmp_path / "hub/stages/route.py").write_text('"""x"""\nfrom hub.contract import topics\n')
    (tmp_path / "hub/contract/topics.py").write_text('"""x"""\ndef f():\n    from hub.stages.route import g\n')
    (tmp_path / "hub/core/a.py").write_text('"""x"""\nfrom hub.core import b\n')
    (tmp_path / "hub/core/b.py").write_text('"""x"""\nimport hub.core.a\n')
    assert back_arrows(tmp_path) == ["hub/contract/topics.py:3: hub.contract.topics -> hub.stages.route "
                                     "(contract -> stages)"]
    assert cycles(tmp_path) == [["hub.core.a", "hub.core.b", "hub.core.a"]]


def test_the_config_default_names_the_contract_topic():
    """core cannot import the topic module, so its default repeats the name: they must agree."""
    assert ConnectConfig().offsets_topic == CONNECT_OFFSETS_TOPIC
