"""The report's pages: every file they show is in their folder, whatever the video's name."""

from __future__ import annotations

import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from avtokens.report_pages import share_report_zip, write_overview, write_preset_page

TOKEN_TABLE = (
    "video\tpreset\tfamily\tcodec\tduration_s\tpsnr_mean\tpsnr_p5\tssim_mean\ttokens_per_second\t"
    "stand_in_weights\n"
    "tom & jerry <1>\tDV8x16x16\tcosmos\tdac\t4.004\t31.25\t28.5\t0.912345\t1733.5\tTrue\n"
    "plain\tDV8x16x16\tcosmos\tdac\t2\t40\t39\t0.99\t1200\tTrue\n"
    "plain\twan\twan2.1\tmimi\t2\t45\t44\t0.995\t9000\tTrue\n"
    "TOTAL\t2 presets\t\t\t8.004\t\t\t\t\t\n"
)
AUDIO_TABLE = (
    "video\tcodec\tcodebooks\tsample_rate\tweights\tduration_s\tmel_distance\tsi_sdr\tstand_in_weights\n"
    "plain\tdac\t9\t44100\tdemo\t2\t1.5\t-3.25\tTrue\n"
    "plain\tmimi\t8\t24000\tdemo\t2\t2.5\t-9.5\tTrue\n"
)


class Sources(HTMLParser):
    """The files a page refers to (src, href), and its text."""

    def __init__(self):
        super().__init__()
        self.files, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.files += [unquote(value) for key, value in attrs if key in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def parsed(page: Path) -> Sources:
    sources = Sources()
    sources.feed(page.read_text(encoding="utf-8"))
    return sources


def test_a_preset_page_plays_each_video_and_names_it_by_preset(tmp_path):
    tables = tmp_path / "token_table.tsv"
    tables.write_text(TOKEN_TABLE, encoding="utf-8")
    made = tmp_path / "results"
    comparisons = []
    for video in ("tom & jerry <1>", "plain"):
        comparison = made / "DV8x16x16" / "reconstructed" / f"{video}_comparison.mp4"
        comparison.parent.mkdir(parents=True, exist_ok=True)
        comparison.write_bytes(f"mp4 of {video}".encode())
        comparisons.append(comparison)
    plot = made / "report" / "plain_psnr_per_frame.png"
    plot.parent.mkdir(parents=True)
    plot.write_bytes(b"png")
    folder = tmp_path / "pages" / "DV8x16x16"
    write_preset_page(folder, "DV8x16x16", comparisons, [plot], tables)

    page = parsed(folder / "index.html")
    assert page.files == ["tom & jerry <1>_DV8x16x16_comparison.mp4", "plain_DV8x16x16_comparison.mp4",
                          "plain_psnr_per_frame.png"]  # fmt: skip
    for name in page.files:  # there, and the workflow's own bytes (a link, not a new file)
        assert (folder / name).read_bytes() in (b"mp4 of tom & jerry <1>", b"mp4 of plain", b"png")
    assert (folder / "plain_psnr_per_frame.png").stat().st_ino == plot.stat().st_ino
    text = " ".join(page.text)
    assert (
        "tom & jerry <1>" in text and "PSNR dB 31.25, PSNR p5 dB 28.5, SSIM 0.912, tokens / s 1,733.5" in text
    )
    assert "stand-in demo weights" in text  # and what this preset's stand-ins make, as their plug-ins say
    assert "Cosmos: a blocky copy of the video" in text and "DAC 44.1 kHz: noise" in text
    assert "Mimi" not in text  # another preset's codec
    assert "<1>" not in (folder / "index.html").read_text()  # escaped, not markup


def test_the_overview_shows_both_tables_and_the_plot(tmp_path):
    (tmp_path / "token_table.tsv").write_text(TOKEN_TABLE, encoding="utf-8")
    (tmp_path / "audio_table.tsv").write_text(AUDIO_TABLE, encoding="utf-8")
    (tmp_path / "quality.png").write_bytes(b"png")
    folder = tmp_path / "overview"
    write_overview(
        folder, tmp_path / "token_table.tsv", tmp_path / "audio_table.tsv", tmp_path / "quality.png"
    )
    page = parsed(folder / "index.html")
    assert sorted(page.files) == ["audio_table.tsv", "quality_vs_tokens.png", "token_table.tsv"]
    assert all((folder / name).is_file() for name in page.files)
    html_text = (folder / "index.html").read_text()
    assert html_text.count("<tr>") == 5 + 3  # header and rows of each table
    assert (
        "(dac, 9 codebooks at 44,100 Hz; mimi, 8 codebooks at 24,000 Hz; the audio is coded once" in html_text
    )
    assert "<td>-3.25</td>" in html_text and "<td>4.004</td>" in html_text and "<td>TOTAL</td>" in html_text


def test_a_report_zip_is_readable_by_all_once_unpacked(tmp_path):
    report = tmp_path / "report.zip"
    with zipfile.ZipFile(report, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report/report.html", "<html>report</html>")  # as Snakemake writes it: mode 0600
        z.writestr(zipfile.ZipInfo("report/data/"), "")
        z.writestr("report/data/raw/a/index.html", "page")
    before = {info.filename: oct(info.external_attr >> 16) for info in zipfile.ZipFile(report).infolist()}
    assert before["report/report.html"] == "0o600"
    share_report_zip(report)
    with zipfile.ZipFile(report) as z:
        modes = {info.filename: info.external_attr >> 16 & 0o777 for info in z.infolist()}
        assert (
            z.read("report/report.html") == b"<html>report</html>"
            and z.read("report/data/raw/a/index.html") == b"page"
        )
    assert modes == {
        "report/report.html": 0o644,
        "report/data/": 0o755,
        "report/data/raw/a/index.html": 0o644,
    }
    assert [p.name for p in tmp_path.iterdir()] == ["report.zip"]
