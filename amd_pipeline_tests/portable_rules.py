"""What a Windows user's Python lacks, written as rules the tests apply to the package's source and files.

- :func:`posix_only_uses`: module-level imports of POSIX-only (or Windows-only) modules, and calls or
  names that exist only on POSIX (``os.killpg``, ``signal.SIGKILL``, ``start_new_session=``...).
  Everywhere but ``amd_pipeline/core/portable.py``, the one room where each has its Windows branch.
- :func:`windows_name_problem`: why a file name cannot exist on Windows (a forbidden character, a
  reserved device name such as ``CON``, a trailing dot or space), or None.
"""

from __future__ import annotations

import ast
import re

POSIX_ONLY_MODULES = frozenset(
    {"fcntl", "termios", "tty", "pty", "pwd", "grp", "resource", "syslog", "crypt", "spwd", "nis", "posix", "curses"}
)
WINDOWS_ONLY_MODULES = frozenset({"msvcrt", "winreg", "winsound", "_winapi", "nt"})
# Attributes that do not exist on Windows (or, for os.execv, do something else there: the calling
# process exits and the console gets its prompt back while the new one runs on).
POSIX_ONLY_ATTRIBUTES = frozenset(
    {
        *(f"os.{name}" for name in ("fork", "forkpty", "killpg", "setsid", "setpgrp", "setpgid", "getpgid", "getpgrp")),
        *(f"os.{name}" for name in ("getuid", "geteuid", "getgid", "chown", "lchown", "execv", "execvp", "execve")),
        *(f"signal.{name}" for name in ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD")),
        *(f"signal.{name}" for name in ("SIGPIPE", "SIGSTOP", "SIGCONT", "alarm", "setitimer", "pthread_kill")),
        "signal.pthread_sigmask",
    }
)
POSIX_ONLY_KEYWORDS = frozenset({"start_new_session", "preexec_fn", "pass_fds", "process_group"})


def posix_only_uses(source: str, filename: str = "<source>") -> list[str]:
    """``line: what`` for each use in ``source`` that breaks or misbehaves on Windows (or on POSIX)."""
    tree = ast.parse(source, filename=filename)
    found = []
    for node in _module_level(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in POSIX_ONLY_MODULES | WINDOWS_ONLY_MODULES:
                found.append(f"{node.lineno}: module-level import of {name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            dotted = f"{node.value.id}.{node.attr}"
            if dotted in POSIX_ONLY_ATTRIBUTES:
                found.append(f"{node.lineno}: {dotted}")
        elif isinstance(node, ast.keyword) and node.arg in POSIX_ONLY_KEYWORDS:
            found.append(f"{node.value.lineno}: {node.arg}=")
    return found


def _module_level(tree: ast.Module):
    """The statements run when the module is imported: the body, into if/try/with blocks and class bodies,
    not into functions."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt | ast.excepthandler):
                todo.append(child)


FORBIDDEN_CHARACTERS = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
RESERVED_NAMES = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³])(\..*)?", re.IGNORECASE)


def windows_name_problem(name: str) -> str | None:
    """Why ``name`` (one path component) cannot be a file name on Windows, or None when it can."""
    bad = FORBIDDEN_CHARACTERS.search(name)
    if bad:
        return f"contains {bad.group()!r}"
    if RESERVED_NAMES.fullmatch(name):
        return "is a reserved device name"
    if name.endswith((".", " ")):
        return "ends with a dot or a space"
    if len(name) > 255:
        return "is longer than 255 characters"
    return None
