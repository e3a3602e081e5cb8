"""The package's modules import each other without a cycle, read from their source (nothing is
imported).

An edge A -> B for each import of avtokens module B in module A: `import avtokens.x.y`,
`from avtokens.x import y` (to avtokens.x.y where y is a module, else to avtokens.x, whose
`__init__` defines y) and relative imports alike. Not edges: imports under `if TYPE_CHECKING:`
(they never run), and the parent packages Python imports on the way to a module (else every
package whose `__init__` imports a child would sit in a cycle with it).

Imports inside functions count. A cycle through one does not fail at import time, but it
still ties the modules into one knot that can be understood, tested or removed only whole (a
plug-in reaching back into the host that dispatches to it, as the stand-in writers and the
registries once did), and it fails at import time once someone moves that import to the top.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "avtokens"


def module_paths(package: Path) -> dict[str, Path]:
    """Every module under `package` by its dotted name (a package's `__init__` by the package's)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(nodes):
    """The import statements among `nodes` and inside them, but for those under TYPE_CHECKING."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse)
        else:
            yield from _imports(ast.iter_child_nodes(node))


def import_graph(package: Path) -> dict[str, dict[str, int]]:
    """module -> {module it imports: the line of its first import there}."""
    modules = module_paths(package)
    graph = {}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]  # relative imports' base
        edges = {}
        for node in _imports(ast.parse(path.read_text(), str(path)).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = here.rsplit(".", node.level - 1)[0]
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]  # fmt: skip
            for target in targets:
                if target in modules and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            on_stack.difference_update(component)
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    edges = [f"  {module} line {line} imports {target}" for module in component
             for target, line in sorted(graph[module].items()) if target in component]  # fmt: skip
    return f"{len(component)} modules in a circle: {', '.join(component)}\n" + "\n".join(edges)


def test_the_package_has_no_import_cycle():
    graph = import_graph(PACKAGE)
    assert "avtokens.visual_tokenizers.base" in graph  # the walk reached the subpackages
    found = cycles(graph)
    assert not found, "\n".join(describe(graph, component) for component in found)


def test_lazy_relative_and_submodule_imports_count_and_type_hints_do_not(tmp_path):
    sources = {
        "__init__.py": "VERSION = 1\n",
        "host.py": "from avtokens import VERSION\n\n\ndef run():\n    from avtokens.plugins import entry\n",
        "plugins/__init__.py": "from . import entry\n",
        "plugins/entry.py": "from ..host import run\n\nif TYPE_CHECKING:\n    from avtokens import hints\n",
        "hints.py": "import avtokens.plugins.entry\n",
    }
    for name, text in sources.items():
        (tmp_path / "avtokens" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "avtokens" / name).write_text(text)
    graph = import_graph(tmp_path / "avtokens")
    assert graph == {
        "avtokens": {},
        "avtokens.hints": {"avtokens.plugins.entry": 1},
        "avtokens.host": {"avtokens": 1, "avtokens.plugins.entry": 5},
        "avtokens.plugins": {"avtokens.plugins.entry": 1},
        "avtokens.plugins.entry": {"avtokens.host": 1},
    }
    assert cycles(graph) == [["avtokens.host", "avtokens.plugins.entry"]]
    assert describe(graph, cycles(graph)[0]) == (
        "2 modules in a circle: avtokens.host, avtokens.plugins.entry\n"
        "  avtokens.host line 5 imports avtokens.plugins.entry\n"
        "  avtokens.plugins.entry line 1 imports avtokens.host"
    )
