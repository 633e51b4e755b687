"""Which operations the code location serves: the ``defs.yaml`` folders, or the environment's one.

The folders are read with Dagster's own component loader (:class:`ComponentTree`), so a ``defs.yaml``
means here what it means to ``dg check defs`` and ``dg list defs``. A mistake in one (an unknown zone, a
missing ``token_env``, two folders with one id) is one line naming the file and the field, for every
command (:class:`SettingsError`).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from amd_pipeline.core.errors import SettingsError
from amd_pipeline.orchestration.component import WolkvoxOperation

OPERATIONS_DIR_SETTING = "AMD_OPERATIONS_DIR"
_PACKAGE_DEFS = "amd_pipeline.defs"


@dataclasses.dataclass(frozen=True)
class Operations:
    """The operations, in folder order; ``tree`` is None when the environment defines the one operation."""

    operations: list[WolkvoxOperation]
    tree: object | None = None  # dagster.components.ComponentTree
    files: dict[str, Path] = dataclasses.field(default_factory=dict)  # id -> its defs.yaml

    def get(self, operation: str | None) -> WolkvoxOperation:
        """The operation named ``operation`` (``--operation``), or the only one; else a SettingsError."""
        ids = [op.id for op in self.operations]
        if operation is None:
            if len(self.operations) == 1:
                return self.operations[0]
            raise SettingsError(f"there are {len(ids)} operations ({', '.join(ids)}): pass --operation ID")
        for op in self.operations:
            if op.id == operation:
                return op
        raise SettingsError(f"--operation {operation!r} is not one of the operations ({', '.join(ids)})")


def operations_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the operation folders are: ``AMD_OPERATIONS_DIR``, else the package's ``defs`` folder."""
    env = os.environ if environ is None else environ
    configured = (env.get(OPERATIONS_DIR_SETTING) or "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[1] / "defs"


def _defs_module(folder: Path):
    """The folder as the Python package Dagster's loader walks.

    That is ``amd_pipeline.defs``, or a namespace package made for a folder elsewhere (no ``__init__.py``
    needed; YAML only).
    """
    if folder == Path(__file__).resolve().parents[1] / "defs":
        return importlib.import_module(_PACKAGE_DEFS)
    name = "amd_pipeline_operations_" + re.sub(r"\W", "_", str(folder)).strip("_")[-60:]
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[name] = importlib.util.module_from_spec(spec)
    return sys.modules[name]


def _validation_error(exc: BaseException | None):
    """The pydantic ValidationError behind Dagster's error for a defs.yaml, if there is one."""
    while exc is not None:
        if callable(getattr(exc, "errors", None)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(path: Path, exc: Exception) -> str:
    """Dagster's error for a bad defs.yaml as one line: the file, then the field and what is wrong."""
    invalid = _validation_error(exc)
    if invalid is not None:
        first = invalid.errors()[0]
        field = ".".join(str(p).split(" at ")[0] for p in first.get("loc", ()) if p != "attributes") or "attributes"
        field = field.removeprefix("attributes.")
        if first.get("type") == "missing":
            return f"{path}: {field} is missing"
        if field == "attributes":  # a check of several fields: its sentence names them
            return f"{path}: {str(first.get('msg', '')).removeprefix('Value error, ')}"
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        if message.startswith((f"{field} ", f"{field}=")):  # our checks name the field themselves
            return f"{path}: {message}"
        return f"{path}: {field}: {message}"
    mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
    if mark is not None:  # a YAML syntax error: where, and what the parser found
        said = ", ".join(part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
        return f"{path}: line {mark.line + 1}: {said or 'not valid YAML'}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and line.strip() != "^"]
    return f"{path}: {lines[0] if lines else type(exc).__name__}"


def load_operations(environ: Mapping[str, str] | None = None) -> Operations:
    """Every ``defs.yaml`` under :func:`operations_dir` that declares a WolkvoxOperation.

    Without one, the environment's single operation (``WOLKVOX_*``, ``AMD_*``).
    """
    folder = operations_dir(environ)
    files = sorted(folder.rglob("defs.yaml")) if folder.is_dir() else []
    if not files:
        if (environ or os.environ).get(OPERATIONS_DIR_SETTING) and not folder.is_dir():
            raise SettingsError(f"{OPERATIONS_DIR_SETTING}={folder} is not a folder of operation folders")
        return Operations([WolkvoxOperation.from_env(environ)])
    from dagster.components.core.component_tree import ComponentTree

    tree = ComponentTree.from_module(_defs_module(folder), project_root=folder.parent)
    operations: list[WolkvoxOperation] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            component = tree.load_component(path.parent)
        except Exception as exc:
            raise SettingsError(_one_line(path, exc)) from None
        if not isinstance(component, WolkvoxOperation):
            continue
        if component.id in seen:
            raise SettingsError(
                f"{path}: id {component.id!r} is already the id of {seen[component.id]}: give each operation its own id"
            )
        shared = next(
            (o for o in operations if o.published_path and o.published_path == component.published_path), None
        )
        if shared is not None:
            raise SettingsError(
                f"{path}: published_path {component.published_path} is already {shared.id}'s own file "
                f"({seen[shared.id]}): each operation's own file holds that operation alone"
            )
        seen[component.id] = path
        operations.append(component)
    if not operations:
        return Operations([WolkvoxOperation.from_env(environ)])
    return Operations(operations, tree, seen)
