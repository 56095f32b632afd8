"""The shape of the code: one installed namespace, small modules, no import loops, dependencies
pointing one way (ui -> index -> embedder)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedder", "index", "ui")
LAYER = {"embedder": 0, "index": 1, "ui": 2}


def modules() -> dict[str, Path]:
    """byakugan.* module name -> file, for every module of the three folders."""
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(["byakugan", *parts])] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every byakugan module this one imports, at the top or inside a function."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            stem = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (stem, node.module or "") if p)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {n: imports(n, p, known) for n, p in known.items()}


def test_no_module_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def test_no_import_loops(graph):
    # Tarjan's strongly connected components: any with more than one module is a loop.
    index, low, stack, on, loops, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not loops, loops


def test_dependencies_point_one_way(graph):
    upward = [(a, b) for a, deps in graph.items() for b in deps if LAYER[b.split(".")[1]] > LAYER[a.split(".")[1]]]
    assert not upward, upward


def test_code_imports_only_the_byakugan_namespace():
    bare = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else []
            bare += [(name, n) for n in names if n.split(".")[0] in PACKAGES]
    assert not bare, bare


def test_installed_as_one_namespace(tmp_path):
    script = ("import importlib, byakugan.index, byakugan.embedder, byakugan.ui.cli\n"
              "for m in ('index', 'embedder', 'ui'):\n"
              "    try:\n        importlib.import_module(m)\n    except ImportError:\n        continue\n"
              "    raise SystemExit(f'top-level module {m} is importable')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + proc.stdout
