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
import hashlib
import os
import posixpath
from pathlib import Path

from avtokens.errors import AvTokensError

# Set by the workflow (rules/common.smk) when Snakemake's default storage provider keeps the
# run's files in a bucket: the prefix they are objects under, and the folder of a job's local
# copies of them (Snakemake's: .snakemake/storage/s3/<bucket>/<prefix>), which jobs are given.
PREFIX_VARIABLE = "AVTOKENS_STORAGE_PREFIX"
LOCAL_COPIES_VARIABLE = "AVTOKENS_LOCAL_COPIES"
# Where Snakemake keeps a job's local copy of an object (its default --local-storage-prefix).
LOCAL_STORAGE = ".snakemake/storage"


def local_copy(url: str) -> str:
    """The local file Snakemake (or a shard job) keeps of an object: `s3://bucket/key` ->
    .snakemake/storage/s3/bucket/key; a local path is itself."""
    protocol, found, rest = url.partition("://")
    return f"{LOCAL_STORAGE}/{protocol}/{rest}" if found else url


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
        what = f"the request failed ({type(err).__name__}: {err})"
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
    return {url: entry["size"] for url, entry in object_entries(urls, storage_options).items()}


def object_entries(urls, storage_options: dict | None = None) -> dict[str, dict]:
    """fsspec's entry (size, ETag, ...) of each of `urls` that exists, by a listing of each
    folder they are in."""
    entries = {}
    for folder in sorted({posixpath.dirname(url) for url in urls}):
        fs, where = filesystem(folder, storage_options)
        try:
            listed = fs.ls(where, detail=True, refresh=True)
        except FileNotFoundError:
            continue
        except Exception as err:
            raise object_error(folder, err) from None
        protocol = folder.split("://", 1)[0]
        entries |= {f"{protocol}://{e['name']}": e for e in listed if e["type"] == "file"}
    return {url: entries[url] for url in urls if url in entries}


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


class RunStorage:
    """A run's files as objects, where Snakemake's default storage provider keeps them: the
    file the workflow names `path` (results/...) is the object `<prefix>/<path>`, and a job's
    local copy of it is `<copies>/<path>` (where Snakemake puts its own). Shard jobs move the
    per-video files that Snakemake does not track themselves: a HEAD, GET or PUT per file."""

    def __init__(self, prefix: str, copies: str):
        self.prefix, self.copies = prefix.rstrip("/"), copies.rstrip("/")
        self._fs, _ = filesystem(self.prefix)
        self._heads: dict[str, dict] = {}  # what `identity` found, for the `fetch` that follows it

    @classmethod
    def of_run(cls) -> RunStorage | None:
        """The run's storage, as the workflow set it for its jobs; None for local files."""
        prefix, copies = os.environ.get(PREFIX_VARIABLE), os.environ.get(LOCAL_COPIES_VARIABLE)
        return cls(prefix, copies) if prefix and copies else None

    def url(self, path: str) -> str:
        return f"{self.prefix}/{as_declared(path)}"

    def local(self, path: str) -> str:
        return f"{self.copies}/{as_declared(path)}"

    def _call(self, path: str, method: str, *args, **kwargs):
        try:
            return getattr(self._fs, method)(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as err:  # fsspec's and botocore's exceptions, named in one line
            raise object_error(self.url(path), err) from None

    def identity(self, path: str) -> list:
        """[path, size, ETag] of the object (None, None when there is none): what its content is."""
        info = object_info(self.url(path), self._fs)
        if info is None:
            return [as_declared(path), None, None]
        self._heads[self.url(path)] = info
        return [as_declared(path), info["size"], info.get("ETag")]

    def exists(self, path: str) -> bool:
        return self.identity(path)[1] is not None

    def fetch(self, path: str) -> str:
        """The local copy of the object, fetched unless the copy there is already its content
        (as `identity` found it just before, if it did: one HEAD, not two)."""
        return fetch_object(self.url(path), self.local(path), self._fs, self._heads.pop(self.url(path), None))

    def store(self, path: str) -> None:
        """Put the local copy of `path` in its object (one PUT, or a multipart upload for a
        large file: either way the object appears whole or not at all)."""
        self._call(path, "put_file", self.local(path), self.url(path))

    def remove(self, path: str) -> None:
        """Remove the object and the local copy, if there."""
        with contextlib.suppress(FileNotFoundError):
            self._call(path, "rm_file", self.url(path))
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.local(path))

    def listed(self, folder: str) -> set[str]:
        """The paths (as the workflow names them) of every object under `folder`, listed at once."""
        try:
            found = self._call(folder, "find", self.url(folder))
        except FileNotFoundError:
            return set()
        bucket_prefix = self.prefix.partition("://")[2]
        return {name[len(bucket_prefix) + 1 :] for name in found}


def object_info(url: str, fs=None) -> dict | None:
    """fsspec's entry of the object `url` (size, ETag, ...), None when there is none: one HEAD
    (`fs`: its filesystem, if at hand); any other failure in one line naming it."""
    if fs is None:
        fs, _ = filesystem(url)
    try:
        return fs.info(url, refresh=True)
    except FileNotFoundError:
        return None
    except Exception as err:  # fsspec's and botocore's exceptions, named in one line
        raise object_error(url, err) from None


def object_identity(url: str) -> list:
    """[url, size, ETag] of an object (None, None when there is none): one HEAD."""
    info = object_info(url)
    return [url, None, None] if info is None else [url, info["size"], info.get("ETag")]


def fetch_object(url: str, local: str, fs=None, info: dict | None = None) -> str:
    """The object `url` in the file `local`: fetched whole or not at all (under a temporary
    name, then renamed), unless `local` already holds its content (its size, and the MD5 that
    a single-part object's ETag is: fsspec's `info` of it, asked for unless given); returns
    `local`."""
    if fs is None:
        fs, _ = filesystem(url)
    info = info or object_info(url, fs)
    if info is None:
        raise AvTokensError(f"{url}: no such object")
    if _holds(local, info):
        return local
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    partial = f"{local}.partial-{os.getpid()}"
    try:
        fs.get_file(url, partial)
        os.replace(partial, local)
    except OSError as err:
        if err.filename in (partial, local):  # the local disk's fault, not the object's
            raise
        raise object_error(url, err) from None
    except Exception as err:
        raise object_error(url, err) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
    return local


def _holds(local: str, info: dict) -> bool:
    """Whether the file `local` has the content of the object fsspec's `info` describes."""
    etag = str(info.get("ETag", "")).strip('"')
    try:
        if os.path.getsize(local) != info["size"] or not etag or "-" in etag:
            return False
    except OSError:
        return False
    digest = hashlib.md5(usedforsecurity=False)
    with open(local, "rb") as file:
        while block := file.read(1 << 22):
            digest.update(block)
    return digest.hexdigest() == etag
