"""The layout's rules, read from the import graph (README, "How the code is organised").

Module-level imports (outside ``if TYPE_CHECKING``) are the graph; imports inside functions are
deferred on purpose (loaded when that function first runs) and are checked by what a fresh process
has loaded after importing the integrations and routing a prompt.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("routoo_shared", "langchain_routoo", "llama_index_routoo")
OLD_PATHS = {  # kept so that users' imports keep working; each is the new module itself
    "routoo_shared.router": "routoo_shared.routing.router",
    "routoo_shared.pool": "routoo_shared.routing.pool",
    "routoo_shared.budget": "routoo_shared.routing.budget",
    "routoo_shared.fallback": "routoo_shared.routing.fallback",
    "routoo_shared.selector": "routoo_shared.routing.selector",
    "routoo_shared.tokens": "routoo_shared.routing.tokens",
    "routoo_shared.messages": "routoo_shared.routing.messages",
    "routoo_shared.cascade": "routoo_shared.routing.cascade",
    "routoo_shared.predictor": "routoo_shared.predictors.predictor",
    "routoo_shared.encoder": "routoo_shared.predictors.encoder",
    "routoo_shared.calibration": "routoo_shared.predictors.calibration",
    "routoo_shared.labeling": "routoo_shared.data.labeling",
    "routoo_shared.feedback": "routoo_shared.data.feedback",
    "routoo_shared.local_llm": "routoo_shared.local.llm",
}
NOT_ON_A_CALL = ("routoo_shared.evaluation", "routoo_shared.predictors.training", "routoo_shared.data.labeling",
                 "routoo_shared.cli", "matplotlib", "sklearn")
HEAVY = ("torch", "transformers", "sklearn", "matplotlib", "safetensors", "ray", "redis", "fastapi", "uvicorn")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (``from a import b`` counts ``a`` and ``a.b``)."""
    found: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and not is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        if name in OLD_PATHS:
            continue
        targets = {OLD_PATHS.get(t, t) for t in top_level_imports(path)}
        edges[name] = {t for t in targets if t in modules and t != name}
        edges[name] |= {t for t in targets if not t.startswith(PACKAGES)}  # third-party, by full name
    return edges


def closure(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for target in graph.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def test_no_import_circles(graph):
    own = {name: {t for t in targets if t in graph} for name, targets in graph.items()}
    for name in own:
        assert name not in closure(own, name), f"{name} imports itself through {sorted(closure(own, name) & set(own))}"


def test_the_routing_runtime_imports_no_evaluation_training_labelling_or_plotting(graph):
    for name in (n for n in graph if n.startswith("routoo_shared.routing")):
        reached = closure(graph, name)
        bad = sorted(t for t in reached if t.startswith(NOT_ON_A_CALL) or t.split(".")[0] in HEAVY)
        assert not bad, f"{name} imports {bad}"


def test_integrations_import_only_the_routing_runtime_and_their_framework(graph):
    allowed = ("routoo_shared.routing", "routoo_shared.datasets", "routoo_shared.predictors.errors", "routoo_shared.local",
               "routoo_shared.lazy_exports",
               "langchain_routoo", "llama_index_routoo")
    for name in (n for n in graph if n.startswith(("langchain_routoo", "llama_index_routoo"))):
        ours = {t for t in closure(graph, name) if t.startswith(PACKAGES) and t not in ("routoo_shared",)}
        outside = sorted(t for t in ours if not t.startswith(allowed) and t not in ("routoo_shared.local",))
        assert not outside, f"{name} imports {outside}"
        heavy = sorted(t for t in closure(graph, name) if t.split(".")[0] in HEAVY)
        assert not heavy, f"{name} imports {heavy} when it is imported"


def test_old_import_paths_are_the_new_modules():
    for old, new in OLD_PATHS.items():
        old_module, new_module = __import__(old, fromlist=["_"]), __import__(new, fromlist=["_"])
        assert old_module is new_module, old
    from routoo_shared.data import bundled, load_pool  # the old data module's names, from its package
    from routoo_shared.evaluation import Evaluation, aiq  # the old evaluation module's names, loaded on use

    assert callable(bundled) and callable(load_pool) and callable(aiq) and Evaluation.__name__ == "Evaluation"


def test_a_fresh_process_loads_nothing_heavy_to_import_and_no_research_code_to_route():
    script = (
        "import sys\n"
        "from langchain_routoo import RoutooChatModel\n"
        "from llama_index_routoo import RoutooLLM\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not heavy, f'importing the integrations loaded {heavy}'\n"
        "from routoo_shared.router import Router\n"
        "Router.from_directory(pool_names='open').route('What is the derivative of x^3?')\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({NOT_ON_A_CALL!r}))\n"
        "assert not loaded, f'routing a prompt loaded {loaded}'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
