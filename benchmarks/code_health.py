"""Code-health checks for the keras_vit package: long functions, long modules, import cycles.

    python -m benchmarks.code_health            # report; exit 1 if anything is over the limits
    python -m benchmarks.code_health --limit 60 --module-limit 400

A function's length counts its code lines only: blank lines, comment lines
and its docstring (and nested functions' docstrings) are left out. Nested
functions are counted inside their parent and also on their own.

The import graph has an edge for every import of a keras_vit module
anywhere in a module, at its top or inside a function: an import moved
into a function so as not to run at import time still closes a cycle.
``from keras_vit.a import b`` is an edge to ``keras_vit.a.b`` when that is
a module, else to ``keras_vit.a``. A package's ``__init__`` is a module
like any other (``keras_vit.a``); importing ``keras_vit.a.b`` is not
counted as importing ``keras_vit.a``.
"""

from __future__ import annotations

import argparse
import ast
import io
import pathlib
import sys
import tokenize

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vit"


def _code_lines(source: str) -> set[int]:
    """The line numbers that hold code (not only comments, blanks or docstrings)."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
            tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant) and isinstance(
                    body[0].value.value, str):
                lines.difference_update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def function_lengths(path: pathlib.Path) -> list[tuple[int, str, int]]:
    """(code lines, qualified name, first line) of every function in one file."""
    source = path.read_text(encoding="utf-8")
    code = _code_lines(source)
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                span = range(child.lineno, child.end_lineno + 1)
                found.append((sum(1 for n in span if n in code), name, child.lineno))
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def module_lengths(root: pathlib.Path = PACKAGE) -> list[tuple[int, str]]:
    """(lines, path) of every module under ``root``, longest first."""
    rows = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(root.parent)))
            for p in sorted(root.rglob("*.py"))]
    return sorted(rows, reverse=True)


def long_functions(limit: int = 60, root: pathlib.Path = PACKAGE) -> list[tuple[int, str]]:
    """(code lines, "path:line name") of the functions over ``limit`` code lines, longest first."""
    rows = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        for length, name, line in function_lengths(path):
            if length > limit:
                rows.append((length, f"{rel}:{line} {name}"))
    return sorted(rows, reverse=True)


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    """{module: the package modules it imports, at any level}."""
    files = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import keras_vit.a.b as c` names a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(root: pathlib.Path = PACKAGE) -> list[list[str]]:
    """The strongly connected groups of more than one module (each a cycle or
    several), sorted; empty when the import graph is acyclic."""
    graph = import_graph(root)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def connect(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(groups)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="code lines per function")
    parser.add_argument("--module-limit", type=int, default=400, help="lines per module")
    parser.add_argument("--top", type=int, default=10, help="also list the N longest functions")
    args = parser.parse_args(argv)
    over = long_functions(args.limit)
    big = [row for row in module_lengths() if row[0] > args.module_limit]
    print(f"functions over {args.limit} code lines: {len(over)}")
    for length, where in over:
        print(f"  {length:4d}  {where}")
    print(f"modules over {args.module_limit} lines: {len(big)}")
    for length, where in big:
        print(f"  {length:4d}  {where}")
    longest = long_functions(0)[: args.top]
    print(f"longest {args.top} functions:")
    for length, where in longest:
        print(f"  {length:4d}  {where}")
    cycles = import_cycles()
    print(f"import cycles: {len(cycles)}")
    for group in cycles:
        print("  " + " <-> ".join(group))
    return 1 if over or big or cycles else 0


if __name__ == "__main__":
    sys.exit(main())
