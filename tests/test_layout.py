"""The import direction of the project, checked by parsing every module's imports (ast), lazy ones too.

views (and the other edges: api, admin, forms, tasks, commands, urls) -> services -> models, permissions,
errors -> solver. Services never import an edge; the core never imports services or an edge; `solver`
never imports `tutor` or `django`; and the modules of `tutor` import each other without cycles.
The checker is run on the real tree and on small synthetic trees that break each rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The layers of tutor/, by module name prefix (the first that matches).
SERVICES = ("tutor.services",)
CORE = ("tutor.models", "tutor.permissions", "tutor.errors", "tutor.settings", "tutor.apps")
EDGE = (
    "tutor.views",
    "tutor.admin",
    "tutor.forms",
    "tutor.tasks",
    "tutor.management",
    "tutor.urls",
    "tutor.context_processors",
    "tutor.templatetags",
    "tutor.openapi",
    "tutor.wsgi",
    "tutor.asgi",
)


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_names(root: Path, packages: tuple[str, ...] = ("tutor", "solver")) -> dict[str, Path]:
    """Every module under `root`'s packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if "migrations" in parts:
                continue  # generated; they import django.db only
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules it imports (anywhere in its body), resolved against the modules found:
    `from tutor.services import asking` is an import of `tutor.services.asking`."""
    modules = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    base = ".".join([*here, base] if base else here)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = targets
    return graph


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the layout, and every cycle among tutor's modules."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _in(module, ("solver",)) and _in(target, ("tutor", "django")):
                found.append(f"{module} imports {target}: solver is a plain library")
            elif _in(module, SERVICES) and _in(target, EDGE):
                found.append(f"{module} imports {target}: services never import views or edges")
            elif _in(module, CORE) and _in(target, SERVICES + EDGE):
                found.append(f"{module} imports {target}: the core never imports services or edges")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among tutor's modules (one per strongly connected group, Tarjan's algorithm)."""
    nodes = sorted(m for m in graph if _in(m, ("tutor",)))
    edges = {
        m: sorted(t for t in graph[m] if t in graph and _in(t, ("tutor",)) and t != m)
        for m in nodes
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in nodes:
        if node not in index:
            visit(node)
    return groups


def test_the_project_imports_go_one_way():
    graph = import_graph(ROOT)
    assert "tutor.services.asking" in graph and "solver.cache" in graph  # the tree was found
    assert "tutor.services.asking" in graph["tutor.views.student"]
    assert violations(graph) == []


def test_services_are_modules_by_use_case_with_no_blob_package():
    init = (ROOT / "tutor" / "services" / "__init__.py").read_text()
    assert not [n for n in ast.parse(init).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not (ROOT / "tutor" / "services.py").exists()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for package in ("tutor", "tutor/services", "tutor/views", "solver"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


GOOD = {
    "tutor/models.py": "from django.db import models\n",
    "tutor/services/asking.py": "from tutor.models import Question\nfrom solver import cache\n",
    "tutor/views/student.py": "from tutor.services import asking\n",
    "solver/cache.py": "import math\n",
}


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({}, None),
        (
            {"tutor/services/asking.py": "def f():\n    from tutor.views import student\n"},
            "tutor.services.asking imports tutor.views.student: services never import views",
        ),
        (
            {"tutor/services/asking.py": "from tutor import tasks\n", "tutor/tasks.py": ""},
            "tutor.services.asking imports tutor.tasks: services never import views or edges",
        ),
        (
            {"solver/cache.py": "from django.conf import settings\n"},
            "solver.cache imports django.conf: solver is a plain library",
        ),
        (
            {"solver/cache.py": "from tutor.models import Problem\n"},
            "solver.cache imports tutor.models: solver is a plain library",
        ),
        (
            {"tutor/models.py": "def f():\n    from tutor.services import asking\n"},
            "tutor.models imports tutor.services.asking: the core never imports",
        ),
        (
            {
                "tutor/services/asking.py": "from tutor.services import live\n",
                "tutor/services/live.py": "from . import asking\n",
            },
            "import cycle: tutor.services.asking -> tutor.services.live",
        ),
    ],
)
def test_the_checker_refuses_each_wrong_import(tmp_path, change, complaint):
    found = violations(import_graph(_tree(tmp_path, {**GOOD, **change})))
    if complaint is None:
        assert found == []
    else:
        assert any(f.startswith(complaint) for f in found), found


def test_the_readme_layout_names_every_solver_and_service_module():
    """README.md's Layout section keeps up with the tree: each module of solver/ and tutor/services/."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"`([a-z_]+)/?`", section))
    for package in (ROOT / "solver", ROOT / "tutor" / "services"):
        modules = {p.stem for p in package.glob("*.py") if not p.stem.startswith("__")}
        modules |= {p.name for p in package.iterdir() if (p / "__init__.py").exists()}
        assert modules - named == set(), f"{package.name}/: missing from README's Layout"
