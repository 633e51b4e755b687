"""What differs between Windows and the POSIX systems (Linux, macOS), in one room. No dagster.

Every other module is written once for all three: file locks come from ``filelock`` (``flock`` on
Linux and macOS, ``msvcrt.locking`` on Windows), paths from :mod:`pathlib`. What cannot be written once
lives here, each function with its Windows branch beside the POSIX one, and ``test_portable.py`` fails
on a module-level import of a POSIX-only (or Windows-only) module anywhere else in the package.
"""

from __future__ import annotations

import contextlib
import os
import sys

WINDOWS = sys.platform == "win32"


def pid_alive(pid: int) -> bool:
    """True while a process with this id exists on this machine.

    On Windows ``os.kill(pid, 0)`` would not ask: signal 0 is ``CTRL_C_EVENT`` there. psutil (which
    Dagster requires on Windows) asks the OS instead.
    """
    if WINDOWS:
        import psutil

        return psutil.pid_exists(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def sync_file(path: str | os.PathLike[str]) -> None:
    """Flush a file's data to disk.

    Windows flushes through ``FlushFileBuffers``, which needs a handle opened for writing: ``os.fsync``
    on a read-only descriptor fails there (EBADF). POSIX syncs a read-only descriptor.
    """
    fd = os.open(path, (os.O_RDWR | getattr(os, "O_BINARY", 0)) if WINDOWS else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename into it) to disk.

    Windows cannot open a folder with ``os.open`` (EACCES) and has nothing to flush: NTFS journals the
    rename itself. POSIX syncs the folder, or a crash may forget the rename.
    """
    if WINDOWS:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Windows' answers to a rename over a file another program has open: ERROR_ACCESS_DENIED,
# ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION (all raised as PermissionError).
HELD_OPEN_WINERRORS = frozenset({5, 32, 33})


def held_open(exc: OSError) -> bool:
    """True when ``exc`` is Windows refusing to replace a file because a program holds it open.

    Only Windows says that: on Linux and macOS a rename over an open file succeeds, and a
    ``PermissionError`` there means permissions (a read-only folder), which waiting will not cure.
    """
    return getattr(exc, "winerror", None) in HELD_OPEN_WINERRORS


HOLDERS_TIMEOUT_SECONDS = 5.0  # macOS: how long lsof may take before the answer is "another program"


def file_holders(path: str | os.PathLike[str]) -> list[str]:
    """The programs that hold ``path`` open, as ``"DBeaver (pid 1234)"``; empty when none is found.

    It names who blocks a rename over the file (Windows refuses to replace a file another program has
    open). Never raises: any failure is an empty list, which the caller words as "another program".

    - Windows: the Restart Manager (``rstrtmgr.dll``: ``RmStartSession``, ``RmRegisterResources``,
      ``RmGetList``, ``RmEndSession``), the API Windows itself uses to say which programs hold a file;
      names are the applications' display names. No Windows machine was at hand: this branch was
      never run. Its structures follow the Windows SDK (``RM_PROCESS_INFO`` is 668 bytes there, and a
      test checks the layout with this platform's ``wchar_t``); its failures give an empty list.
    - Linux: every ``/proc/<pid>/fd`` link that points at the file (processes of other users cannot be
      read and are not listed); names are ``/proc/<pid>/comm``. Tested.
    - macOS (and other POSIX systems with ``lsof``): ``lsof -F pc -- path``, pids and command names in
      one call, within :data:`HOLDERS_TIMEOUT_SECONDS`; without ``lsof``, nothing. Tested on Linux's
      ``lsof`` only, never on a Mac.
    """
    try:
        if WINDOWS:
            return _restart_manager_holders(str(path))
        if sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd"):
            return _proc_holders(os.path.realpath(path))
        return _lsof_holders(str(path))
    except Exception:  # a name for a message: never worth failing the caller
        return []


def _proc_holders(real: str) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with os.scandir(f"/proc/{entry.name}/fd") as links:
                held = any(_readlink(f"/proc/{entry.name}/fd/{fd.name}") == real for fd in links)
            if held:
                with open(f"/proc/{entry.name}/comm") as comm:
                    found.append(f"{comm.read().strip() or 'a program'} (pid {entry.name})")
        except OSError:  # another user's process, or one that just ended
            continue
    return found


def _readlink(link: str) -> str | None:
    try:
        return os.readlink(link)
    except OSError:
        return None


def _lsof_holders(path: str) -> list[str]:
    import shutil
    import subprocess

    lsof = shutil.which("lsof") or next((p for p in ("/usr/sbin/lsof", "/usr/bin/lsof") if os.path.exists(p)), None)
    if lsof is None:
        return []
    # Exit status 1 means "no process has it open" (or an error): either way, what was printed is the answer.
    out = subprocess.run(
        [lsof, "-F", "pc", "--", path], capture_output=True, text=True, timeout=HOLDERS_TIMEOUT_SECONDS
    ).stdout
    found, pid = [], None
    for line in out.splitlines():
        if line.startswith("p"):
            pid = line[1:]
        elif line.startswith("c") and pid is not None:
            found.append(f"{line[1:]} (pid {pid})")
            pid = None
    return found


def _restart_manager_types():
    """``RM_UNIQUE_PROCESS`` and ``RM_PROCESS_INFO`` as the Windows SDK declares them (restartmanager.h)."""
    import ctypes

    class FileTime(ctypes.Structure):
        _fields_ = [("dwLowDateTime", ctypes.c_uint32), ("dwHighDateTime", ctypes.c_uint32)]

    class RmUniqueProcess(ctypes.Structure):
        _fields_ = [("dwProcessId", ctypes.c_uint32), ("ProcessStartTime", FileTime)]

    class RmProcessInfo(ctypes.Structure):
        _fields_ = [
            ("Process", RmUniqueProcess),
            ("strAppName", ctypes.c_wchar * 256),  # CCH_RM_MAX_APP_NAME + 1
            ("strServiceShortName", ctypes.c_wchar * 64),  # CCH_RM_MAX_SVC_NAME + 1
            ("ApplicationType", ctypes.c_int),  # RM_APP_TYPE
            ("AppStatus", ctypes.c_uint32),
            ("TSSessionId", ctypes.c_uint32),
            ("bRestartable", ctypes.c_int),  # BOOL
        ]

    return RmUniqueProcess, RmProcessInfo


def _restart_manager_holders(path: str) -> list[str]:
    import ctypes
    from ctypes import wintypes

    _, RmProcessInfo = _restart_manager_types()  # noqa: N806 - a C structure keeps its C name
    rm = ctypes.WinDLL("rstrtmgr")
    rm.RmStartSession.argtypes = [ctypes.POINTER(wintypes.DWORD), wintypes.DWORD, wintypes.LPWSTR]
    rm.RmRegisterResources.argtypes = [
        wintypes.DWORD,
        wintypes.UINT,
        ctypes.POINTER(wintypes.LPCWSTR),
        wintypes.UINT,
        ctypes.c_void_p,
        wintypes.UINT,
        ctypes.c_void_p,
    ]
    rm.RmGetList.argtypes = [
        wintypes.DWORD,
        ctypes.POINTER(wintypes.UINT),
        ctypes.POINTER(wintypes.UINT),
        ctypes.POINTER(RmProcessInfo),
        ctypes.POINTER(wintypes.DWORD),
    ]
    rm.RmEndSession.argtypes = [wintypes.DWORD]
    error_more_data = 234
    session = wintypes.DWORD()
    key = ctypes.create_unicode_buffer(33)  # CCH_RM_SESSION_KEY (32) + 1
    if rm.RmStartSession(ctypes.byref(session), 0, key) != 0:
        return []
    try:
        files = (wintypes.LPCWSTR * 1)(path)
        if rm.RmRegisterResources(session, 1, files, 0, None, 0, None) != 0:
            return []
        needed, reasons = wintypes.UINT(0), wintypes.DWORD()
        for _ in range(3):  # the list may grow between asking its size and reading it
            count = wintypes.UINT(needed.value)
            infos = (RmProcessInfo * max(needed.value, 1))()
            status = rm.RmGetList(session, ctypes.byref(needed), ctypes.byref(count), infos, ctypes.byref(reasons))
            if status == 0:
                return [
                    f"{infos[i].strAppName or 'a program'} (pid {infos[i].Process.dwProcessId})"
                    for i in range(count.value)
                ]
            if status != error_more_data:
                return []
        return []
    finally:
        rm.RmEndSession(session)


def stop_signals() -> tuple[int, ...]:
    """The signals that ask a supervised process tree (``amd-pipeline dev``) to stop.

    POSIX: SIGINT (Ctrl-C), SIGTERM (``kill``, a service manager, a launcher) and SIGHUP (the terminal
    was closed). Windows has neither SIGTERM from outside nor SIGHUP: Ctrl-C and Ctrl-Break reach every
    process of the console; ``taskkill /F`` and closing the console end processes without a signal.
    """
    import signal

    if WINDOWS:
        return (signal.SIGINT, signal.SIGBREAK)
    return (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def port_refusal(host: str, port: int) -> OSError | None:
    """Why a server could not listen on ``host:port`` now (the error of a trial bind), or None if it could.

    POSIX: with ``SO_REUSEADDR``, as asyncio's servers (uvicorn's, so Dagster's webserver) bind there, so a
    port left in TIME_WAIT by a server just stopped is free and a listening one is not. Windows: without
    it, because there ``SO_REUSEADDR`` lets a second socket share a port that is in use (not run here).
    """
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        if not WINDOWS:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            return exc
    return None


class ProcessTree:
    """A command and every process it starts, interrupted and killed as one.

    POSIX (Linux and macOS): the command leads a process group of its own, which its children join
    (Dagster's webserver, daemon, code servers and run workers do: none starts a session of its own).
    :meth:`interrupt` sends SIGINT to the group, as a terminal's Ctrl-C does; :meth:`kill` sends SIGKILL
    to what is left of it, even after the command itself ended. The group is not the terminal's
    foreground group, so a Ctrl-C typed there reaches the parent only, which passes it on.

    Windows (written from the documentation, not run here: no Windows machine was available): the
    command shares the parent's console and group, so Ctrl-C reaches it directly and :meth:`interrupt`
    sends nothing (``send_signal(SIGINT)`` raises ValueError there, and CTRL_BREAK_EVENT reaches only a
    group started with CREATE_NEW_PROCESS_GROUP, which would no longer get the console's Ctrl-C). The
    tree is found with psutil (which Dagster requires on Windows): the descendants seen while the command
    runs are remembered, so :meth:`kill` also reaches those orphaned when it ended.
    """

    def __init__(self, argv: list[str], env: dict[str, str]):
        import subprocess

        # Nothing in the tree reads its input; on POSIX a read from the terminal by a process outside its
        # foreground group would stop that process (SIGTTIN).
        if WINDOWS:
            self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
            self._seen: dict[int, object] = {}
        else:
            self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, process_group=0)
        self.pid = self.process.pid

    def wait(self, timeout: float) -> int:
        """The command's exit status once it ended, else ``subprocess.TimeoutExpired`` after ``timeout`` s.

        On Windows it first notes the command's descendants, for :meth:`kill` once it has ended.
        """
        if WINDOWS:
            self._members()
        return self.process.wait(timeout)

    def interrupt(self) -> None:
        """Ask every process of the tree to stop, as Ctrl-C in a terminal does (POSIX); nothing on Windows."""
        if WINDOWS:
            return
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGINT)

    def alive(self) -> bool:
        """True while any process of the tree runs (on POSIX, a zombie member not yet reaped counts)."""
        if WINDOWS:
            return any(member.is_running() for member in self._members())
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member runs under another user (setuid): it exists
            return True
        return True

    def kill(self) -> None:
        """Kill what is left of the tree, at once (SIGKILL to the group; on Windows, TerminateProcess)."""
        if WINDOWS:
            import psutil

            for member in self._members():
                with contextlib.suppress(psutil.Error):
                    member.kill()
            return
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def _members(self) -> list:
        """Windows: the command and every descendant seen so far (psutil objects, safe against pid reuse)."""
        import psutil

        if self.process.poll() is not None:  # ended: its orphans keep the ids seen before
            return list(self._seen.values())
        try:
            root = psutil.Process(self.pid)
            for child in [root, *root.children(recursive=True)]:
                self._seen.setdefault(child.pid, child)
        except psutil.Error:  # it ended meanwhile
            pass
        return list(self._seen.values())
