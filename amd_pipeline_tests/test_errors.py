"""Two error trees, each drawn once: the pipeline's own under ``AmdPipelineError`` (``core/errors.py``), the
vendor's under ``WolkvoxError`` (``wolkvox/errors.py``); and one mapping of both to exit statuses."""

import importlib
import inspect
import pkgutil
import types

import pytest

import amd_pipeline
from amd_pipeline.core import errors, messages
from amd_pipeline.core.errors import AmdPipelineError, SettingsError
from amd_pipeline.wolkvox import errors as vendor
from amd_pipeline.wolkvox.errors import WolkvoxError

VENDOR_MODULE = "amd_pipeline.wolkvox.errors"
# The simulator plays the vendor's server (its errors are the server's, not ours); CliExit is an exit.
OUTSIDE = {"amd_pipeline.wolkvox.simulator"}
EXITS = {messages.CliExit}


def package_modules() -> list[types.ModuleType]:
    names = [m.name for m in pkgutil.walk_packages(amd_pipeline.__path__, "amd_pipeline.")]
    return [importlib.import_module(n) for n in names if n not in OUTSIDE and not n.endswith("__main__")]


def exception_classes(modules: list[types.ModuleType]) -> list[type[BaseException]]:
    """Every exception class a module defines (not those it imports)."""
    return [
        obj
        for module in modules
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__
    ]


def strays(classes: list[type[BaseException]]) -> list[str]:
    """The classes outside their tree: a vendor one not under WolkvoxError, any other not under AmdPipelineError."""
    found = []
    for cls in classes:
        if cls in EXITS:
            continue
        base = WolkvoxError if cls.__module__ == VENDOR_MODULE else AmdPipelineError
        if not issubclass(cls, base):
            found.append(f"{cls.__module__}.{cls.__name__} is not a {base.__name__}")
    return found


def test_every_exception_class_is_in_its_tree():
    classes = exception_classes(package_modules())
    assert len(classes) >= 25  # both trees and CliExit: the walk found the modules
    assert strays(classes) == []


def test_the_check_names_a_class_outside_its_tree():
    """A control: a pipeline error on a bare Exception and a vendor one outside WolkvoxError are named."""
    ours = types.ModuleType("amd_pipeline.core.somewhere")
    ours.LostError = type("LostError", (RuntimeError,), {"__module__": ours.__name__})
    theirs = types.ModuleType(VENDOR_MODULE)
    theirs.OddError = type("OddError", (AmdPipelineError,), {"__module__": VENDOR_MODULE})
    assert strays(exception_classes([ours, theirs])) == [
        "amd_pipeline.core.somewhere.LostError is not a AmdPipelineError",
        "amd_pipeline.wolkvox.errors.OddError is not a WolkvoxError",
    ]


@pytest.mark.parametrize("module", [errors, vendor], ids=["pipeline", "vendor"])
def test_each_tree_is_drawn_whole_in_its_docstring(module):
    """Every class of the module is a node of the tree its docstring draws, and every node is a class."""
    nodes = {line.lstrip(" │├└─").split(" ")[0] for line in module.__doc__.split("\n") if line.startswith("    ")}
    assert nodes == {c.__name__ for c in exception_classes([module])}


def test_settings_errors_stay_value_errors_for_pydantic():
    assert issubclass(SettingsError, ValueError)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (vendor.BudgetExhaustedError("spent", limit=10, used=10), messages.EXIT_BUDGET),
        (vendor.QuotaExhaustedError("spent"), messages.EXIT_QUOTA),
        (SettingsError("WOLKVOX_TOKEN is not set"), messages.EXIT_USAGE),
        (KeyboardInterrupt(), messages.EXIT_INTERRUPTED),
        (messages.CliExit(messages.EXIT_QUOTA, "refused"), messages.EXIT_QUOTA),
        (vendor.InvalidTokenError("refused"), messages.EXIT_FAILED),
        (vendor.TransportError("gone"), messages.EXIT_FAILED),
        (errors.SharedLockError("no database"), messages.EXIT_FAILED),
        (errors.StoreLockedError("held"), messages.EXIT_FAILED),
        (OSError("disk"), messages.EXIT_FAILED),
    ],
)
def test_exit_status_is_mapped_from_the_trees(exc, status):
    assert messages.exit_status(exc) == status
