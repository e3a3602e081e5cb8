"""Official weights: where they live, how they are fetched, and the hashes they are pinned to.

Layout under the checkpoint folder (what the releases ship, so files copied by hand work):
`<repo name>/<file>` for each file a visual tokenizer family reads (its `files`; Cosmos:
`encoder.jit` and `decoder.jit`), and `<codec folder>/<file>` for each file an audio codec reads
(DAC: `dac/weights_44khz_8kbps_0.0.1.pth`). A fetch writes into a temporary
folder and moves complete files into place, so a failed download leaves nothing that could
pass for a checkpoint.

The weights lock pins each file's sha256 and, for a Hugging Face repo, the commit its files
were fetched at (`WeightsLock.commit`), so every job and machine with the lock fetches one
commit, whatever the branch has moved to since.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from avtokens import AvTokensError
from avtokens.atomic import atomic_output, error_chain

if TYPE_CHECKING:
    from avtokens.presets import Preset

log = logging.getLogger(__name__)

DEFAULT_REVISION = "main"  # what huggingface_hub fetches when given no revision
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
REVISIONS = "revisions"  # the lock's key of the commits it records: {repo: {branch or tag: commit}}
# The weights lock of the workflow's download jobs (rules/weights.smk says why not a param).
WEIGHTS_LOCK_VARIABLE = "AVTOKENS_WEIGHTS_LOCK"


def checkpoint_folder(checkpoint_dir: Path | str, preset: Preset) -> Path:
    """The preset's checkpoint folder: the first of its names that holds every file its family
    reads, else the repo's own name (where a fetch puts them)."""
    files = preset.tokenizer.checkpoint_files()
    for name in preset.folder_names:
        folder = Path(checkpoint_dir) / name
        if all((folder / f).is_file() for f in files):
            return folder
    return Path(checkpoint_dir) / preset.model


def _unavailable(files: list[Path], source: str, reason: str) -> AvTokensError:
    folder = files[0].parent
    names = ", ".join(f.name for f in files)
    return AvTokensError(
        f"cannot fetch {names} from {source} into {folder}/ ({reason}). Either make the "
        f"download possible (network access; for a gated or private repo set HF_TOKEN to a "
        f"token that may read it; unset HF_HUB_OFFLINE), or copy {names} there by hand; to try "
        f"the workflow offline meanwhile, set `weights: demo` (stand-in models, no download)"
    )


def _root_cause(err: BaseException) -> str:
    """First line of the innermost error: huggingface_hub wraps an HTTP 401 or 404 in a
    generic "cannot find the requested files" error."""
    while err.__cause__ is not None or (err.__context__ is not None and not err.__suppress_context__):
        err = err.__cause__ or err.__context__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def fetch_files(repo: str, names: list[str], folder: Path | str, endpoint: str | None = None,
                revision: str | None = None, lock: WeightsLock | None = None) -> str:  # fmt: skip
    """Download the files `names` (paths in the repo, kept below `folder`) of a Hugging Face repo,
    all at one commit, and return it: `revision` if it is a commit, else the commit its branch
    or tag (default main) is at, looked up once. With `lock`, the commit recorded there for the
    repo and revision is taken, else the one looked up is recorded, so later fetches (other
    jobs, other machines) take the same.

    Uses huggingface_hub, so HF_TOKEN, HF_HOME and HF_HUB_OFFLINE apply, and HF_ENDPOINT
    unless `endpoint` is given (huggingface_hub reads the variable once, at import)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RevisionNotFoundError

    folder = Path(folder)
    revision = revision or DEFAULT_REVISION
    files = [folder / name for name in names]
    staging = folder.parent / f".{folder.name}.download-{os.getpid()}"
    commit = None
    try:
        if COMMIT_ID.fullmatch(revision):
            commit = revision
        else:
            look_up = functools.partial(_commit_of, repo, revision, endpoint)
            commit = lock.commit(repo, revision, look_up) if lock else look_up()
        for name in names:
            hf_hub_download(repo, name, revision=commit, local_dir=staging, endpoint=endpoint)
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, folder / name)
    except Exception as err:
        if not any(isinstance(cause, RevisionNotFoundError) for cause in error_chain(err)):
            raise _unavailable(files, f"Hugging Face repo {repo}", _root_cause(err)) from None
        raise _missing_revision(files, repo, revision, commit, lock) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s from %s at commit %s into %s", ", ".join(names), repo, commit, folder)
    return commit


def _commit_of(repo: str, revision: str, endpoint: str | None) -> str:
    """The commit a branch or tag of the repo is at now, as the Hub's API says."""
    from huggingface_hub import HfApi

    commit = HfApi(endpoint=endpoint).model_info(repo, revision=revision).sha
    if not commit:  # a mirror that does not say: fetching `revision` itself could mix commits
        raise OSError(f"the Hub's API names no commit for {revision}")
    return commit


def _missing_revision(files: list[Path], repo: str, revision: str, commit: str | None,
                      lock: WeightsLock | None) -> AvTokensError:  # fmt: skip
    """The repo lacks the revision asked for, or the commit its branch or tag was at."""
    names = ", ".join(f.name for f in files)
    cannot = f"cannot fetch {names} from Hugging Face repo {repo} into {files[0].parent}/"
    if commit in (None, revision):
        return AvTokensError(
            f"{cannot}: it has no revision {revision!r}; set the `revision` of its preset or codec "
            f"in the config to a branch, tag or commit of {repo}, or leave it out for {DEFAULT_REVISION}"
        )
    if lock is None:  # the branch was rewritten between looking it up and fetching
        return AvTokensError(f"{cannot}: {revision} moved off commit {commit} meanwhile; try again")
    return AvTokensError(
        f"{cannot}: {lock.path} records {revision} as commit {commit}, which the repo no longer has. "
        f'To fetch {revision} as it is now, delete "{revision}" under "{REVISIONS}": "{repo}" from '
        f"{lock.path} (the files are still checked against their pinned sha256)"
    )


def fetch_url(url: str, dest: Path | str) -> None:
    """Download one file (a release asset, such as DAC's) to `dest`. HF_HUB_OFFLINE=1 forbids it too."""
    dest = Path(dest)
    try:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise OSError("offline mode: HF_HUB_OFFLINE is set")
        with urllib.request.urlopen(url, timeout=60) as response, atomic_output(dest) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, urllib.error.URLError) as err:
        raise _unavailable([dest], url, str(getattr(err, "reason", err))) from None
    log.info("fetched %s into %s", url, dest)


def fetch_source(source: dict, name: str, folder: Path | str) -> None:
    """Download the file `name` of a checkpoint folder from where its model comes from:
    {"repo": a Hugging Face repo, optionally "revision": its branch, tag or commit} or {"url":
    the file's own URL}. A repo's commit is the one recorded in the lock that the variable
    `WEIGHTS_LOCK_VARIABLE` names, if set (the workflow sets it)."""
    if "url" in source:
        fetch_url(source["url"], Path(folder) / name)
    else:
        lock = WeightsLock.optional(os.environ.get(WEIGHTS_LOCK_VARIABLE))
        fetch_files(source["repo"], [name], folder, revision=source.get("revision"), lock=lock)


class WeightsLock:
    """A JSON file in the repository that pins each weights file's sha256, keyed by where
    the file comes from. The first use records the hash; a later file that differs is refused.
    Under `revisions` it records the commit each Hugging Face repo's branch or tag was fetched at."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def optional(cls, path: Path | str | None) -> WeightsLock | None:
        """The lock at `path`, or None (no pinning, as for stand-in weights)."""
        return cls(path) if path else None

    @contextlib.contextmanager
    def _locked(self):
        """Read-modify-write under an exclusive lock: parallel jobs may pin at once."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".flock"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            pins = json.loads(self.path.read_text()) if self.path.is_file() else {}
            yield pins

    def check(self, key: str, file: Path | str, sha256: str) -> None:
        """Accept `file` if its hash is the pinned one; pin it if `key` has no pin yet."""
        with self._locked() as pins:
            pinned = pins.get(key)
            if pinned == sha256:
                return
            if pinned is not None:
                raise AvTokensError(
                    f"{file} has sha256 {sha256}, but {self.path} pins {key} to {pinned}: the file "
                    f"changed since it was first used. If the new file is intended, delete the "
                    f'"{key}" entry from {self.path} (it is pinned again on next use); otherwise '
                    f"restore the original file"
                )
            pins[key] = sha256
            self._write(pins)
        log.info("pinned %s (%s) to sha256 %s in %s", key, file, sha256, self.path)

    def commit(self, repo: str, revision: str, look_up) -> str:
        """The commit of `repo` recorded for its branch or tag `revision`, else `look_up()`'s,
        recorded. Looked up under the lock, so parallel fetches of a repo's files agree."""
        with self._locked() as pins:
            recorded = pins.setdefault(REVISIONS, {}).setdefault(repo, {})
            if revision in recorded:
                return recorded[revision]
            recorded[revision] = commit = look_up()
            self._write(pins)
        log.info("recorded %s at %s as commit %s in %s", repo, revision, commit, self.path)
        return commit

    def _write(self, pins: dict) -> None:
        with atomic_output(self.path) as tmp:
            tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")


def pinned_files(folder: Path | str, files, key_of, lock: WeightsLock | None, what: str,
                 origin: str) -> dict[str, str]:  # fmt: skip
    """The sha256 of each of `files` (names in `folder`), each checked against `lock` under the
    key `key_of(name)` before any is loaded (None: stand-ins, not pinned). The host runs this
    for every family and codec, so no plug-in can load unpinned weights. `what` names the
    checkpoint and `origin` where its files come from, for a missing file."""
    from avtokens.media import sha256_of

    folder = Path(folder)
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise AvTokensError(f"{folder}: {what} is missing {', '.join(missing)} ({origin})")
    digests = {name: sha256_of(folder / name) for name in files}
    if lock is not None:
        for name, sha256 in digests.items():
            lock.check(key_of(name), folder / name, sha256)
    return digests


def from_pretrained(network_class, folder: Path | str, **kwargs):
    """`network_class.from_pretrained(folder, **kwargs)`, as Hugging Face model cards load a
    model; a folder it cannot load is refused in one line naming it."""
    try:
        return network_class.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        where = Path(folder, kwargs.get("subfolder", ""))
        raise AvTokensError(f"{where}: not a loadable {network_class.__name__} ({reason})") from None
