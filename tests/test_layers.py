"""The package's import graph, read with `ast` (every import, including those inside functions): layers import only
downwards, tasks -> lm -> data -> modules -> callbacks -> tools (cli, compare, demo, ...), and no module imports
itself back through others. Imports under `if TYPE_CHECKING:` are annotations only and are not edges."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cft"

# Lower number = lower layer. Modules not listed (cli, compare, demo, sweep, viz, ...) are tools: the top layer.
BASE = {"cft", "cft.errors", "cft.io", "cft.threads"}  # imported by anyone; import only each other
LAYERS = [("cft.tasks", 1), ("cft.metrics", 1), ("cft.lm", 2), ("cft.data", 3), ("cft.selectors", 3)]
LAYERS += [("cft.modules", 4), ("cft.callbacks", 5)]
TOOLS = 6
NAMES = {0: "base", 1: "tasks", 2: "lm", 3: "data", 4: "modules", 5: "callbacks", 6: "tools"}


def layer(module: str) -> int:
    if module in BASE:
        return 0
    for prefix, level in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return TOOLS


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> the cft modules it imports (a package import counts as importing its __init__)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in modules and t != name}
        graph[name] = deps
    return graph


def test_graph_is_read():
    graph = import_graph()
    assert "cft.modules.scorer" in graph["cft.modules"]
    assert "cft.data.annotation_format" in graph["cft.callbacks.annotation_writer"]
    assert layer("cft.cli") == TOOLS and layer("cft.data.train") == 3


def test_no_upward_imports():
    graph = import_graph()
    upward = [
        f"{m} ({NAMES[layer(m)]}) imports {d} ({NAMES[layer(d)]})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layer(d) > layer(m)
    ]
    assert upward == [], "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exports its submodules; a submodule importing a sibling through the package name is
    an edge to the sibling, not a cycle through __init__."""
    packages = {m for m, p in _modules().items() if p.name == "__init__.py"}
    return {m: {d for d in deps if d not in packages or not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_cycles():
    cycles = _cycles(_without_package_inits(import_graph()))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"cft.data.a": {"cft.modules.b"}, "cft.modules.b": {"cft.data.a"}}
    assert _cycles(graph) == [["cft.data.a", "cft.modules.b"]]
    assert layer("cft.modules.b") > layer("cft.data.a")  # so the first edge is an upward import


def test_data_and_modules_are_given_what_they_need():
    """DataModules get the model's tokenizer and modules the DataModule's tasks from whoever composes the run
    (`CFTCLI._connect`), not by reaching through the trainer into each other: modules get its tasks, names and
    max_length that way and never read `trainer.datamodule`."""
    reach = []
    for path in sorted((PACKAGE / "data").glob("*.py")):
        reach += [f"{path.name}: lightning_module" for _ in range(path.read_text().count("lightning_module"))]
    for path in sorted((PACKAGE / "modules").glob("*.py")):
        text = path.read_text()
        reach += [
            f"{path.name}: {name}" for name in ("trainer.datamodule", '"datamodule"') for _ in range(text.count(name))
        ]
    assert reach == []
