"""The folders are the layers, and imports only go down.

Bottom to top: ``wolkvox`` (the vendor boundary), ``core`` (the pure core), ``orchestration`` (the
Dagster shell), ``cli`` (the command line), then the package's own top-level modules (the code
location's entry ``definitions.py``, ``__main__.py`` and the old-path shims that instance configs name).
A module may import its own layer or lower ones; ``wolkvox`` and ``core`` import no dagster: neither
``dagster`` nor any of its family (``dagster_shared``, ``dagster_pipes``, ``dagster_postgres``, ...).
"""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "amd_pipeline"
LAYERS = ["wolkvox", "core", "orchestration", "cli"]
TOP = len(LAYERS)  # amd_pipeline/*.py
DAGSTER_FREE = ["wolkvox", "core"]


def dagster_family(module: str) -> bool:
    """``dagster`` or one of the packages beside it (``dagster_shared``, ``dagster_pipes``, ...), or a module of one."""
    top_name = module.split(".")[0]
    return top_name == "dagster" or top_name.startswith("dagster_")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    return ".".join(("amd_pipeline", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__")


def layer_of(module: str) -> int:
    """The layer of an ``amd_pipeline`` module: its sub-package, or the top for the package's own modules."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return TOP


def layer_name(layer: int) -> str:
    return LAYERS[layer] if layer < TOP else "top level"


def imported_modules(path: Path, package_root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, those inside functions included, relative ones resolved.

    ``from a.b import c`` yields ``a.b.c`` as well as ``a.b``: ``c`` may be a module (``from
    amd_pipeline.core import store``).
    """
    name = module_name(path, package_root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module
            found.append((node.lineno, source))
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        here = module_name(path, root)
        mine = layer_of(here)
        for line, target in imported_modules(path, root):
            where = f"{path.relative_to(root.parent)}:{line}"
            top_name = target.split(".")[0]
            named = any(p.startswith(f"{where}: ") for p in problems)  # one problem per statement
            if dagster_family(target) and mine < TOP and LAYERS[mine] in DAGSTER_FREE and not named:
                problems.append(f"{where}: {here} ({layer_name(mine)}) imports {target}; this layer imports no dagster")
            if top_name != "amd_pipeline" or target == "amd_pipeline":
                continue
            theirs = layer_of(target)
            if theirs > mine and not named:
                problems.append(
                    f"{where}: {here} ({layer_name(mine)}) imports {target} ({layer_name(theirs)}), a higher layer"
                )
    return problems


def test_every_module_belongs_to_a_layer_folder_or_the_top():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == {*LAYERS, "defs"}
    # defs/ holds operation folders (defs.yaml), the settings of the code location: no code of its own.
    assert [p.name for p in (PACKAGE / "defs").rglob("*.py")] == ["__init__.py"]


def test_imports_only_go_down_and_the_vendor_boundary_and_core_import_no_dagster():
    problems = violations()
    assert not problems, "imports that go up a layer or into dagster:\n" + "\n".join(problems)


def test_the_check_names_a_module_that_imports_a_higher_layer(tmp_path):
    """The checker itself, on a copy of the package with one upward import and two dagster imports added
    (``dagster`` itself, and ``dagster_shared``, which the dagster package brings along)."""
    copy = tmp_path / "amd_pipeline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    store = copy / "core" / "store.py"
    store.write_text(
        store.read_text() + "\n\ndef _up():\n    from amd_pipeline.orchestration.assets import SOURCE_TAG\n"
    )
    client = copy / "wolkvox" / "client.py"
    client.write_text(client.read_text() + "\nimport dagster as dg\n")
    views = copy / "core" / "views.py"
    views.write_text(views.read_text() + "\nfrom dagster_shared import check\n")
    problems = violations(copy)
    assert len(problems) == 3, problems
    assert any(
        "amd_pipeline.core.store (core) imports amd_pipeline.orchestration.assets (orchestration), a higher layer" in p
        for p in problems
    )
    assert any("amd_pipeline.wolkvox.client (wolkvox) imports dagster" in p for p in problems)
    assert any("amd_pipeline.core.views (core) imports dagster_shared" in p for p in problems)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_sub_package_imports_on_its_own(layer):
    """All of a layer's modules import in a fresh interpreter, pulling in nothing from a higher layer
    (nor, for ``wolkvox`` and ``core``, anything of the dagster family: a lower layer or a library may bring it)."""
    modules = sorted(module_name(p) for p in (PACKAGE / layer).rglob("*.py"))
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    above = [m for m in loaded if m.startswith("amd_pipeline.") and layer_of(m) > LAYERS.index(layer)]
    assert above == []
    if layer in DAGSTER_FREE:
        assert [m for m in loaded if dagster_family(m)] == []


PRIVATE_ROOM = "amd_pipeline.orchestration.dagster_private"  # the one module that may use Dagster's private API


def type_checking_lines(path: Path) -> set[int]:
    """The lines of ``if TYPE_CHECKING:`` blocks: imports for annotations, never run."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for child in node.body for n in ast.walk(child) if hasattr(n, "lineno")}
    return lines


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it runs (at the top or inside functions)."""
    modules = {module_name(p, root) for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        here = module_name(path, root)
        annotations_only = type_checking_lines(path)
        targets = {
            target
            for line, target in imported_modules(path, root)
            if target in modules and target != here and line not in annotations_only
        }
        # `import amd_pipeline.x` also runs amd_pipeline/__init__.py: a package is not an edge of its own
        graph[here] = {t for t in targets if not here.startswith(f"{t}.") and t != "amd_pipeline"}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def private_dagster_imports(root: Path = PACKAGE) -> list[str]:
    """Every import of a ``dagster._`` module outside the guarded room."""
    return [
        f"{path.relative_to(root.parent)}:{line}: {target}"
        for path in sorted(root.rglob("*.py"))
        if module_name(path, root) != PRIVATE_ROOM
        for line, target in imported_modules(path, root)
        if target.startswith("dagster._")
    ]


def private_dagster_statements(root: Path = PACKAGE) -> set[str]:
    """``file:line`` of every statement importing a ``dagster._`` module outside the guarded room."""
    return {hit.split(": ")[0] for hit in private_dagster_imports(root)}


def test_no_import_cycle_in_the_package():
    assert import_cycles(import_graph()) == []


def test_the_cycle_check_sees_a_function_level_import_that_closes_a_circle(tmp_path):
    """Control: the circle issue 23 removed (partition_events -> assets -> partition_events), put back."""
    copy = tmp_path / "amd_pipeline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    events = copy / "orchestration" / "partition_events.py"
    events.write_text(
        events.read_text() + "\n\ndef _back():\n    from amd_pipeline.orchestration.assets import settle\n"
    )
    cycles = import_cycles(import_graph(copy))
    assert len(cycles) == 1
    assert {"amd_pipeline.orchestration.assets", "amd_pipeline.orchestration.partition_events"} <= set(cycles[0])


def test_dagsters_private_modules_are_imported_in_the_guarded_room_only(tmp_path):
    assert private_dagster_statements() == set()
    copy = tmp_path / "amd_pipeline"  # control: one private import moved back into the assets
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assets = copy / "orchestration" / "assets.py"
    assets.write_text(assets.read_text() + "\nfrom dagster._core.storage.tags import EXTERNALLY_MANAGED_ASSETS_TAG\n")
    assert private_dagster_statements(copy) == {
        f"amd_pipeline/orchestration/assets.py:{len(assets.read_text().splitlines())}"
    }
