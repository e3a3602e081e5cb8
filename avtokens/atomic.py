"""Outputs appear complete or not at all: write to a temporary name, rename at the end. A write
that fails because the disk is full or read-only says so in one line naming the output."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import shutil
from pathlib import Path

from avtokens import AvTokensError

# Failures of the storage, not of the work: the user frees space or picks another folder.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
# Below this, a failed write is taken for a full disk whatever the library said (torch's
# "unexpected pos", libsndfile's "System error." carry no errno).
FULL_BELOW_BYTES = 1 << 20


@contextlib.contextmanager
def atomic_output(dest: Path | str):
    """Yield a temporary path for `dest` (same suffix, so tools can tell the format); it
    replaces `dest` when the block succeeds and is removed when it fails.

    The temporary file is in a folder of its own beside `dest`, `.<name>.partial/`, so a
    killed earlier attempt's leftover is found without listing `dest`'s folder: in a dataset
    that folder holds a file per clip, and listing it for every output made writing a clip's
    files cost time in proportion to the clips already done. Its name holds the writer's
    process id: only leftovers of processes that have ended are removed, never the file of a
    writer still at work. The temporary file exists (empty) when it is handed out, so a
    concurrent writer of the same output, removing the folder once it is done, cannot
    remove it from under this one."""
    dest = Path(dest)
    staging = dest.with_name(f".{dest.name}.partial")
    tmp = staging / f"{dest.stem}.{os.getpid()}{dest.suffix}"
    try:
        for attempt in range(100):
            try:
                staging.mkdir(parents=True, exist_ok=True)
                tmp.touch()
                break
            except (FileNotFoundError, FileExistsError):  # a concurrent writer removed the folder
                if attempt == 99 or staging.is_file():  # a file in the way: no folder will come
                    raise
        for leftover in staging.iterdir():  # the folder stays while tmp is in it
            if leftover != tmp and not _writer_alive(leftover.name, dest):
                leftover.unlink(missing_ok=True)
        yield tmp
        os.replace(tmp, dest)
    except AvTokensError:  # said already, naming its own file: not to be blamed on this output
        raise
    except Exception as err:
        problem = storage_problem(err, staging if staging.is_dir() else dest.parent)
        if problem:
            raise AvTokensError(f"{dest}: cannot be written ({problem})") from None
        raise
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: a concurrent writer's file, theirs to remove
            staging.rmdir()


def write_saved(dest: Path | str, save) -> None:
    """`save(file)` (torch.save, torch.jit.save) into memory, then written to `dest` whole
    (`atomic_output`): given a path, torch writes from C++, and a full disk then aborts the
    process with a C++ stack trace instead of raising an error."""
    buffer = io.BytesIO()
    save(buffer)
    with atomic_output(dest) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _writer_alive(name: str, dest: Path) -> bool:
    """Whether the process that named a temporary file `name` for `dest` still runs here."""
    pid = name.removesuffix(".link").removesuffix(dest.suffix).rpartition(".")[2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def error_chain(err: BaseException | None) -> list[BaseException]:
    """`err` and the errors it was raised from or while handling, innermost last."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def storage_problem(err: BaseException, folder: Path | str) -> str | None:
    """What is wrong with the storage under `folder` if that made `err`: the system's words
    for an errno of `STORAGE_ERRORS` anywhere in the exception's chain, or "No space left on
    device" when the folder's file system is (nearly) full. None when the storage is fine."""
    for cause in error_chain(err):
        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRORS:
            return cause.strerror or os.strerror(cause.errno)
    with contextlib.suppress(OSError):
        stat = os.statvfs(folder)
        if stat.f_bavail * stat.f_frsize < FULL_BELOW_BYTES:
            return os.strerror(errno.ENOSPC)
    return None


def link_or_copy(src, dest) -> None:
    """`src` at the new path `dest` too: a hard link (no second copy on disk), or a copy where
    the two are on different file systems or links are refused."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
