"""The whole workflow, run with snakemake as a user runs it, on clips made with ffmpeg."""

import csv
import filecmp
import json
import os
import re
import shutil
import time
import zipfile
from fractions import Fraction
from pathlib import Path
from urllib.parse import quote

import browser
import numpy as np
import pytest
import torch
from helpers import count_frames, make_clip, planned_jobs, run_workflow

import avtokens
from avtokens import load_tokens
from avtokens.media import probe, read_frame_windows, sha256_of
from avtokens.presets import make_audio_setting, make_preset
from avtokens.visual_tokenizers.cosmos.fsq import CODEBOOK_SIZE

# Three of the six released models: both kinds and both temporal factors (all six run through the
# workflow in test_make_run's `make run`, the 16x ones in most other runs, and each network is
# checked against its file in test_engines). One codes the audio with Mimi (24 kHz, 12.5 code
# frames a second), the others with DAC.
PRESETS = {
    "CV8x8x8": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17},
    "DV8x8x8": {"kind": "DV", "temporal": 8, "spatial": 8, "window": 17},
    "DV4x8x8": {"kind": "DV", "temporal": 4, "spatial": 8, "window": 17, "codec": "mimi"},
}
DAC_PRESETS = [name for name, fields in PRESETS.items() if "codec" not in fields]
# 100x58: not a multiple of 8 or 16; 40 frames: not 1 + k*4 nor 1 + k*8.
WIDTH, HEIGHT, FRAMES = 100, 58, 40
NAME = "clip één"  # spaces and unicode in the name...
# By hand: windows of 17, 17 and 6 frames. At 4x a full window gives 1 + 16/4 = 5 latent frames
# and the last, padded to 9, 1 + 8/4 = 3; at 8x, 1 + 16/8 = 3 and, padded to 9, 1 + 8/8 = 2.
WINDOW_LATENT_FRAMES = {4: [5, 5, 3], 8: [3, 3, 2]}
LATENT_FRAMES = {t: sum(counts) for t, counts in WINDOW_LATENT_FRAMES.items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The workflow over the three presets, on a clip whose path has shell metacharacters."""
    workdir = tmp_path_factory.mktemp("workflow")
    source = make_clip(workdir / "in $dir; 'q' & (x)" / "my clip.mp4", WIDTH, HEIGHT, FRAMES)
    sheet = workdir / "videos.tsv"
    sheet.write_text(f"name\tpath\n{NAME}\t{source}\n", encoding="utf-8")
    overlay = {"videos": str(sheet), "weights": "demo", "presets": PRESETS, "run": list(PRESETS)}
    run_workflow(workdir, overlay, cores=2)  # jobs at once, sharing the weights and the audio
    return workdir, source, overlay


def codec_of(preset):
    return make_audio_setting(preset, PRESETS[preset]).audio_codec


def outputs(workdir, preset):
    base = workdir / "results" / preset
    audio = workdir / "results" / "audio" / make_audio_setting(preset, PRESETS[preset]).name / "demo"
    return {
        "visual": base / "tokens" / f"{NAME}_visual_tokens.safetensors",
        "audio": base / "tokens" / f"{NAME}_audio_tokens.safetensors",
        "video": base / "reconstructed" / f"{NAME}_visual.mp4",
        "codes": audio / f"{NAME}_codes.safetensors",
        "wav": audio / f"{NAME}_reconstructed.wav",
        "audio_summary": audio / f"{NAME}_summary.json",
        "combined": base / "reconstructed" / f"{NAME}_combined.mp4",
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_visual_tokens_follow_the_frame_count_and_padding_rules(run, preset):
    workdir, source, _ = run
    fields = PRESETS[preset]
    t, s = fields["temporal"], fields["spatial"]
    tokens = load_tokens(outputs(workdir, preset)["visual"])
    latent_frames = LATENT_FRAMES[t]
    h, w = -(-HEIGHT // s), -(-WIDTH // s)
    meta = tokens.metadata
    if fields["kind"] == "CV":
        assert tokens["latents"].shape == (1, latent_frames, h, w, 16)
        assert tokens["latents"].dtype == torch.bfloat16
    else:
        indices = tokens["indices"]
        assert indices.shape == (1, latent_frames, h, w) and indices.dtype == torch.uint16
        assert int(indices.to(torch.int64).max()) < CODEBOOK_SIZE
    assert tokens["frame_spans"].shape == (latent_frames, 2)
    assert meta["video"]["frame_count"] == FRAMES and meta["video"]["fps"] == "30000/1001"
    assert (meta["video"]["padded_width"], meta["video"]["padded_height"]) == (w * s, h * s)
    assert meta["windows"]["last_real_frames"] == FRAMES - 34
    assert meta["tokenizer"]["weights"] == "demo" and meta["stand_in_weights"] is True
    assert meta["source"]["name"] == NAME and len(meta["source"]["sha256"]) == 64
    # What made it: the project, the engine (auto on a CPU: the file's own graph), the machine.
    assert (
        meta["project_version"] == avtokens.__version__
        and meta["tokenizer"]["encoder"]["engine"] == "torchscript"
    )
    assert meta["runtime"]["device"] == "cpu" and meta["runtime"]["torch"] == torch.__version__
    audio = load_tokens(outputs(workdir, preset)["audio"]).metadata
    assert audio["project_version"] == avtokens.__version__ and audio["runtime"]["device"] == "cpu"


def test_long_jobs_log_their_progress(run):
    workdir, _, _ = run
    logs = workdir / "results" / "logs" / "DV8x8x8"
    seconds = FRAMES * 1001 / 30000
    done = r"\(100%\), [\d.]+(x real time| frames/s), done"
    expected = {
        "visual_encode": rf"my clip\.mp4: visual encode: {FRAMES} of {FRAMES} frames {done}",
        "visual_decode": rf"_visual_tokens\.safetensors: visual decode: {FRAMES} of {FRAMES} frames {done}",
        "audio_encode": rf"\.wav: audio encode: [\d.]+ of [\d.]+ s {done}",
        "audio_decode": rf"audio decode: {seconds:.1f} of {seconds:.1f} s {done}",
    }
    for rule, pattern in expected.items():
        folder = (
            logs if rule.startswith("visual") else workdir / "results" / "logs" / "audio" / "dac" / "demo"
        )
        text = (folder / f"{NAME}.{rule}.log").read_text()
        assert re.search(pattern, text), rule
        assert "holds stand-in weights" in text, rule  # the warning, in every model job's own log


@pytest.mark.parametrize("preset", PRESETS)
def test_audio_codes_tile_the_latent_frames_exactly(run, preset):
    workdir, _, _ = run
    visual = load_tokens(outputs(workdir, preset)["visual"])
    audio = load_tokens(outputs(workdir, preset)["audio"])
    codes, ranges = audio["codes"], audio["code_ranges"]
    codec = codec_of(preset)  # DAC: 9 codebooks of 1024, hop 512 at 44.1 kHz; Mimi: 8 of 2048, 80 ms
    assert codes.shape[0] == 1 and codes.shape[2] == codec.default_codebooks and codes.dtype == torch.uint16
    assert int(codes.to(torch.int64).max()) < codec.codebook_size
    assert ranges.shape == (visual["frame_spans"].shape[0], 2)
    assert ranges[0, 0] == 0 and ranges[-1, 1] == codes.shape[1]
    assert torch.equal(ranges[1:, 0], ranges[:-1, 1])  # each code frame once, in order
    duration = FRAMES / Fraction(30000, 1001)
    code_frame = Fraction(codec.hop, codec.sample_rate)
    assert 0 <= codes.shape[1] * code_frame - duration < code_frame
    meta = audio.metadata["audio"]
    assert meta["source_channels"] == 2 and meta["source_rate"] == 48000 and meta["has_audio"]
    assert (meta["codec"], meta["sample_rate"], meta["hop"]) == (codec.name, codec.sample_rate, codec.hop)


@pytest.mark.parametrize("preset", PRESETS)
def test_reconstruction_keeps_size_rate_and_length(run, preset):
    workdir, source, _ = run
    out = outputs(workdir, preset)
    src, video, combined = probe(source), probe(out["video"]), probe(out["combined"])
    for rec in (video, combined):
        assert (rec.width, rec.height, rec.fps) == (src.width, src.height, src.fps)
    assert count_frames(out["video"]) == count_frames(out["combined"]) == FRAMES
    assert combined.has_audio and combined.audio_rate == codec_of(preset).sample_rate and not video.has_audio


@pytest.mark.parametrize("preset", PRESETS)
def test_metrics_score_every_frame_and_summarize_each_run(run, preset):
    workdir, source, _ = run
    base = workdir / "results" / preset
    with open(base / "metrics" / f"{NAME}_frames.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [int(r["frame"]) for r in rows] == list(range(FRAMES))
    assert [int(r["window"]) for r in rows] == [i // 17 for i in range(FRAMES)]
    # The stand-ins are block averages: far from perfect, far from noise.
    assert all(10 < float(r["psnr"]) < 60 and 0 < float(r["ssim"]) < 1 for r in rows)
    summary = json.loads((base / "metrics" / f"{NAME}_summary.json").read_text())
    assert summary["psnr"]["mean"] == pytest.approx(sum(float(r["psnr"]) for r in rows) / FRAMES, rel=1e-4)
    assert summary["psnr"]["worst"] <= summary["psnr"]["p5"] <= summary["psnr"]["mean"]
    assert "audio" not in summary and "mel_distance" not in summary  # per video: audio_table
    assert summary["stand_in_weights"] and summary["frame_count"] == FRAMES
    # The sentence's numbers, from the token files themselves.
    files = outputs(workdir, preset)
    visual, audio = load_tokens(files["visual"]), load_tokens(files["audio"])
    tensor = visual["latents" if preset.startswith("CV") else "indices"]
    latents, height, width = tensor.shape[1:4]
    spans, ranges = visual["frame_spans"], audio["code_ranges"]
    full = (spans[:, 1] - spans[:, 0]) == PRESETS[preset]["temporal"]
    block = int((ranges[:, 1] - ranges[:, 0])[full].min())
    visual_count, audio_count = latents * height * width, audio["codes"].numel()
    q = codec_of(preset).default_codebooks
    assert summary["description"] == (
        f"{NAME}: 0 min 1 sec; 29.97 fps; {WIDTH}x{HEIGHT} => {latents:,} latent frames of {width}x{height} "
        f"visual + {block}x{q} audio; {visual_count:,} visual tokens & {audio_count:,} audio tokens = "
        f"{(visual_count + audio_count) / 1e6:.2f} million tokens"
    )
    comparison = base / "reconstructed" / f"{NAME}_comparison.mp4"
    info = probe(comparison)
    assert (info.width, info.height) == (2 * WIDTH, HEIGHT) and count_frames(comparison) == FRAMES


def test_frame_metrics_score_the_decoders_own_frames_not_the_mp4(run):
    """frames.tsv holds each frame's PSNR between the source frame and the decoder's output,
    clamped and rounded to 8 bits, before any mp4 encode: recomputed here another way (the
    release-format decoder called directly, window by window, and PSNR from its definition).
    Scoring the reconstruction mp4 instead (H.264 at crf 12) gives other figures."""
    workdir, source, _ = run
    preset = "CV8x8x8"
    with open(workdir / "results" / preset / "metrics" / f"{NAME}_frames.tsv") as f:
        recorded = np.array([float(row["psnr"]) for row in csv.DictReader(f, delimiter="\t")])
    latents = load_tokens(outputs(workdir, preset)["visual"])["latents"].permute(0, 4, 1, 2, 3).float()
    decoder_file = (
        workdir
        / "resources"
        / "demo_weights"
        / make_preset("p", {"kind": "CV", "temporal": 8, "spatial": 8}).model
        / "decoder.jit"
    )
    decoder = torch.jit.load(str(decoder_file)).float().eval()
    decoded, start = [], 0
    for count, real_frames in zip(WINDOW_LATENT_FRAMES[8], (17, 17, 6), strict=True):
        with torch.no_grad():
            frames = decoder(latents[:, :, start : start + count])[0, :, :real_frames]
        frames = frames[:, :, :HEIGHT, :WIDTH]  # the padding cropped
        decoded.append(((frames.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 3, 0).numpy())
        start += count
    originals = np.concatenate(list(read_frame_windows(source, probe(source), 64))).astype(np.float64)

    def psnr_db(frames):
        return 10 * np.log10(255.0**2 / ((originals - frames) ** 2).mean(axis=(1, 2, 3)))

    decoded = np.concatenate(decoded)
    assert np.abs(recorded - psnr_db(decoded)).max() < 0.001  # the table keeps 4 decimals
    mp4 = outputs(workdir, preset)["video"]
    encoded = np.concatenate(list(read_frame_windows(mp4, probe(mp4), 64))).astype(np.float64)
    assert (encoded != decoded).mean() > 0.5  # the mp4 encode changed most pixels...
    assert np.abs(recorded - psnr_db(encoded)).min() > 0.01  # ...and every frame's score


def test_token_table_has_every_run_and_totals(run):
    workdir, _, _ = run
    with open(workdir / "results" / "report" / "token_table.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["preset"] for r in rows[:-1]] == list(PRESETS) and rows[-1]["video"] == "TOTAL"
    for column in ("visual_tokens", "audio_tokens", "total_tokens", "token_bytes"):
        assert int(rows[-1][column]) == sum(int(r[column]) for r in rows[:-1])
    for row in rows[:-1]:
        assert int(row["total_tokens"]) == int(row["visual_tokens"]) + int(row["audio_tokens"])


def test_the_audio_is_scored_once_per_video(run):
    workdir, _, _ = run
    with open(workdir / "results" / "report" / "audio_table.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    # Once per video and codec: DAC's 9 codebooks at 44.1 kHz, Mimi's 8 at 24 kHz.
    assert [(r["video"], r["codec"], r["codebooks"], r["sample_rate"], r["weights"]) for r in rows] == [
        (NAME, "dac", "9", "44100", "demo"), (NAME, "mimi", "8", "24000", "demo")]  # fmt: skip
    for row, preset in zip(rows, ("DV8x8x8", "DV4x8x8"), strict=True):
        codes = load_tokens(outputs(workdir, preset)["codes"])
        assert int(row["code_frames"]) == codes["codes"].shape[1]
        assert int(row["audio_tokens"]) == codes["codes"].numel()
        # Stand-ins: their reconstruction is poor but not unrelated to the source.
        assert float(row["mel_distance"]) > 0 and float(row["stft_distance"]) > 0
        assert row["stand_in_weights"] == "True"


def test_the_manifest_lists_every_run_with_paths_shapes_and_hashes(run):
    workdir, _, _ = run
    manifest = workdir / "results" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert [(r["video"], r["preset"]) for r in rows] == [(NAME, p) for p in PRESETS]
    for row in rows:
        audio_summary = json.loads(outputs(workdir, row["preset"])["audio_summary"].read_text())
        visual = load_tokens(manifest.parent / row["visual_tokens"])  # relative to the manifest
        audio = load_tokens(manifest.parent / row["audio_tokens"])
        assert row["visual_shapes"] == {k: list(v.shape) for k, v in visual.tensors.items()}
        assert row["audio_shapes"] == {k: list(v.shape) for k, v in audio.tensors.items()}
        assert row["encoder_sha256"] == visual.metadata["tokenizer"]["encoder"]["sha256"]
        assert row["audio_codec_sha256"] == audio.metadata["codec"]["sha256"]
        codec = codec_of(row["preset"])
        assert (row["audio_codec"], row["audio_codebooks"], row["audio_codebook_size"]) == (
            codec.name, codec.default_codebooks, codec.codebook_size)  # fmt: skip
        assert (row["audio_sample_rate"], row["audio_hop"]) == (codec.sample_rate, codec.hop)
        assert row["audio_token_count"] == audio["codes"].numel() and row["stand_in_weights"] is True
        assert row["mel_distance"] == float(audio_summary["mel_distance"])
        for part in ("visual_tokens", "audio_tokens"):  # what a data loader checks its files against
            path = manifest.parent / row[part]
            assert (row[f"{part}_bytes"], row[f"{part}_sha256"]) == (path.stat().st_size, sha256_of(path))
        assert row["frame_count"] == FRAMES and row["fps"] == "30000/1001"


def test_a_parameter_grid_plans_every_released_combination_and_only_those(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", 48, 32, 9, rate="25")
    (tmp_path / "videos.tsv").write_text(f"name\tpath\nc\t{clip}\n")
    grid = {"kind": ["DV"], "temporal": [4, 8], "spatial": [16], "window": [17]}
    overlay = {"videos": str(tmp_path / "videos.tsv"), "weights": "demo", "run": [], "grid": grid}
    proc = run_workflow(tmp_path / "w", overlay, "--dry-run", built_stand_ins=False)
    assert "left out 'DV4x16x16-w17'" in proc.stderr  # no released tokenizer has it
    jobs = planned_jobs(proc)
    assert jobs["visual_encode"] == jobs["report_preset_page"] == 1
    assert jobs["stand_in_weights"] == 2  # the visual model and DAC
    lines = (proc.stdout + proc.stderr).splitlines()
    planned = " ".join(line for line in lines if line.strip().startswith("output:"))
    assert "results/DV8x16x16-w17/tokens/c_visual_tokens.safetensors" in planned


@pytest.fixture(scope="module")
def report(run) -> Path:
    """The HTML report of the shared run, as `snakemake --report` makes it."""
    workdir, _, overlay = run
    run_workflow(workdir, overlay, "--report", "report.zip")
    return workdir / "report.zip"


def test_the_report_shows_videos_plots_and_tables_on_its_pages(run, report):
    workdir, _, overlay = run
    pages = workdir / "results" / "report"
    for preset in PRESETS:  # a page per preset, its video inline under a name of its own
        page = (pages / "presets" / preset / "index.html").read_text()
        name = f"{NAME}_{preset}_comparison.mp4"
        assert f'<video controls preload="metadata" src="{quote(name)}"></video>' in page
        assert filecmp.cmp(pages / "presets" / preset / name, workdir / "results" / preset / "reconstructed" /
                           f"{NAME}_comparison.mp4", shallow=False)  # fmt: skip
        assert f'<img src="{quote(NAME)}_psnr_per_frame.png"' in page
        assert (pages / "presets" / preset / f"{NAME}_psnr_per_frame.png").is_file()
    overview = (pages / "overview" / "index.html").read_text()
    assert overview.count("<table>") == 2 and '<img src="quality_vs_tokens.png"' in overview
    # Every video x preset a row of the token table (and the total), every video one of the audio's.
    assert overview.count("<tr>") == (1 + len(PRESETS) + 1) + (1 + 2)
    assert all(f"<td>{preset}</td>" in overview for preset in PRESETS)

    names = zipfile.ZipFile(report).namelist()
    assert sorted(Path(n).name for n in names if n.endswith("_comparison.mp4")) == sorted(
        f"{NAME}_{preset}_comparison.mp4" for preset in PRESETS
    )
    assert sum(n.endswith("/index.html") for n in names) == len(PRESETS) + 1 and "report/report.html" in names


# In the report's own page (Snakemake's app): a sidebar entry per category, a row per page with
# a button that shows the page in a frame.
CLICK_LINK = """(() => {
  const link = [...document.querySelectorAll("a")].find((a) => a.textContent.trim() === %s);
  if (link) link.click();
  return !!link; })()"""
SHOW_PAGE = """(() => {
  const cell = [...document.querySelectorAll("td")].find((td) => td.textContent.trim() === %s);
  if (cell) cell.parentElement.querySelector("a").click();
  return !!cell; })()"""
# What the frame shows once it holds the page whose heading starts with %s and its videos and
# images have loaded their headers (or failed): the heading, every video's decoded size (and error), every
# image's width, the number of table rows.
FRAME = """(() => {
  const frame = document.querySelector("iframe");
  const doc = frame && frame.contentDocument;
  const title = doc && doc.querySelector("h1");
  if (!title || !title.textContent.startsWith(%s)) return null;
  const videos = [...doc.querySelectorAll("video")];
  const images = [...doc.querySelectorAll("img")];
  if (videos.some((v) => !v.error && v.readyState < 1) || images.some((i) => !i.complete)) return null;
  return {title: title.textContent, rows: doc.querySelectorAll("tr").length,
          videos: videos.map((v) => [v.videoWidth, v.videoHeight, v.error && v.error.code]),
          images: images.map((i) => i.naturalWidth)}; })()"""


def test_the_report_shows_its_pages_in_a_browser(report, tmp_path):
    """Headless Chromium on the unpacked report: each preset's page plays its comparison video
    inline; the overview shows the tables and the plot. Screenshots land in tmp_path (the
    README's picture is one: docs/testing.md)."""
    chromium = browser.find_chromium()
    if chromium is None:
        pytest.skip("no Chromium (installed by this test only as root with apt)")
    with zipfile.ZipFile(report) as z:
        z.extractall(tmp_path)
    with browser.Browser(chromium, 1300, 900) as page:
        page.open(tmp_path / "report" / "report.html")
        assert page.evaluate(CLICK_LINK % json.dumps("Comparison videos"))
        for preset in PRESETS:
            assert page.wait_for(SHOW_PAGE % json.dumps(preset))
            shown = page.wait_for(FRAME % json.dumps(f"{preset}:"))
            assert shown["videos"] == [[2 * WIDTH, HEIGHT, None]], (preset, shown)  # decoded, H.264 4:2:0
            assert len(shown["images"]) == 1 and shown["images"][0] > 0
            page.screenshot(tmp_path / f"{preset}.png")
        page.open(tmp_path / "report" / "report.html")
        assert page.evaluate(CLICK_LINK % json.dumps("Fidelity"))
        assert page.wait_for(SHOW_PAGE % json.dumps("overview: tables and quality against token rate"))
        shown = page.wait_for(FRAME % json.dumps("Fidelity"))
        assert shown["title"] == "Fidelity of the tokens: overview" and shown["videos"] == []
        assert shown["rows"] == (1 + len(PRESETS) + 1) + (1 + 2) and shown["images"][0] > 0
        page.screenshot(tmp_path / "overview.png")


def test_a_second_run_has_nothing_to_do(run):
    workdir, _, overlay = run
    proc = run_workflow(workdir, overlay, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr and planned_jobs(proc) == {}, proc.stdout[-2000:]


@pytest.mark.parametrize("field, value", [("window", 33), ("engine", "eager")])
def test_changing_one_preset_reruns_only_its_jobs(run, field, value):
    workdir, _, overlay = run
    changed = {**overlay, "presets": {**PRESETS, "DV8x8x8": {**PRESETS["DV8x8x8"], field: value}}}
    proc = run_workflow(workdir, changed, "--dry-run")
    # The audio is coded once per video: no DAC job, only the light alignment step.
    per_preset = {"visual_encode", "visual_decode", "align_audio", "mux", "summarize", "compare_video"}
    across_presets = {
        "plot_frame_psnr",
        "token_table",
        "plot_quality",
        "manifest",
        "report_overview",
        "check_run",
        "all",
    }  # read every preset
    # Every preset's page shows the PSNR plots of all presets.
    assert planned_jobs(proc) == {rule: 1 for rule in per_preset | across_presets} | {
        "report_preset_page": len(PRESETS)
    }
    planned = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip().startswith("output:")]
    across_outputs = r"/report/|manifest.jsonl|run_complete.json"
    per_preset_outputs = [ln for ln in planned if not re.search(across_outputs, ln)]
    assert len(per_preset_outputs) == len(per_preset) and all("/DV8x8x8/" in ln for ln in per_preset_outputs)


def test_adding_a_video_adds_only_its_jobs(run, tmp_path):
    workdir, source, overlay = run
    sheet = tmp_path / "two.tsv"
    second = make_clip(tmp_path / "second.mp4", 64, 48, 9, rate="25", audio_channels=None)
    sheet.write_text(f"name\tpath\n{NAME}\t{source}\nsecond\t{second}\n", encoding="utf-8")
    jobs = planned_jobs(run_workflow(workdir, {**overlay, "videos": str(sheet)}, "--dry-run"))
    per_video_and_preset = {
        "visual_encode",
        "visual_decode",
        "align_audio",
        "mux",
        "summarize",
        "compare_video",
    }
    per_video_and_codec = {"extract_wav", "audio_encode", "audio_decode", "summarize_audio"}
    across = {"token_table", "audio_table", "plot_quality", "manifest", "report_overview", "check_run", "all"}
    assert jobs == {
        **{rule: len(PRESETS) for rule in per_video_and_preset | {"report_preset_page"}},
        **dict.fromkeys(per_video_and_codec, 2),  # DAC and Mimi (each its own rate)
        **dict.fromkeys({"plot_frame_psnr"} | across, 1),
    }


def test_another_codec_for_a_preset_remakes_its_audio_files_not_its_visual_tokens(run):
    """CV8x8x8 switched from DAC to Mimi: Mimi's codes of the video exist (other presets use
    them), so only the preset's audio token file and what reads it are made again."""
    workdir, _, overlay = run
    switched = {**overlay, "presets": {**PRESETS, "CV8x8x8": {**PRESETS["CV8x8x8"], "codec": "mimi"}}}
    jobs = planned_jobs(run_workflow(workdir, switched, "--dry-run"))
    assert not {"visual_encode", "visual_decode", "audio_encode", "audio_decode"} & set(jobs), jobs
    assert jobs["align_audio"] == jobs["mux"] == jobs["summarize"] == 1


def test_new_dac_weights_rerun_the_dac_audio_and_nothing_visual(run):
    """A rebuilt stand-in (a folder, as the rule makes it) reruns the audio of its codec only."""
    workdir, _, overlay = run
    weights = workdir / "resources" / "demo_weights" / "dac"
    written = weights.stat()
    os.utime(weights, ns=(written.st_atime_ns, time.time_ns()))
    try:
        jobs = planned_jobs(run_workflow(workdir, overlay, "--dry-run"))
    finally:
        os.utime(weights, ns=(written.st_atime_ns, written.st_mtime_ns))
    per_video = {"audio_encode", "audio_decode", "summarize_audio"}  # DAC's; not Mimi's
    per_preset = {"align_audio", "mux", "summarize"}  # summaries count the audio tokens
    across = {"audio_table", "token_table", "plot_quality", "manifest", "report_overview", "check_run", "all"}
    pages = {"report_preset_page"}  # the token table changed
    assert jobs == {
        **{rule: len(DAC_PRESETS) for rule in per_preset},
        **{rule: len(PRESETS) for rule in pages},
        **dict.fromkeys(per_video | across, 1),
    }


def test_audio_is_coded_once_per_video_and_codec_whatever_the_number_of_presets(tmp_path):
    """2 videos x 2 visual presets x 2 codecs (DAC, Mimi): one encode and one decode per video and
    codec, the wav extracted once per video and sample rate."""
    clips = [make_clip(tmp_path / f"c{i}.mp4", 48, 32, 9, rate="25") for i in range(2)]
    sheet = tmp_path / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"v{i}\t{c}\n" for i, c in enumerate(clips)))
    visual = {name: {**PRESETS[name], "codec": "dac"} for name in ("CV8x8x8", "DV8x8x8")}
    presets = {**visual, **{f"{name}-mimi": {**fields, "codec": "mimi"} for name, fields in visual.items()}}
    overlay = {"videos": str(sheet), "weights": "demo", "presets": presets, "run": list(presets)}
    jobs = planned_jobs(run_workflow(tmp_path / "w", overlay, "--dry-run"))
    for rule in ("extract_wav", "audio_encode", "audio_decode", "summarize_audio"):
        assert jobs[rule] == 2 * 2, rule
    assert jobs["visual_encode"] == jobs["align_audio"] == jobs["mux"] == 2 * 4
    # Codec settings of one rate sharing a wav, and presets with their own weights: test_run_plan.


# What the run plan refuses is tested without Snakemake (test_run_plan); here, that its refusal
# and the schema's reach the user before any job.
@pytest.mark.parametrize(
    "change, message",
    [
        ({"run": ["nope"]}, "ERROR config: `run` names presets that `presets` does not define: ['nope']"),
        ({"device": "gpu"}, "'gpu' does not match '^(auto|cpu|cuda(:[0-9]+)?)$'"),
        ({"batch_windows": 4}, "config: `batch_windows` is now `batch_megapixels`"),
        ({"dac_url": "file:///w.pth"}, "config: `dac_url` is now `codecs: {dac: {url: ...}}`"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_before_any_job(tmp_path, change, message):
    clip = make_clip(tmp_path / "c.mp4", 48, 32, 9, rate="25")
    (tmp_path / "videos.tsv").write_text(f"name\tpath\nc\t{clip}\n")
    overlay = {"videos": str(tmp_path / "videos.tsv"), "weights": "demo", "presets": PRESETS,
               "run": list(PRESETS)}  # fmt: skip
    proc = run_workflow(tmp_path / "w", {**overlay, **change}, "--dry-run", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


def test_recomputing_gives_byte_identical_token_files(run, tmp_path):
    # In a copy (times kept): forcing a job makes its dependants stale for the other tests.
    workdir, _, overlay = run
    workdir = Path(shutil.copytree(workdir, tmp_path / "copy", symlinks=True))
    files = outputs(workdir, "DV8x8x8")
    before = {key: files[key].read_bytes() for key in ("visual", "audio")}
    written = {key: files[key].stat().st_mtime_ns for key in before}
    targets = [str(files["visual"].relative_to(workdir)), str(files["audio"].relative_to(workdir))]
    # As many cores as the first run: a job's thread count decides its bytes (README, Determinism).
    run_workflow(workdir, overlay, *targets, "--forcerun", "visual_encode", "audio_encode", cores=2)
    assert all(files[key].stat().st_mtime_ns > written[key] for key in before)  # really rewritten
    assert files["codes"].stat().st_mtime_ns > written["audio"]  # DAC ran again, then the alignment
    assert {key: files[key].read_bytes() for key in before} == before
