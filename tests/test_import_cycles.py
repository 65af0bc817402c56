"""No import circle among ``sonde.*`` modules.

Every import counts, at module level or deferred into a function (only those under
``if TYPE_CHECKING:`` are left out: they never run). A deferred import does not break
at load time, but the circle it closes is still two modules each needing the other:
an ownership question (which of them owns the shared thing?) that the deferral hides.
"""

import ast
import pathlib

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "sonde"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(node: ast.AST):
    """Every import statement under ``node`` but those under ``if TYPE_CHECKING:``, which never run."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        children = node.orelse
    else:
        children = ast.iter_child_nodes(node)
    for child in children:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _imports(child)


def _targets(name: str, node: ast.stmt) -> set[str]:
    """The ``sonde`` modules ``node`` (in module ``name``) imports."""
    is_package = MODULES[name].name == "__init__.py"
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        base = name.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = {source} if source in MODULES else set()
    found |= {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        edges = set()
        for node in _imports(ast.parse(path.read_text())):
            edges |= _targets(name, node)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle in ``graph`` as a list of modules (the first repeated at the end), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
                on_path.add(child)
    return None


def test_the_graph_is_read():
    graph = import_graph()
    # known edges, relative and absolute, from a package and from a module
    assert "sonde._exceptions" in graph["sonde"]
    assert "sonde.api.otlp" in graph["sonde.api.app"]
    assert "sonde.ingest.pipeline" in graph["sonde.api.app"] | graph["sonde.api.otlp"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)
