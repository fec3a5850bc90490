"""Host-side file access confined to one directory, safe against what the sandbox can plant.

The sandbox's programs share the workspace directory with the host, so they can turn any entry
into a symlink (to ``/root``, ``/etc/shadow`` ...), a FIFO that blocks a reader forever, or swap a
directory for a symlink between two system calls. Every path is therefore walked one component
at a time from an open directory fd with ``O_NOFOLLOW``; a symlink found on the way is resolved
*lexically* inside the workspace (``..`` pops a component, an absolute target must lie under the
sandbox's own mount point) and rejected when it would leave it. Only regular files are read or
written. Paths the agent gives may not contain ``..`` at all.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ise_core.errors import FileAccessError

MAX_SYMLINK_HOPS = 40
MAX_LISTED_FILES = 20_000


def _describe(exc: OSError, rel: str) -> FileAccessError:
    reasons = {
        errno.ENOENT: "no such file or directory",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a path component is not a directory",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOSPC: "no space left in the workspace",
        errno.EFBIG: "file too large",
        errno.ENAMETOOLONG: "file name too long",
        errno.EEXIST: "already exists",
    }
    return FileAccessError(f"{rel}: {reasons.get(exc.errno or 0, exc.strerror or str(exc))}")


class ConfinedDir:
    """A directory the host reads and writes on behalf of a sandboxed agent.

    ``sandbox_root`` is where the sandbox sees this directory (``/workspace``): absolute paths
    under it are accepted (agents often write them) and so are absolute symlink targets under
    it. ``owner`` (uid, gid) is given to every file and directory this class creates, so the
    sandbox user can change them later (docker backend, host running as root).
    """

    def __init__(
        self,
        root: Path,
        *,
        sandbox_root: str = "/workspace",
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.root = root
        self.sandbox_root = sandbox_root.rstrip("/") or "/"
        self.owner = owner

    # --- path handling ---------------------------------------------------------------------

    def parts(self, rel: str) -> list[str]:
        """Split an agent-supplied path into components, refusing ``..`` and outside paths."""
        if not isinstance(rel, str) or not rel.strip():
            raise FileAccessError("path must be a non-empty string")
        if "\x00" in rel:
            raise FileAccessError("path must not contain NUL bytes")
        path = rel.strip()
        if path.startswith("/"):
            inner = self._inside_sandbox_root(path)
            if inner is None:
                raise FileAccessError(
                    f"{rel}: absolute paths must lie inside the workspace ({self.sandbox_root})"
                )
            path = inner
        pieces = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in pieces:
            raise FileAccessError(f"{rel}: '..' is not allowed; use paths inside the workspace")
        return pieces

    def _inside_sandbox_root(self, absolute: str) -> str | None:
        prefix = self.sandbox_root
        if absolute == prefix:
            return ""
        if absolute.startswith(prefix + "/"):
            return absolute[len(prefix) + 1 :]
        return None

    @contextmanager
    def _root_fd(self) -> Iterator[int]:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            yield fd
        finally:
            os.close(fd)

    def _open(self, rel: str, flags: int, *, create_dirs: bool = False) -> int:
        """Open ``rel`` beneath the root and return the fd; see the module docstring."""
        pending = deque(self.parts(rel))
        if not pending:
            raise FileAccessError(f"{rel}: is the workspace directory itself, not a file")
        with self._root_fd() as root_fd:
            stack = [os.dup(root_fd)]
            hops = 0
            try:
                while pending:
                    name = pending.popleft()
                    if name == "..":  # only ever from a symlink target
                        if len(stack) == 1:
                            raise FileAccessError(f"{rel}: a symlink points outside the workspace")
                        os.close(stack.pop())
                        if not pending:
                            raise FileAccessError(f"{rel}: is a directory")
                        continue
                    current = stack[-1]
                    if not pending:
                        try:
                            return os.open(
                                name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=current
                            )
                        except OSError as exc:
                            if exc.errno != errno.ELOOP:
                                raise _describe(exc, rel) from None
                    else:
                        try:
                            fd = os.open(
                                name,
                                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                dir_fd=current,
                            )
                            stack.append(fd)
                            continue
                        except FileNotFoundError:
                            if not create_dirs:
                                raise FileAccessError(f"{rel}: no such file or directory") from None
                            self._mkdir(name, current, rel)
                            pending.appendleft(name)
                            continue
                        except OSError as exc:
                            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                                raise _describe(exc, rel) from None
                    # The component is (or claims not to be a directory): only a symlink goes on.
                    try:
                        info = os.stat(name, dir_fd=current, follow_symlinks=False)
                        if not stat.S_ISLNK(info.st_mode):
                            raise FileAccessError(f"{rel}: a path component is not a directory")
                        target = os.readlink(name, dir_fd=current)
                    except OSError as exc:
                        raise _describe(exc, rel) from None
                    hops += 1
                    if hops > MAX_SYMLINK_HOPS:
                        raise FileAccessError(f"{rel}: too many levels of symbolic links")
                    if target.startswith("/"):
                        inner = self._inside_sandbox_root(target)
                        if inner is None:
                            raise FileAccessError(
                                f"{rel}: a symlink points outside the workspace ({target})"
                            )
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                        target = inner
                    pending.extendleft(
                        reversed([p for p in target.split("/") if p not in ("", ".")])
                    )
                raise FileAccessError(f"{rel}: is a directory")
            finally:
                for fd in stack:
                    os.close(fd)

    def _mkdir(self, name: str, dir_fd: int, rel: str) -> None:
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            return
        except OSError as exc:
            raise _describe(exc, rel) from None
        if self.owner is not None:
            os.chown(name, *self.owner, dir_fd=dir_fd, follow_symlinks=False)

    # --- operations --------------------------------------------------------------------------

    def read_bytes(self, rel: str, max_bytes: int) -> bytes:
        """The whole regular file, or an error when it is larger than ``max_bytes``."""
        fd = self._open(rel, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileAccessError(f"{rel}: not a regular file")
            if info.st_size > max_bytes:
                raise FileAccessError(
                    f"{rel}: file is {info.st_size} bytes, more than the {max_bytes}-byte limit"
                )
            chunks: list[bytes] = []
            remaining = max_bytes + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) > max_bytes:
                raise FileAccessError(f"{rel}: file is larger than the {max_bytes}-byte limit")
            return data
        finally:
            os.close(fd)

    def read_tail(self, rel: str, offset: int, limit: int) -> tuple[bytes, int]:
        """Up to ``limit`` bytes from byte ``offset`` and the file's current size."""
        fd = self._open(rel, os.O_RDONLY | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileAccessError(f"{rel}: not a regular file")
            return os.pread(fd, max(0, limit), max(0, offset)), info.st_size
        finally:
            os.close(fd)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Create or replace a regular file, making missing parent directories."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK
        fd = self._open(rel, flags, create_dirs=True)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FileAccessError(f"{rel}: not a regular file")
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self.owner is not None and (info.st_uid, info.st_gid) != self.owner:
                os.fchown(fd, *self.owner)
        except OSError as exc:
            raise _describe(exc, rel) from None
        finally:
            os.close(fd)

    def unlink(self, rel: str) -> None:
        """Remove one file or symlink (never what a symlink points to); absent is fine."""
        pieces = self.parts(rel)
        if not pieces:
            raise FileAccessError(f"{rel}: is the workspace directory itself")
        parent = "/".join(pieces[:-1])
        with self._root_fd() as root_fd:
            dir_fd = self._open(parent, os.O_RDONLY | os.O_DIRECTORY) if parent else os.dup(root_fd)
        try:
            os.unlink(pieces[-1], dir_fd=dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _describe(exc, rel) from None
        finally:
            os.close(dir_fd)

    def kind(self, rel: str) -> str | None:
        """ "file", "directory", "other" or None when nothing is there (or it is outside)."""
        try:
            if not self.parts(rel):
                return "directory"
            fd = self._open(rel, os.O_RDONLY | os.O_NONBLOCK)
        except FileAccessError:
            return None
        try:
            mode = os.fstat(fd).st_mode
        finally:
            os.close(fd)
        if stat.S_ISREG(mode):
            return "file"
        return "directory" if stat.S_ISDIR(mode) else "other"

    def list_files(self, under: str | None = None, limit: int = MAX_LISTED_FILES) -> list[str]:
        """Relative paths of the regular files and symlinks (below ``under``), sorted.

        ``os.fwalk`` works on directory fds and does not follow symlinks, so a directory
        swapped for a symlink mid-walk cannot lead outside.
        """
        found: list[str] = []
        with self._root_fd() as root_fd:
            if under:
                start_fd = self._open(under, os.O_RDONLY | os.O_DIRECTORY)
                base = "/".join(self.parts(under)) + "/"
            else:
                start_fd, base = os.dup(root_fd), ""
        try:
            for top, dirs, files, dir_fd in os.fwalk(".", dir_fd=start_fd):
                dirs.sort()
                prefix = base if top == "." else f"{base}{top[2:]}/"
                # A symlink to a directory is listed among ``dirs`` (and not descended into).
                for name in [*files, *dirs]:
                    try:
                        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
                    except OSError:
                        continue
                    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                        found.append(prefix + name)
                        if len(found) >= limit:
                            return sorted(found)
        finally:
            os.close(start_fd)
        return sorted(found)

    def clear(self) -> None:
        """Remove everything inside the root (the root itself stays: it may be bind-mounted)."""
        import shutil

        def _retry_writable(func: object, path: str, _exc: object) -> None:
            # The agent may have left a directory without write permission (chmod 000).
            parent = os.path.dirname(path)
            os.chmod(parent, 0o700)
            if os.path.isdir(path) and not os.path.islink(path):
                os.chmod(path, 0o700)
                shutil.rmtree(path, onerror=_ignore)
            else:
                os.unlink(path)

        def _ignore(*_args: object) -> None:
            return None

        for entry in os.scandir(self.root):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, onerror=_retry_writable)
            else:
                with suppress(FileNotFoundError):
                    os.unlink(entry.path)
