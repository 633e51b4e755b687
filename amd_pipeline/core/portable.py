"""What differs between Windows and the POSIX systems (Linux, macOS), in one room. No dagster.

Every other module is written once for all three: file locks come from ``filelock`` (``flock`` on
Linux and macOS, ``msvcrt.locking`` on Windows), paths from :mod:`pathlib`. What cannot be written once
lives here, each function with its Windows branch beside the POSIX one, and ``test_portable.py`` fails
on a module-level import of a POSIX-only (or Windows-only) module anywhere else in the package.
"""

from __future__ import annotations

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
