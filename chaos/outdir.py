"""
The output directory: where a run's journal, logs and reports go, and what drainspec will and
will not do there.

drainspec deletes and overwrites files in its output directory, so it must only ever do that
in a directory it made. The rules:

    claim      a new directory is created 0700 and marked as drainspec's (`MARKER`); an existing
               one is used only if it carries that mark or is empty. Anything else is refused:
               `--out .` must never empty the user's working directory.
    no links   the directory itself is opened with O_NOFOLLOW, and every file inside it is
               created, replaced or deleted relative to that descriptor (`dir_fd`), never by a
               path that a symbolic link could redirect to somewhere else.
    0600       files are created 0600 with O_EXCL; a file that is replaced is written beside it
               and renamed over it, so a link planted at its name is replaced, not written
               through.
    one run    a claim takes an exclusive `flock` on `LOCK`, so a second drainspec on the same
               directory gets a clear error instead of deleting the first run's journal.

By default each run gets a directory of its own, `drainspec-out/<timestamp>-<mode>/`, and the
link `drainspec-out/latest` points at the newest one: runs never clobber each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from chaos.errors import SetupError

MARKER = ".drainspec"
LOCK = ".drainspec.lock"
DEFAULT_ROOT = "drainspec-out"
LATEST = "latest"
MARKER_TEXT = b"This directory was created by drainspec; drainspec may empty it for its next run.\n"
OWN_FILES = frozenset({MARKER, LOCK})

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class OutputDir:
    """A claimed output directory: an open descriptor on it, and the lock that makes it ours."""

    path: Path
    fd: int
    lock_fd: int
    key: tuple[int, int]
    users: int = 1
    fresh: bool = False  # a default per-run directory made by `new_run_directory`

    def create(self, name: str) -> int:
        """A new file `name`, 0600, that must not exist yet (O_EXCL, never through a link)."""
        return os.open(name, _CREATE_FLAGS, 0o600, dir_fd=self.fd)

    def write(self, name: str, data: bytes) -> Path:
        """Write `name` whole, replacing a previous file of ours by rename (never through a link)."""
        _replace_in(self.fd, name, data, where=self.path / name)
        return self.path / name

    def remove(self, name: str) -> None:
        """Delete `name` (a file, a link, or a whole directory tree) without following any link."""
        _remove_in(self.fd, name)

    def mkdir(self, name: str) -> Path:
        """A new private directory `name` (0700) inside this one."""
        os.mkdir(name, 0o700, dir_fd=self.fd)
        return self.path / name

    def names(self) -> list[str]:
        return os.listdir(self.fd)


_claimed: dict[tuple[int, int], OutputDir] = {}
_registry = threading.RLock()  # runs of one process may claim from several threads


def claim(path: str | os.PathLike[str]) -> OutputDir:
    """
    Make `path` this process's output directory, creating it if needed; see the module's rules.
    Claiming a directory this process already holds only counts one more user (a command and the
    run inside it share one claim). Every claim must be given back with `release`.
    """
    with _registry:
        return _claim(Path(os.path.abspath(path)))


def _claim(where: Path) -> OutputDir:
    created = _make_directory(where)
    try:
        fd = os.open(where, _DIR_FLAGS)
    except OSError as exc:
        raise SetupError(_unusable(where, exc)) from None
    try:
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        held = _claimed.get(key)
        if held is not None:
            os.close(fd)
            held.users += 1
            return held
        if not created:
            _check_ours(where, fd, info)
        lock_fd = _lock(where, fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        _mark(fd)
        os.fchmod(fd, 0o700)
    except OSError as exc:
        os.close(lock_fd)
        os.close(fd)
        raise SetupError(_unusable(where, exc)) from None
    directory = OutputDir(where, fd, lock_fd, key)
    _claimed[key] = directory
    return directory


def release(directory: OutputDir, *, drop_if_unused: bool = False) -> None:
    """
    Give back one claim; the last one unlocks the directory and closes its descriptors. With
    `drop_if_unused`, a default per-run directory that nothing was written to (the command
    stopped on bad input first) is removed, so mistakes do not litter `drainspec-out/`.
    """
    with _registry:
        directory.users -= 1
        if directory.users > 0:
            return
        _claimed.pop(directory.key, None)
    if drop_if_unused and directory.fresh:
        with contextlib.suppress(OSError):
            _drop_if_unused(directory)
    with contextlib.suppress(OSError):
        fcntl.flock(directory.lock_fd, fcntl.LOCK_UN)
    for fd in (directory.lock_fd, directory.fd):
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def claimed(path: str | os.PathLike[str]) -> Iterator[OutputDir]:
    """`claim` for the length of a `with` block."""
    directory = claim(path)
    try:
        yield directory
    finally:
        release(directory)


def clear(directory: OutputDir, names: Iterable[str], *, suffixes: tuple[str, ...] = ()) -> None:
    """Delete a previous run's files from a directory of ours: `names`, and files ending in `suffixes`."""
    wanted = set(names)
    for name in directory.names():
        if name in OWN_FILES:
            continue
        if name in wanted or (suffixes and name.endswith(suffixes)):
            directory.remove(name)


def new_run_directory(mode: str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> OutputDir:
    """
    The default output of one run: a new `root/<timestamp>-<mode>/` (never an existing one, so
    concurrent runs cannot share it), claimed, with `root/latest` pointing at it.
    """
    base = Path(os.path.abspath(root))
    _make_directory(base)
    try:
        root_fd = os.open(base, _DIR_FLAGS)
    except OSError as exc:
        raise SetupError(_unusable(base, exc)) from None
    try:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = ""
        for attempt in range(1, 1000):
            name = f"{stamp}-{mode}" + (f"-{attempt}" if attempt > 1 else "")
            try:
                os.mkdir(name, 0o700, dir_fd=root_fd)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise SetupError(_unusable(base / name, exc)) from None
        directory = claim(base / name)
        directory.fresh = True
        _point_latest(root_fd, name)
        return directory
    finally:
        os.close(root_fd)


def write_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """
    Write a report wherever the user asked (`--json`, `--junit`, `--html`): missing parent
    directories are created; an existing link or directory at that name is refused, never
    written through; the file is written beside its name and renamed into place, 0600.
    """
    target = Path(os.path.abspath(path))
    if not target.name:
        raise SetupError(f"{path} names a directory; give a file name")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        parent_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError(_unwritable(target, exc)) from None
    try:
        _replace_in(parent_fd, target.name, data, where=target)
    finally:
        os.close(parent_fd)
    return target


def check_writable(path: str | os.PathLike[str]) -> None:
    """Refuse, before a run starts, a report path that `write_file` would refuse after it."""
    target = Path(os.path.abspath(path))
    with contextlib.suppress(FileNotFoundError):
        mode = os.lstat(target).st_mode
        if stat.S_ISLNK(mode):
            raise SetupError(_is_link(target))
        if not stat.S_ISREG(mode):
            raise SetupError(f"{target} exists and is not a regular file; give the path of a file to write")
    parent = next((p for p in target.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise SetupError(f"cannot write {target}: {parent} is not a directory")


# --- inside a directory descriptor ---------------------------------------------------------------


def _replace_in(dir_fd: int, name: str, data: bytes, *, where: Path) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise SetupError(_unwritable(where, exc)) from None
    if mode is not None and stat.S_ISLNK(mode):
        raise SetupError(_is_link(where))
    if mode is not None and not stat.S_ISREG(mode):
        raise SetupError(f"{where} exists and is not a regular file; give the path of a file to write")
    temporary = f".{name}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(temporary, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise SetupError(_unwritable(where, exc)) from None


def _remove_in(dir_fd: int, name: str) -> None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        # shutil.rmtree opens each level relative to its parent with O_NOFOLLOW here
        # (`rmtree.avoids_symlink_attacks`): a link inside is unlinked, never followed.
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


# --- claiming ------------------------------------------------------------------------------------


def _make_directory(where: Path) -> bool:
    """Create `where` (0700; its parents as needed); True if this call created it."""
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(where, 0o700)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise SetupError(_unusable(where, exc)) from None


def _check_ours(where: Path, fd: int, info: os.stat_result) -> None:
    """An existing directory is used only if drainspec marked it, or it is empty."""
    if info.st_uid != os.geteuid():
        raise SetupError(f"{where} belongs to another user (uid {info.st_uid}); give --out a directory of your own")
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(MARKER, dir_fd=fd, follow_symlinks=False).st_mode
        if stat.S_ISREG(mode):
            return
    if set(os.listdir(fd)) - OWN_FILES:
        raise SetupError(
            f"{where} already exists and holds files drainspec did not write (drainspec marks its own "
            f"directories with a {MARKER} file); give --out a new or empty directory"
        )


def _lock(where: Path, fd: int) -> int:
    try:
        lock_fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
    except OSError as exc:
        raise SetupError(_unusable(where, exc)) from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            holder = f" (pid {int(os.pread(lock_fd, 32, 0).decode().strip())})"
        os.close(lock_fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise SetupError(
                f"another drainspec run{holder} is using {where}; wait for it to finish or give another --out"
            ) from None
        raise SetupError(_unusable(where, exc)) from None
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
    return lock_fd


def _drop_if_unused(directory: OutputDir) -> None:
    names = set(directory.names())
    if names - OWN_FILES - {"data"}:
        return
    if "data" in names:
        data = os.open("data", _DIR_FLAGS, dir_fd=directory.fd)
        try:
            if os.listdir(data):
                return
        finally:
            os.close(data)
    for name in names:
        directory.remove(name)
    root = directory.path.parent
    os.rmdir(directory.path)
    with contextlib.suppress(OSError):
        if os.readlink(root / LATEST) == directory.path.name:
            os.unlink(root / LATEST)


def _mark(fd: int) -> None:
    try:
        marker = os.open(MARKER, _CREATE_FLAGS, 0o600, dir_fd=fd)
    except FileExistsError:
        return
    try:
        os.write(marker, MARKER_TEXT)
    finally:
        os.close(marker)


def _point_latest(root_fd: int, name: str) -> None:
    """`latest` -> `name`, replaced atomically; a `latest` that is not a link is left alone."""
    try:
        mode = os.stat(LATEST, dir_fd=root_fd, follow_symlinks=False).st_mode
        if not stat.S_ISLNK(mode):
            return
    except FileNotFoundError:
        pass
    temporary = f".{LATEST}.{os.urandom(4).hex()}"
    try:
        os.symlink(name, temporary, dir_fd=root_fd)
        os.rename(temporary, LATEST, src_dir_fd=root_fd, dst_dir_fd=root_fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=root_fd)


def _unusable(where: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and where.is_symlink()):
        return f"{where} is a symbolic link; drainspec never writes through links: give --out a real directory"
    if exc.errno == errno.ENOTDIR:
        return f"{where} is not a directory; give --out a new or empty directory"
    return f"cannot use {where} for the run's files: {exc.strerror}"


def _unwritable(where: Path, exc: OSError) -> str:
    return f"cannot write {where}: {exc.strerror}; check that its directory exists and is writable"


def _is_link(where: Path) -> str:
    return f"{where} is a symbolic link; drainspec never writes through links: remove it or give another path"
