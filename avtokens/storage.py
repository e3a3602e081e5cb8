"""Files that may be objects in a store: a path is local, or a URL (`s3://bucket/key`, or any
protocol fsspec knows) read through fsspec, for S3 with s3fs.

fsspec rather than obstore: s3fs is installed already (Megatron-Energon and `datasets` use it),
so a manifest URL means here what it means to them and to pandas; it takes credentials and the
endpoint the usual way (the environment, `AWS_ENDPOINT_URL`, `~/.aws`, or `storage_options`);
it retries throttled and failed requests with back-off itself; and its filesystems are safe
in data-loader workers (a forked process makes its own). A byte range is one ranged GET.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
from pathlib import Path

from avtokens.errors import AvTokensError

# Set by the workflow (rules/common.smk) when Snakemake's default storage provider keeps the
# run's files in a bucket: the folder of a job's local copies of them, which the job is given.
LOCAL_COPIES_VARIABLE = "AVTOKENS_LOCAL_COPIES"


def as_declared(path) -> str:
    """`path` as the workflow declares it: a job's local copy of a file of the default storage
    is named without the folder of the copies. What token files record of their checkpoints
    then does not depend on where the run kept its files."""
    path, copies = str(path), os.environ.get(LOCAL_COPIES_VARIABLE)
    return path[len(copies) + 1 :] if copies and path.startswith(f"{copies}/") else path


def is_url(path) -> bool:
    """Whether `path` names an object (a URL with a protocol) rather than a local file."""
    return isinstance(path, str) and "://" in path


def joined(base, relative: str):
    """`relative` under the folder `base`: a URL stays a string (Path would fold its `//`)."""
    return posixpath.join(base, relative) if is_url(base) else Path(base) / relative


def folder_of(path):
    """The folder that holds `path`."""
    return posixpath.dirname(path) if is_url(path) else Path(path).parent


def filesystem(url: str, storage_options: dict | None = None):
    """The fsspec filesystem of `url` and the path within it."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError) as err:
        raise AvTokensError(f"{url}: cannot be opened ({err})") from None


def object_error(url: str, err: Exception) -> AvTokensError:
    """One line naming the object and what went wrong, from fsspec's or botocore's exception
    (s3fs has retried what can be retried, with back-off, before it raises)."""
    if isinstance(err, FileNotFoundError):
        what = "no such bucket" if "bucket" in str(err).lower() else "no such object"
    elif isinstance(err, PermissionError):
        what = "access denied (check the credentials and the bucket's policy)"
    elif isinstance(err, OSError) and err.errno == errno.EBUSY:  # s3fs's word for 503 Slow Down
        what = "the store throttled the requests and still refused them after retries with back-off"
    elif type(err).__name__ == "EndpointConnectionError":
        what = f"cannot reach the store ({err}; check AWS_ENDPOINT_URL or storage_options' endpoint_url)"
    else:
        what = f"cannot be read ({type(err).__name__}: {err})"
    return AvTokensError(f"{url}: {what}")


@contextlib.contextmanager
def opened(path, block_size: int = 1 << 22, storage_options: dict | None = None):
    """A file or object opened for reading in order; an object's failures in one line."""
    if not is_url(path):
        with open(path, "rb") as file:
            yield file
        return
    fs, where = filesystem(path, storage_options)
    try:
        with fs.open(where, "rb", block_size=block_size) as file:
            yield file
    except AvTokensError:
        raise
    except Exception as err:  # fsspec's and botocore's exceptions, named in one line
        raise object_error(path, err) from None


def read_text(path, storage_options: dict | None = None) -> str:
    """The whole of a small text file (a manifest), local or an object."""
    if not is_url(path):
        return Path(path).read_text(encoding="utf-8")
    fs, where = filesystem(path, storage_options)
    try:
        return fs.cat_file(where).decode("utf-8")
    except Exception as err:  # fsspec's and botocore's exceptions, named in one line
        raise object_error(path, err) from None


def object_sizes(urls, storage_options: dict | None = None) -> dict[str, int]:
    """The size of each of `urls` that exists, by a listing of each folder they are in (one
    request per thousand objects, not one per object)."""
    sizes = {}
    for folder in sorted({posixpath.dirname(url) for url in urls}):
        fs, where = filesystem(folder, storage_options)
        try:
            entries = fs.ls(where, detail=True, refresh=True)
        except FileNotFoundError:
            continue
        except Exception as err:
            raise object_error(folder, err) from None
        protocol = folder.split("://", 1)[0]
        sizes |= {f"{protocol}://{e['name']}": e["size"] for e in entries if e["type"] == "file"}
    return sizes


class ObjectRanges:
    """Byte ranges of one object, each read with one ranged request."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self._fs, self._where = filesystem(url, storage_options)
        try:
            self.size = self._fs.info(self._where)["size"]
        except Exception as err:
            raise object_error(url, err) from None

    def read_into(self, view: memoryview, offset: int) -> int:
        """Fill `view` from byte `offset`; the number of bytes there were."""
        end = min(offset + len(view), self.size)
        if end <= offset:
            return 0
        try:
            data = self._fs.cat_file(self._where, start=offset, end=end)
        except Exception as err:
            raise object_error(self.url, err) from None
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass
