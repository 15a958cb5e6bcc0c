"""Output files written atomically and readable like any other tool's (private).

``tempfile.mkstemp``/``mkdtemp`` create 0600 files and 0700 folders whatever the umask; a file
renamed into place would keep that mode, so another user, a TF Serving container running as
another uid or a web server could not read it. :func:`apply_umask` gives such a path the mode a
plain ``open``/``mkdir`` would have given it (0666/0777 minus the process umask).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from tf_awt.errors import DirectoryBusy


def npz_error_cause(err: Exception) -> str:
    """Why ``np.load(path, allow_pickle=False)`` failed, in words that never advise unpickling: numpy's
    own message for a damaged file or an object array suggests ``allow_pickle=True``."""
    if "pickle" in str(err):
        return "not an .npz archive, or it holds Python objects, which are never loaded"
    return f"{type(err).__name__}: {err}"


def process_umask() -> int:
    """The process umask, read without changing it where /proc allows (else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str) -> None:
    """Gives ``path`` (and, for a folder, everything below it) the umask's default mode."""
    mask = process_umask()
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                os.chmod(os.path.join(root, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Writes ``payload`` to a temporary file beside ``path`` and renames it into place."""
    atomic_write_with(path, lambda fh: fh.write(payload))


def atomic_write_json(path: str, value) -> None:
    """``value`` as indented JSON (NumPy scalars and arrays converted), written atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def atomic_write_with(path: str, write) -> None:
    """Calls ``write(fileobj)`` on a temporary file beside ``path``, then renames it into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_directory(target: str, write) -> None:
    """Calls ``write(tmp_dir)`` on a temporary folder beside ``target``, then swaps it into place."""
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(target) + "-")
    try:
        write(tmp)
        apply_umask(tmp)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


LOCK_NAME = ".tf-awt.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class DirectoryLock:
    """An output folder owned by one process: ``DIR/.tf-awt.lock`` holds the owner's pid.

    A second process that finds the lock held by a live process gets a ValueError naming the
    folder and that pid. A lock left by a process that no longer runs (killed) is stale: it is
    taken over, so a killed run resumes by being run again. Released (the file removed) on exit.
    ``created`` says whether the folder was made by this lock; :meth:`release` with
    ``remove_if_empty=True`` then removes it again when nothing else was written into it.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self.created = False
        self.took_over: int = 0
        self._held = False

    def acquire(self) -> "DirectoryLock":
        self.created = not os.path.exists(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                owner = self._owner()
                if owner is not None and owner != os.getpid() and _alive(owner):
                    raise DirectoryBusy(f"{self.directory} is in use by another tf-awt process (pid {owner}, lock file "
                                        f"{self.path}). Wait for it to finish", self.directory, owner) from None
                self.took_over = owner or -1
                try:
                    os.remove(self.path)  # stale: its owner is gone
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self._held = True
            return self
        raise ValueError(f"could not lock {self.directory}: {self.path} keeps reappearing (another process is starting there)")

    def _owner(self):
        try:
            with open(self.path, encoding="ascii") as fh:
                return int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None  # unreadable or half-written: treated as stale

    def release(self, remove_if_empty: bool = False) -> None:
        if self._held and self._owner() == os.getpid():
            os.remove(self.path)
        self._held = False
        if remove_if_empty and self.created and os.path.isdir(self.directory) and not os.listdir(self.directory):
            os.rmdir(self.directory)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, kind, value, tb):
        self.release(remove_if_empty=kind is not None)
        return False
