"""Official weights: where they live, how they are fetched, and the hashes they are pinned to.

Layout under the checkpoint folder (what the releases ship, so files copied by hand work):
`<repo name>/<file>` for each file a visual tokenizer family reads (its `files`; Cosmos:
`encoder.jit` and `decoder.jit`), and `<codec folder>/<file>` for each file an audio codec reads
(DAC: `dac/weights_44khz_8kbps_0.0.1.pth`). A fetch writes into a temporary
folder and moves complete files into place, so a failed download leaves nothing that could
pass for a checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from avtokens import AvTokensError
from avtokens.atomic import atomic_output

if TYPE_CHECKING:
    from avtokens.presets import Preset

log = logging.getLogger(__name__)


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


def fetch_files(repo: str, names: list[str], folder: Path | str, endpoint: str | None = None) -> None:
    """Download the files `names` (paths in the repo, kept below `folder`) of a Hugging Face repo.

    Uses huggingface_hub, so HF_TOKEN, HF_HOME and HF_HUB_OFFLINE apply, and HF_ENDPOINT
    unless `endpoint` is given (huggingface_hub reads the variable once, at import)."""
    from huggingface_hub import hf_hub_download

    folder = Path(folder)
    staging = folder.parent / f".{folder.name}.download-{os.getpid()}"
    try:
        for name in names:
            hf_hub_download(repo, name, local_dir=staging, endpoint=endpoint)
        for name in names:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, folder / name)
    except Exception as err:
        files = [folder / name for name in names]
        raise _unavailable(files, f"Hugging Face repo {repo}", _root_cause(err)) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("fetched %s from %s into %s", ", ".join(names), repo, folder)


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
    {"repo": a Hugging Face repo} or {"url": the file's own URL}."""
    if "url" in source:
        fetch_url(source["url"], Path(folder) / name)
    else:
        fetch_files(source["repo"], [name], folder)


class WeightsLock:
    """A JSON file in the repository that pins each weights file's sha256, keyed by where
    the file comes from. The first use records the hash; a later file that differs is refused."""

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
            with atomic_output(self.path) as tmp:
                tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
        log.info("pinned %s (%s) to sha256 %s in %s", key, file, sha256, self.path)


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
