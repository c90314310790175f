"""The package's layers as its imports draw them: which part of `batchlab` imports which.

`docs/architecture.md` shows this graph between the markers `<!-- layers:begin -->` and `<!-- layers:end -->`;
`python scripts/layers.py --write` regenerates that block from the source, and `tests/test_architecture.py`
fails when the block is stale or when the graph has a cycle (dependencies point one way).

A part is a subpackage of `batchlab` (`engine`, `store`, ...) or a top-level module (`cli`, `noise`, ...). Every
`import` counts, those inside functions too (a deferred import is still a dependency), except under
`if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "batchlab"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"


def part_of(module: str) -> str | None:
    """`batchlab.engine.fold` -> `engine`; `batchlab` itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "batchlab" else None


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """The absolute names of the `batchlab` modules a file imports."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("batchlab"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("batchlab"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)  # `from . import store` names a part
    return found


def graph() -> dict[str, set[str]]:
    """part -> the parts it imports (itself excluded)."""
    parts = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir() if _is_part(p)}
    edges: dict[str, set[str]] = {p: set() for p in parts}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = part_of(module_name(path))
        if src not in edges:  # batchlab/__init__.py and __main__.py re-export; they are no layer
            continue
        for target in imports_of(path):
            dst = part_of(target)
            if dst in parts and dst != src:
                edges[src].add(dst)
    return edges


def _is_part(p: Path) -> bool:
    if p.is_dir():
        return (p / "__init__.py").exists()
    return p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py")


def layers(edges: dict[str, set[str]]) -> list[list[str]]:
    """Parts grouped by depth: layer 0 imports no other part; a part sits one above the highest part it imports.
    Raises CycleError when two parts import each other (directly or through others)."""
    order = list(TopologicalSorter(edges).static_order())
    depth: dict[str, int] = {}
    for p in order:
        depth[p] = 1 + max((depth[d] for d in edges[p]), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for p, d in depth.items():
        out[d].append(p)
    return [sorted(layer) for layer in out]


def render(edges: dict[str, set[str]]) -> str:
    """The block for docs/architecture.md: layers from the top (the CLI) down, each part with what it imports."""
    lines = ["```"]
    for i, layer in reversed(list(enumerate(layers(edges)))):
        lines.append(f"layer {i}")
        for p in layer:
            deps = ", ".join(sorted(edges[p])) or "-"
            lines.append(f"  {p:<14} -> {deps}")
    lines.append("```")
    return "\n".join(lines)


def current_block(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n")


def main(argv: list[str]) -> int:
    edges = graph()
    try:
        block = render(edges)
    except CycleError as e:
        print(f"error: the parts import each other in a cycle: {' -> '.join(e.args[1])}", file=sys.stderr)
        return 1
    if "--write" in argv:
        text = DOC.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        DOC.write_text(text[:start] + "\n" + block + "\n" + text[end:])
        print(f"wrote the layers into {DOC.relative_to(ROOT)}")
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
