"""The package's import graph, read from the source (every import statement,
deferred ones inside functions included): the core (models/, pipeline/)
imports none of the commands' code, and no module imports itself back."""
import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "spacy_pytorch_shim"
ORCHESTRATION = ("annotate", "data_parallel", "cli", "distributed", "parallel")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The package's modules that `name` imports anywhere in its source.
    `from . import x` of a submodule is an import of that submodule (its
    package is already being imported)."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {target})
    return {module for module in found if module in known and module != name}


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    found, state = [], {}

    def visit(node: str, stack: List[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


def test_the_core_imports_no_orchestration():
    edges = graph()
    core = [m for m in edges if m.split(".")[1:2] in (["models"], ["pipeline"])]
    assert core, "no core modules found"
    bad = {
        module: sorted(t for t in targets if t.split(".")[1] in ORCHESTRATION)
        for module, targets in edges.items()
        if module in core
    }
    assert {m: t for m, t in bad.items() if t} == {}


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_graph_sees_deferred_imports(tmp_path):
    """The reader finds an import inside a function (the kind that hid a cycle)."""
    path = PACKAGE / "models" / "serialization.py"
    assert "spacy_pytorch_shim.models.torch_shim" in imports_of("spacy_pytorch_shim.models.serialization", path, set(modules()))
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from .torch_shim import TorchShim\n")
    assert imports_of("spacy_pytorch_shim.models.mod", source, set(modules())) == {"spacy_pytorch_shim.models.torch_shim"}
