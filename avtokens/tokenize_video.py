"""`./tokenize_video`: the original single-video command, run through the workflow.

It writes a one-row sample sheet and a config overlay into a work folder
(<output_tokens_dir>/.tokenize_video/<nickname>/), runs the same Snakemake workflow
there (so a repeated call recomputes only what is stale), then puts the results in the
places the original command used (hard links where the file system allows, else copies, so
long episodes' tokens do not take their disk space twice) and prints the original summary
sentence.

The folders it writes are checked before any work; one run of a video at a time holds its
work folder (a second one, say a retried cron job, waits for it); the results are placed
all or none; a failure ends with one line saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from avtokens import AvTokensError
from avtokens.atomic import atomic_output, link_or_copy, storage_problem
from avtokens.audio_codecs import AUDIO_CODECS, DEFAULT_CODEC
from avtokens.joblog import BY_JOBS, FAILURES_NAMED_BY
from avtokens.media import FITS
from avtokens.picture import PIXELS
from avtokens.presets import AudioSetting, make_audio_setting, make_preset
from avtokens.visual_tokenizers import DEFAULT_FAMILY, VISUAL_TOKENIZERS
from avtokens.workflow import DEFAULT_CONFIG, REPO, workflow_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokenize_video",
        description="Tokenize one video into visual tokens (Cosmos by default; --family picks another "
        "tokenizer) and audio tokens (DAC by default; --codec picks another codec), and reconstruct it "
        "from them.",
    )
    p.add_argument("orig_video_dir", type=Path, help="folder of the video (the .wav goes here)")
    p.add_argument("orig_video_file", help="file name of the video inside orig_video_dir")
    p.add_argument("video_nickname", help="names the outputs")
    p.add_argument("is_discrete", choices=["0", "1"], help="1: discrete DV tokens, 0: continuous CV")
    p.add_argument("temporal_factor", type=int, help="4 or 8 for Cosmos (its release's models)")
    p.add_argument("spatial_factor", type=int, help="8 or 16 for Cosmos")
    p.add_argument("output_tokens_dir", type=Path)
    p.add_argument("reconstructed_dir", type=Path)
    p.add_argument("--wav-dir", type=Path,
                   help="folder for <video_nickname>.wav (default: orig_video_dir; for videos on a "
                        "read-only share)")  # fmt: skip
    p.add_argument("--weights", choices=["official", "demo"], default="official",
                   help="demo: tiny stand-in models, for trying it offline (default: official)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cores", default="all", help="CPU cores for snakemake (default: all)")
    p.add_argument("--family", choices=sorted(VISUAL_TOKENIZERS), default=DEFAULT_FAMILY,
                   help=f"tokenizer family (default: {DEFAULT_FAMILY}; README, \"Tokenizer families\")",
                   )  # fmt: skip
    p.add_argument("--codec", choices=sorted(AUDIO_CODECS), default=DEFAULT_CODEC,
                   help=f"audio codec (default: {DEFAULT_CODEC}; README, \"Audio codecs\")")  # fmt: skip
    p.add_argument("--codebooks", type=int, help="how many of the codec's codebooks (default: the codec's)")
    p.add_argument("--release", help="the family's release (default: its first; Cosmos: 0.1, 1.0, tokenize1)")
    p.add_argument("--window", type=int,
                   help="frames per tokenizer window, 1 + k*temporal_factor (default: the family's, 121 for "
                        "Cosmos; NVIDIA's tool uses 17)")  # fmt: skip
    p.add_argument(
        "--engine", help="how the network runs (README, Engines; default: the family's first: auto)"
    )
    p.add_argument("--pixels", choices=PIXELS, default="square",
                   help="non-square pixels: resampled to square ones at the display aspect ratio "
                        "(default), or tokenized as stored")  # fmt: skip
    p.add_argument("--no-deinterlace", dest="deinterlace", action="store_false",
                   help="tokenize interlaced sources as stored (default: deinterlace, bwdif)")  # fmt: skip
    p.add_argument("--fit", choices=FITS,
                   help="frames brought to another size: fitted inside it on black (pad) or filling it, "
                        "cut (crop). For a picture that changes size mid-file (default pad), and for "
                        "--size or --buckets (default crop)")  # fmt: skip
    targets = p.add_argument_group('training clips of one shape (README, "Training clips of one shape")')
    targets.add_argument("--fps", help="put the frames on this rate (24, 30000/1001); the audio is kept")
    size = targets.add_mutually_exclusive_group()
    size.add_argument("--size", help="every frame at WIDTHxHEIGHT (multiples of the spatial factor)")
    size.add_argument("--buckets", help="sizes, comma-separated (1280x720,720x1280): the one nearest "
                                        "the video's aspect ratio")  # fmt: skip
    targets.add_argument("--start", type=float, help="seconds after the first frame where the frames start")
    targets.add_argument("--max-seconds", type=float, help="at most this many seconds of the video")
    return p


def target_fields(args) -> dict:
    """A preset's targets (avtokens.shaping) from the command's flags: those given."""
    fields = {"fps": args.fps, "size": args.size, "start": args.start, "max_seconds": args.max_seconds}
    if args.buckets:
        fields["buckets"] = [size.strip() for size in args.buckets.split(",")]
    if args.fit and (args.size or args.buckets):
        fields["fit"] = args.fit
    return {key: value for key, value in fields.items() if value is not None}


def place_all(outputs: dict[Path, Path]) -> None:
    """Each source at its destination too, replacing what was there, all or none: a hard link
    (no second copy on disk), or a copy where the two places are on different file systems or
    links are refused. Nothing is replaced until every destination holds its new file."""
    with contextlib.ExitStack() as placed:
        for src, dest in outputs.items():
            tmp = placed.enter_context(atomic_output(dest))
            link = tmp.with_name(f"{tmp.name}.link")  # beside tmp, which keeps the folder from going
            try:
                link_or_copy(src, link)
                os.replace(link, tmp)
            finally:
                link.unlink(missing_ok=True)


def writable_folder(folder: Path) -> str | None:
    """Why files cannot be written into `folder`, or None. A folder that does not exist yet is
    checked where it would be made (its nearest existing parent), and not made."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


@contextlib.contextmanager
def holding(workdir: Path, what: str):
    """The work folder for this run alone: a second run of the same video waits, saying so."""
    with open(workdir / ".tokenize_video.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            print(f"tokenize_video: another run of {what} is under way (pid {holder}); waiting for it",
                  file=sys.stderr, flush=True)  # fmt: skip
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


# A job's error line (avtokens.rule: "ERROR <message>"), or the workflow's own: the first one
# says why (the run's end names the failures again, with advice for a sample sheet).
_ERROR_LINE = re.compile(r"^ERROR (.+)$")
# What the terminal shows of the workflow's output: Snakemake's step count, the jobs' warnings
# and progress lines ("...: 1,210 of 13,275 frames (9%), 84.2 frames/s, ..."); the error, at
# the end. The rest (the outputs' list of a workflow run) is in the log file.
_SHOWN_LINE = re.compile(r"^\d+ of \d+ steps \(\d+%\) done$|^WARNING |\(\d+%\), .*(?:left|done)$")
# Snakemake's whole account of the run, named at its end.
_COMPLETE_LOG = re.compile(r"^Complete log\(s\): (.+)$")
# Folders of the work folder that the workflow names relatively.
_RELATIVE = re.compile(r"(?<![\w./-])(results|resources|logs)/")


def absolute_paths(line: str, workdir: Path) -> str:
    """`line` with the paths the workflow gave relative to its work folder made absolute."""
    return _RELATIVE.sub(lambda match: f"{workdir}/{match[1]}/", line)


def _closed(log) -> None:
    """Close `log`, whose last lines may not fit on the disk any more."""
    with contextlib.suppress(OSError):
        log.close()


def run_workflow(command: list[str], workdir: Path, log_file: Path) -> tuple[int, str | None, bool]:
    """Run the workflow in `workdir`, its output and then Snakemake's whole account of the run
    written to `log_file`, and the lines that say how it goes to stderr; its exit status, the
    first error line a job or the workflow wrote, and whether it found nothing to do."""
    jobs_say_why = {**os.environ, FAILURES_NAMED_BY: BY_JOBS}  # their lines, not the run's advice for a sheet
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, env=jobs_say_why)  # fmt: skip
    first_error, nothing_to_do, account, shown = None, False, None, set()
    try:  # line-buffered, so a full disk shows at a write (and the log stops) rather than at close
        log = open(log_file, "w", encoding="utf-8", buffering=1)
    except OSError:  # a full or read-only disk: the failing job says so
        log = None
    for line in proc.stdout:
        if log is not None:
            try:
                log.write(line)
            except OSError:
                _closed(log)
                log = None
        line = absolute_paths(line.rstrip(), workdir)
        nothing_to_do = nothing_to_do or line.startswith("Nothing to be done")
        if match := _ERROR_LINE.search(line):
            first_error = first_error or match.group(1)
        if match := _COMPLETE_LOG.search(line):
            account = Path(match.group(1))
        if _SHOWN_LINE.search(line) and line not in shown:
            shown.add(line)
            print(line, file=sys.stderr, flush=True)
    if log is not None and account is not None:
        with contextlib.suppress(OSError):
            log.write(f"\nSnakemake's account of the run ({account}):\n{account.read_text(errors='replace')}")
    if log is not None:
        _closed(log)
    return proc.wait(), first_error, nothing_to_do


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    kind = "DV" if args.is_discrete == "1" else "CV"
    name = f"{kind}{args.temporal_factor}x{args.spatial_factor}x{args.spatial_factor}"
    if args.family != DEFAULT_FAMILY:
        name = f"{args.family}-{name}"
    fields = {"family": args.family, "kind": kind, "temporal": args.temporal_factor,
              "spatial": args.spatial_factor, "weights": args.weights, "codec": args.codec}  # fmt: skip
    fields |= {
        key: getattr(args, key)
        for key in ("release", "window", "engine", "codebooks")
        if getattr(args, key) is not None
    } | target_fields(args)
    try:
        make_preset(name, fields)
        audio = make_audio_setting(name, fields)
    except ValueError as err:
        parser.error(str(err))
    if args.codec != DEFAULT_CODEC:
        name = f"{name}-{audio.name}"
    if "/" in args.video_nickname or not args.video_nickname.strip():
        parser.error(f"video_nickname {args.video_nickname!r} must be a plain name without '/'")
    source = (args.orig_video_dir / args.orig_video_file).resolve()
    if not source.is_file():
        parser.error(f"video file {source} does not exist")
    if args.cores != "all" and not args.cores.isdigit():
        parser.error(f"--cores must be a number or 'all', not {args.cores!r}")

    wav_dir = args.wav_dir or args.orig_video_dir
    for folder, hint in ((wav_dir, "; --wav-dir puts the .wav elsewhere" if not args.wav_dir else ""),
                         (args.output_tokens_dir, ""), (args.reconstructed_dir, "")):  # fmt: skip
        if problem := writable_folder(folder):
            parser.error(f"cannot write into {folder} ({problem}){hint}")

    workdir = (args.output_tokens_dir / ".tokenize_video" / args.video_nickname).resolve()
    try:
        for folder in (wav_dir, args.reconstructed_dir, workdir):
            folder.mkdir(parents=True, exist_ok=True)
        with holding(workdir, f"{args.video_nickname} into {args.output_tokens_dir}"):
            return _run(args, audio, name, fields, source, workdir, wav_dir)
    except AvTokensError as err:
        print(f"tokenize_video: {err}", file=sys.stderr)
    except OSError as err:
        where = err.filename or workdir
        if problem := storage_problem(err, workdir):
            print(f"tokenize_video: {where}: cannot be written ({problem})", file=sys.stderr)
        else:
            print(f"tokenize_video: {where}: {err.strerror or err}", file=sys.stderr)
    except KeyboardInterrupt:
        print("tokenize_video: interrupted", file=sys.stderr)
        return 130
    return 1


def _run(args, audio_setting: AudioSetting, name: str, fields: dict, source: Path, workdir: Path,
         wav_dir: Path) -> int:  # fmt: skip
    sheet = workdir / "videos.tsv"
    sheet.write_text(f"name\tpath\n{args.video_nickname}\t{source}\n", encoding="utf-8")
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    overlay = {
        "videos": str(sheet),
        "results": "results",
        "checkpoints": str((REPO / defaults["checkpoints"]).resolve()),
        "weights_lock": str((REPO / defaults["weights_lock"]).resolve()),
        "compile_cache": str((REPO / defaults["compile_cache"]).resolve()),
        "weights": args.weights,
        "device": args.device,
        "picture": {"pixels": args.pixels, "deinterlace": args.deinterlace, "fit": args.fit or "pad"},
        "presets": {name: fields},
        "run": [name],
    }
    # The work folder is held (`holding`), so Snakemake's own lock can only be a killed run's.
    log_file = workdir / "tokenize_video.log"
    command = workflow_command(workdir, overlay, "--nolock", cores=args.cores)
    status, error, nothing_to_do = run_workflow(command, workdir, log_file)
    if status != 0:
        if log_file.is_file() and log_file.stat().st_size:
            print(f"tokenize_video: the workflow's whole log: {log_file}", file=sys.stderr)
        problem = storage_problem(None, workdir)
        reason = error or (f"{workdir}: cannot be written ({problem})" if problem else "the workflow failed")
        print(f"tokenize_video: {reason}", file=sys.stderr)
        return 1
    if nothing_to_do:
        print(f"tokenize_video: nothing to redo, the results in {workdir} are up to date", file=sys.stderr)

    results, nick = workdir / "results", args.video_nickname
    audio = results / "audio"
    outputs = {
        audio / f"{audio_setting.sample_rate}hz" / f"{nick}.wav": wav_dir / f"{nick}.wav",
        **{results / name / "tokens" / f"{nick}_{part}_tokens.safetensors":
           args.output_tokens_dir / f"{nick}_{part}_tokens.safetensors" for part in ("visual", "audio")},
        **{results / name / "reconstructed" / f"{nick}_{part}":
           args.reconstructed_dir / f"{nick}_{part}" for part in ("visual.mp4", "combined.mp4")},
        audio / audio_setting.name / args.weights / f"{nick}_reconstructed.wav":
            args.reconstructed_dir / f"{nick}_audio.wav",
    }  # fmt: skip
    place_all(outputs)
    for dest in outputs.values():
        print(dest)
    print(json.loads((results / name / "metrics" / f"{nick}_summary.json").read_text())["description"])
    if args.weights == "demo":
        print("tokenize_video: made with stand-in demo weights; the tokens carry no meaning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
