"""Measure the package's structure: import circles, imports that run back up, big functions.

    python tools/structure.py [--max-lines 80] [--max-complexity 20] [--check]

Imports are read with ``ast`` from every ``judge`` and ``calibration`` module, those inside functions
(run-time imports) included, ``TYPE_CHECKING`` blocks excluded. A *circle* is a strongly connected set
of two or more modules; at package level (``judge.eval``, ``judge.grader``, ...) an import that runs
back up is an edge inside such a set. Complexity is McCabe's, as ruff's C901 counts it.
``--check`` exits 1 when anything is over the limits.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("judge", "calibration")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(mod: str) -> str | None:
        while mod and mod not in modules:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if (m := resolve(alias.name)) is not None:
                    found.add(m)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name if is_pkg else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            for alias in node.names:
                full = f"{base}.{alias.name}"
                m = full if full in modules else resolve(base)
                if m is not None:
                    found.add(m)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(name)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return ".".join(parts[:2])


def ruff_complexity(max_complexity: int) -> dict[tuple[str, int], int]:
    """McCabe complexity over ``max_complexity`` per (file, line), as ruff's C901 counts it."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        found_on_path = shutil.which("ruff")
        if found_on_path is None:
            sys.exit("ruff not found next to this Python or on PATH: complexity cannot be measured")
        ruff = Path(found_on_path)
    proc = subprocess.run(
        [str(ruff), "check", "judge", "--select", "C901", "--output-format", "concise", "--no-cache",
         "--config", f"lint.mccabe.max-complexity={max_complexity}"],
        cwd=ROOT, capture_output=True, text=True,
    )
    if proc.returncode not in (0, 1):  # 1: findings; anything else: ruff did not run, so nothing was measured
        sys.exit(f"ruff failed ({ruff}, exit {proc.returncode}): {proc.stderr.strip()}")
    found = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(.+?):(\d+):\d+: C901 .* \((\d+) > \d+\)", line)
        if m:
            found[(m.group(1), int(m.group(2)))] = int(m.group(3))
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-lines", type=int, default=80)
    ap.add_argument("--max-complexity", type=int, default=20)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    modules = set(files)
    graph = {m: imports_of(p, m, modules) for m, p in files.items()}
    circles = strongly_connected(graph)
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for m, deps in graph.items():
        for d in deps:
            if package_of(d) != package_of(m) and not package_of(m).startswith(package_of(d) + "."):
                pkg_graph[package_of(m)].add(package_of(d))
    pkg_circles = strongly_connected(pkg_graph)
    up = sorted(
        (m, d) for m, deps in graph.items() for d in deps
        if any(package_of(m) in c and package_of(d) in c and package_of(m) != package_of(d) for c in pkg_circles)
    )
    print(f"modules: {len(modules)}; import edges: {sum(map(len, graph.values()))}")
    print(f"module circles: {len(circles)}")
    for c in circles:
        print("  " + " <-> ".join(c))
    print(f"package circles: {len(pkg_circles)}")
    for c in pkg_circles:
        print("  " + " <-> ".join(c))
    print(f"imports that run back up (module edges inside a package circle): {len(up)}")
    for m, d in up:
        print(f"  {m} -> {d}")
    complex_ = ruff_complexity(args.max_complexity)
    big = []
    for m, p in files.items():
        if not m.startswith("judge"):
            continue
        rel = str(p.relative_to(ROOT))
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                cx = complex_.get((rel, node.lineno))
                if lines > args.max_lines or cx is not None:
                    big.append((rel, node.lineno, node.name, lines, cx))
    print(f"functions in judge/ over {args.max_lines} lines or complexity {args.max_complexity}: {len(big)}")
    for path, line, fn, lines, cx in sorted(big):
        print(f"  {path}:{line} {fn}: {lines} lines" + (f", complexity {cx}" if cx else ""))
    bad = bool(circles or pkg_circles or up or big)
    return 1 if (args.check and bad) else 0


if __name__ == "__main__":
    sys.exit(main())
