"""Pages of the HTML report: what a reviewer looks at to choose a compression factor.

Snakemake's report shows a folder with an `index.html` as a page of its own (`report(
directory(...), htmlindex=...)`), the files beside it included. So the comparison videos play
inline (`<video>`), named by video and preset, next to each video's PSNR plot, one page per
preset; the token and audio tables are HTML tables on an overview page with the quality plot
(and the TSVs to download). Files enter a page folder as hard links where the file system
allows: a page costs no second copy of its videos.
"""

from __future__ import annotations

import csv
import html
import shutil
import sys
import zipfile
from pathlib import Path
from urllib.parse import quote

from avtokens.atomic import atomic_output, link_or_copy
from avtokens.audio_codecs import audio_codec
from avtokens.visual_tokenizers import visual_tokenizer

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; } td:first-child, td:nth-child(2) { text-align: left; }
video, img { max-width: 100%; display: block; margin: 0.4em 0; }
.note { background: #fff4d6; border: 1px solid #e8c870; padding: 0.5em; }
.figures { color: #555; }
"""

TOKEN_COLUMNS = {"video": "video", "preset": "preset", "family": "family", "codec": "codec",
                 "duration_s": "s", "fps": "fps",
                 "width": "width", "height": "height", "bucket": "bucket", "latent_frames": "latent frames",
                 "latent_width": "latent w", "latent_height": "latent h",
                 "codes_per_latent_frame": "codes / latent frame",
                 "visual_tokens": "visual tokens", "audio_tokens": "audio tokens", "total_tokens": "tokens",
                 "tokens_per_second": "tokens / s", "token_bytes": "bytes", "psnr_mean": "PSNR dB",
                 "psnr_p5": "PSNR p5 dB", "ssim_mean": "SSIM"}  # fmt: skip
AUDIO_COLUMNS = {"video": "video", "codec": "codec", "codebooks": "codebooks", "sample_rate": "Hz",
                 "weights": "weights", "duration_s": "s", "code_frames": "code frames",
                 "audio_tokens": "audio tokens", "audio_tokens_per_second": "audio tokens / s",
                 "token_bytes": "bytes", "mel_distance": "mel distance", "stft_distance": "STFT distance",
                 "si_sdr": "SI-SDR dB"}  # fmt: skip


def read_tsv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _number(text: str) -> str:
    """A table cell as people read it: 3 decimals at most, thousands separated."""
    try:
        value = float(text)
    except ValueError:
        return html.escape(text)
    return f"{value:,.0f}" if value.is_integer() else f"{value:,.3f}".rstrip("0").rstrip(".")  # 1.0001: "1"


def html_table(rows: list[dict], columns: dict[str, str]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in columns.values())
    body = "".join(
        "<tr>" + "".join(f"<td>{_number(row.get(key, ''))}</td>" for key in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stand_in_note(rows: list[dict]) -> str:
    """What a run on stand-in weights shows, per tokenizer family and codec of `rows`."""
    stand_ins = [row for row in rows if row.get("stand_in_weights") == "True"]
    if not stand_ins:
        return ""
    looks = {visual_tokenizer(row["family"]).label: visual_tokenizer(row["family"]).stand_in_output
             for row in stand_ins if row.get("family")}  # fmt: skip
    looks |= {audio_codec(row["codec"]).label: audio_codec(row["codec"]).stand_in_output for row in stand_ins}
    said = "; ".join(f"{label}: {output}" for label, output in looks.items())
    return (f'<p class="note">Made with stand-in demo weights: the tokens carry no meaning, and the '
            f"reconstructions show only that the pipeline works. {html.escape(said)}.</p>")  # fmt: skip


def _page(folder: Path, title: str, body: str, files: dict[str, Path]) -> None:
    """`folder` (new, as Snakemake makes a directory output) with index.html and `files`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        link_or_copy(src, folder / name)
    title = html.escape(title)
    head = f'<meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style>'
    page = f"<head>{head}</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>"
    text = f'<!DOCTYPE html>\n<html lang="en">{page}</html>\n'
    with atomic_output(folder / "index.html") as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_overview(folder, token_table, audio_table, quality_plot) -> None:
    """The overview page: quality against token rate, the token and audio tables."""
    tokens, audio = read_tsv(token_table), read_tsv(audio_table)
    body = f"""{_stand_in_note(tokens + audio)}
<p>Every preset that ran, on every video: visual tokens of its tokenizer family and audio tokens of its codec,
decoded back.
Video PSNR and SSIM compare the decoder's own frames with the source frames (before the
reconstruction's mp4 encode); higher is better. Each preset's page plays its comparison videos.</p>
<h2>Quality against token rate</h2>
<p>Mean PSNR and SSIM against tokens per second, one point per preset, averaged over the videos.</p>
<img src="quality_vs_tokens.png" alt="PSNR and SSIM against tokens per second">
{_bucket_section(tokens)}<h2>Token table</h2>
<p>One row per video and preset; the last row sums counts, durations and bytes.
<a href="token_table.tsv" download>token_table.tsv</a></p>
{html_table(tokens, TOKEN_COLUMNS)}
<h2>Audio table</h2>
<p>One row per video and codec setting ({html.escape(_codec_settings(audio))}; the audio is coded once,
whatever the preset): the distances DAC trains with (mel and multi-scale STFT: lower is better)
and SI-SDR (higher is better), between the coded mono audio, at the codec's sample rate, and its
reconstruction.
<a href="audio_table.tsv" download>audio_table.tsv</a></p>
{html_table(audio, AUDIO_COLUMNS)}"""
    files = {
        "quality_vs_tokens.png": quality_plot,
        "token_table.tsv": token_table,
        "audio_table.tsv": audio_table,
    }
    _page(Path(folder), "Fidelity of the tokens: overview", body, {k: Path(v) for k, v in files.items()})


BUCKET_COLUMNS = {"preset": "preset", "bucket": "bucket", "videos": "videos", "psnr_mean": "PSNR dB",
                  "ssim_mean": "SSIM", "tokens_per_second": "tokens / s"}  # fmt: skip


def _by_bucket(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The token table's rows of presets with buckets (avtokens.shaping), by preset and bucket."""
    groups = {}
    for row in rows:
        if row.get("bucket") and row["video"] != "TOTAL":
            groups.setdefault((row["preset"], row["bucket"]), []).append(row)
    return groups


def _bucket_section(tokens: list[dict]) -> str:
    """Per preset and bucket, the mean of its videos' figures: a bucket whose videos lose more
    (a crop that cuts what matters, a pad that wastes tokens) shows up here."""
    groups = _by_bucket(tokens)
    if not groups:
        return ""
    mean = lambda rows, key: sum(float(row[key]) for row in rows) / len(rows)  # noqa: E731
    table = [{"preset": preset, "bucket": bucket, "videos": len(rows),
              **{key: f"{mean(rows, key):.6g}" for key in ("psnr_mean", "ssim_mean", "tokens_per_second")}}
             for (preset, bucket), rows in sorted(groups.items())]  # fmt: skip
    return f"""<h2>By bucket</h2>
<p>Presets with buckets: each video went to the bucket nearest its aspect ratio; the mean over its videos.</p>
{html_table(table, BUCKET_COLUMNS)}
"""


def _codec_settings(rows: list[dict]) -> str:
    """The codec settings of the audio table's rows: "dac, 9 codebooks at 44,100 Hz", ..."""
    settings = dict.fromkeys(
        f"{row['codec']}, {row['codebooks']} codebooks at {int(row['sample_rate']):,} Hz" for row in rows
    )
    return "; ".join(settings)


def write_preset_page(folder, preset: str, comparisons: list, psnr_plots: list, token_table) -> None:
    """A preset's page: per video, its figures, the comparison video (source left,
    reconstruction right) and the PSNR of every frame for every preset. `comparisons` and
    `psnr_plots` are the workflow's files (`<preset>/reconstructed/<video>_comparison.mp4`,
    `report/<video>_psnr_per_frame.png`)."""
    rows = {row["video"]: row for row in read_tsv(token_table) if row["preset"] == preset}
    plots = {Path(p).name.removesuffix("_psnr_per_frame.png"): Path(p) for p in psnr_plots}
    # A preset with buckets: its videos under their bucket, a bucket's after another's.
    comparisons = sorted(map(Path, comparisons), key=lambda path: _bucket_of(rows, path))
    sections, files, bucket = [], {}, ""
    for comparison in comparisons:
        video = comparison.name.removesuffix("_comparison.mp4")
        name = f"{video}_{preset}_comparison.mp4"  # what a download is called
        files[name] = comparison
        row = rows.get(video, {})
        if row.get("bucket", "") != bucket:
            bucket = row["bucket"]
            sections.append(f'<h2 class="bucket">Bucket {html.escape(bucket)}</h2>\n')
        figures = ", ".join(f"{title} {_number(row[key])}" for key, title in
                            (("psnr_mean", "PSNR dB"), ("psnr_p5", "PSNR p5 dB"), ("ssim_mean", "SSIM"),
                             ("tokens_per_second", "tokens / s")) if key in row)  # fmt: skip
        level = "h3" if bucket else "h2"  # under its bucket's heading
        section = (f"<{level}>{html.escape(video)}</{level}>\n<p class=\"figures\">{figures}</p>\n"
                   f'<video controls preload="metadata" src="{quote(name)}"></video>\n')  # fmt: skip
        if video in plots:
            plot = f"{video}_psnr_per_frame.png"
            files[plot] = plots[video]
            section += f'<img src="{quote(plot)}" alt="PSNR per frame of {html.escape(video)}">\n'
        sections.append(section)
    body = f"""{_stand_in_note(list(rows.values()))}
<p>Source (left) and reconstruction from the tokens (right) of each video, with the PSNR of each
frame and the running mean drawn on the reconstruction; below, the PSNR of every frame for every
preset (dotted lines: a tokenizer window starts, where quality often dips or jumps).</p>
{"".join(sections) or "<p>No comparison video was made for this preset (shard mode samples them).</p>"}"""
    _page(Path(folder), f"{preset}: source | reconstruction", body, files)


def _bucket_of(rows: dict[str, dict], comparison: Path) -> str:
    return rows.get(comparison.name.removesuffix("_comparison.mp4"), {}).get("bucket", "")


def share_report_zip(path) -> None:
    """Give every file of a Snakemake report zip the mode 0644, so that what it unpacks is
    readable by others too (a web server, colleagues): Snakemake writes `report.html` into it
    with 0600, zipfile's default for data written as a string. Rewrites the zip in place."""
    path = Path(path)
    with atomic_output(path) as tmp, zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as dest:
        for info in src.infolist():
            kind = info.external_attr >> 16 & 0o170000
            mode = 0o755 if info.is_dir() else 0o644
            info.external_attr = (kind | mode) << 16 | info.external_attr & 0xFFFF
            with src.open(info) as data, dest.open(info, "w") as out:
                shutil.copyfileobj(data, out, 1 << 20)


if __name__ == "__main__":  # python -m avtokens.report_pages REPORT.zip
    share_report_zip(sys.argv[1])
