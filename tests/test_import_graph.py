"""The package's modules import one way: no circle among module-level imports, nor through an
import inside a function or one made only for type checking; the contract (types.py) imports
nothing above it; and the policy model knows nothing of the files that load it (issue 18:
packs.py and policy.py used to import each other; profile.py, the laws and types.py closed a
circle through lazy and type-checking imports)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "persona_mw": ROOT / "persona_mw",
    "persona_mw_server": ROOT / "integrations" / "persona_mw_server",
    "persona_mw_litellm": ROOT / "integrations" / "persona_mw_litellm",
    "persona_mw_langchain": ROOT / "integrations" / "persona_mw_langchain",
}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, *, lazy: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements at module level (also under ``if``/``try``), skipping ``if
    TYPE_CHECKING:`` blocks; with ``lazy``, those inside functions and classes and those
    blocks too: every import a reader (or a type checker) follows."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test) and not lazy:
                continue
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
                continue
            nested = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if nested and not lazy:
                continue
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(
                        [n for n in inner if isinstance(n, ast.stmt)]
                        + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                    )

    visit(ast.parse(path.read_text()).body)
    return found


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _imports(path, lazy=lazy):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                targets = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            else:
                targets = [alias.name for alias in node.names]
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                    prefix = ".".join(parts[:i])
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        deps.add(prefix)
        graph[name] = deps
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph[node]):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            members = set(stack[stack.index(node) :])
            del stack[stack.index(node) :]
            if len(members) > 1:
                found.append(members)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_circle_among_module_level_imports() -> None:
    assert _cycle(_graph(lazy=False)) is None


def test_no_circle_even_through_lazy_or_type_checking_imports() -> None:
    """An import inside a function still ties two modules: it only runs later."""
    assert not _circles(_graph(lazy=True))


def test_the_contract_imports_nothing_above_it() -> None:
    """Not even for type checking: a type that a stage hands on in ``CallContext`` is declared in
    types.py by what the other stages read of it."""
    assert _graph(lazy=True)["persona_mw.types"] <= {"persona_mw.profile", "persona_mw.errors"}


def test_the_policy_model_does_not_import_its_loaders() -> None:
    """Not even lazily: the loader (bounds/loading.py) and the packs build on the model."""
    deps = _graph(lazy=True)["persona_mw.bounds.policy"]
    assert not deps & {"persona_mw.bounds.packs", "persona_mw.bounds.loading"}, deps
    assert "persona_mw.bounds.policy" in _graph(lazy=False)["persona_mw.bounds.packs"]
