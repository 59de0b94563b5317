"""The layout is the architecture (docs/architecture.md): packages by capability in
layers, a lower layer never importing a higher one, siblings never each other, no import
circles, and functions short enough to read in one screen. Every import counts, those
inside functions too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

SCORER = ROOT / "scorer"

#: package (or ground module) -> layer; a module may import its own package and lower layers
LAYERS = {
    "errors": 0, "settings": 0, "log": 0, "storage": 0,  # the ground, shared by all
    "data": 1, "azure": 1,
    "r": 2, "monitoring": 2,
    "models": 3,
    "batch": 4, "online": 4,
    "twin": 5,
    "cli": 6, "__main__": 6, "__init__": 6,  # the top: the commands, which may use everything
}
TOP = 6


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SCORER.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The scorer modules ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scorer":
            for alias in node.names:  # `from scorer.r import bridge` imports the module scorer.r.bridge
                if node.module == "scorer" and alias.name == "__version__":
                    continue  # a constant, not a dependency on the top
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "scorer"}
    return found


def place(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = modules()
GRAPH = {m: imports(p, set(MODULES)) for m, p in MODULES.items()}


def test_every_package_is_in_a_layer_and_says_what_it_owns_and_may_import():
    for module, path in MODULES.items():
        assert place(module) in LAYERS, f"{module}: no layer (add it to LAYERS and docs/architecture.md)"
        if path.name == "__init__.py" and module != "scorer":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "May import:" in doc, f"{module}: its docstring says what it owns and what it may import"


def test_no_module_imports_a_layer_above_it_or_a_sibling():
    wrong = []
    for module, deps in GRAPH.items():
        mine = place(module)
        for dep in deps:
            theirs = place(dep)
            if theirs != mine and not LAYERS[theirs] < LAYERS[mine] and 0 < LAYERS[mine] < TOP:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_the_ground_imports_nothing_above_it():
    for module, deps in GRAPH.items():
        if LAYERS[place(module)] == 0:
            assert {d for d in deps if LAYERS[place(d)] > 0} == set(), module


def test_no_import_circles():
    seen, stack, circles = set(), [], []

    def visit(m: str) -> None:
        if m in stack:
            circles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(GRAPH):
        visit(m)
    circles = [c for c in circles if not (len(c) == 2)]  # a module's own name
    assert circles == [], "\n".join(" -> ".join(c) for c in circles)


def test_only_the_bridge_imports_rpy2():
    def packages(path: Path) -> set[str]:
        nodes = list(ast.walk(ast.parse(path.read_text())))
        return ({(n.module or "").split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom)}
                | {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names})

    assert {m for m, p in MODULES.items() if "rpy2" in packages(p)} == {"scorer.r.bridge"}


#: functions and classes over the limits, each with the reason it stays whole
LONG = {
    "scorer.cli.build_parser": "the command line's declarations, one flat list of commands and options: read "
                               "top to bottom as `scorer --help` reads",
    "scorer.online.app.build_app": "the HTTP routes, each a short closure over the server, side by side with the "
                                   "table of routes they make (65 lines: 'about 60')",
    "scorer.r.bridge.RBridge": "embedded R, the one class that holds it (the only rpy2 importer): each method is "
                               "one R call or one conversion at R's C level, over the interpreter's state",
}
FUNCTION_LINES, CLASS_LINES = 60, 400


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_read_in_one_screen(module):
    tree = ast.parse(MODULES[module].read_text())
    over = []
    for node in ast.walk(tree):
        n = node.end_lineno - node.lineno + 1 if hasattr(node, "end_lineno") else 0
        name = f"{module}.{getattr(node, 'name', '')}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and n > FUNCTION_LINES and name not in LONG:
            over.append(f"{name}: {n} lines")
        if isinstance(node, ast.ClassDef) and n > CLASS_LINES and name not in LONG:
            over.append(f"class {name}: {n} lines")
    assert over == []


def _resolve(token: str):
    """The object a dotted name in docs/architecture.md stands for: a module path under
    scorer (``batch.job.Job.run``), or a class or function named first (``Claim.take``)."""
    import importlib

    parts = token.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("scorer." + ".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    for module in MODULES:
        if module.endswith("__main__"):  # importing it runs the command line
            continue
        mod = importlib.import_module(module)
        if hasattr(mod, parts[0]) and not isinstance(getattr(mod, parts[0]), type(importlib)):
            obj = getattr(mod, parts[0])
            for p in parts[1:]:
                obj = getattr(obj, p)
            return obj
    raise AttributeError(token)


def test_the_walk_names_functions_that_exist():
    import re

    walk = (ROOT / "docs" / "architecture.md").read_text().split("## One input", 1)[1]
    tokens = {t for t in re.findall(r"`([A-Za-z_][\w.]*)`", walk) if "." in t and not t.endswith((".R", ".csv", ".json"))}
    assert len(tokens) > 30
    missing = []
    for t in sorted(tokens):
        try:
            _resolve(t)
        except AttributeError:
            missing.append(t)
    assert missing == []
