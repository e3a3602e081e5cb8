"""The whole workflow, run with snakemake as a user runs it, on clips made with ffmpeg."""

from fractions import Fraction

import pytest
import torch
from helpers import count_frames, make_clip, planned_jobs, run_workflow

from avtokens import load_tokens
from avtokens.fsq import CODEBOOK_SIZE
from avtokens.media import probe
from avtokens.windows import plan_windows

PRESETS = {
    f"{kind}{t}x{s}x{s}": {"kind": kind, "temporal": t, "spatial": s, "window": 17}
    for kind in ("CV", "DV")
    for t, s in ((4, 8), (8, 8), (8, 16))
}
# 100x58: not a multiple of 8 or 16; 40 frames: not 1 + k*4 nor 1 + k*8.
WIDTH, HEIGHT, FRAMES = 100, 58, 40
NAME = "clip één"  # spaces and unicode in the name...


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The workflow over all six presets, on a clip whose path has shell metacharacters."""
    workdir = tmp_path_factory.mktemp("workflow")
    source = make_clip(workdir / "in $dir; 'q' & (x)" / "my clip.mp4", WIDTH, HEIGHT, FRAMES)
    sheet = workdir / "videos.tsv"
    sheet.write_text(f"name\tpath\n{NAME}\t{source}\n", encoding="utf-8")
    overlay = {"videos": str(sheet), "weights": "demo", "presets": PRESETS, "run": list(PRESETS)}
    run_workflow(workdir, overlay)
    return workdir, source, overlay


def outputs(workdir, preset):
    base = workdir / "results" / preset
    return {
        "visual": base / "tokens" / f"{NAME}_visual_tokens.safetensors",
        "audio": base / "tokens" / f"{NAME}_audio_tokens.safetensors",
        "video": base / "reconstructed" / f"{NAME}_visual.mp4",
        "wav": base / "reconstructed" / f"{NAME}_audio.wav",
        "combined": base / "reconstructed" / f"{NAME}_combined.mp4",
    }


@pytest.mark.parametrize("preset", PRESETS)
def test_visual_tokens_follow_the_frame_count_and_padding_rules(run, preset):
    workdir, source, _ = run
    fields = PRESETS[preset]
    t, s = fields["temporal"], fields["spatial"]
    tokens = load_tokens(outputs(workdir, preset)["visual"])
    windows = plan_windows(FRAMES, 17, t)
    latent_frames = sum(w.latent_frames(t) for w in windows)
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


@pytest.mark.parametrize("preset", PRESETS)
def test_audio_codes_tile_the_latent_frames_exactly(run, preset):
    workdir, _, _ = run
    visual = load_tokens(outputs(workdir, preset)["visual"])
    audio = load_tokens(outputs(workdir, preset)["audio"])
    codes, ranges = audio["codes"], audio["code_ranges"]
    assert codes.shape[0] == 1 and codes.shape[2] == 9 and codes.dtype == torch.uint16
    assert int(codes.to(torch.int64).max()) < 1024
    assert ranges.shape == (visual["frame_spans"].shape[0], 2)
    assert ranges[0, 0] == 0 and ranges[-1, 1] == codes.shape[1]
    assert torch.equal(ranges[1:, 0], ranges[:-1, 1])  # each code frame once, in order
    duration = FRAMES / Fraction(30000, 1001)
    assert 0 <= codes.shape[1] * 512 / 44100 - duration < 512 / 44100
    meta = audio.metadata["audio"]
    assert meta["source_channels"] == 2 and meta["source_rate"] == 48000 and meta["has_audio"]


@pytest.mark.parametrize("preset", PRESETS)
def test_reconstruction_keeps_size_rate_and_length(run, preset):
    workdir, source, _ = run
    out = outputs(workdir, preset)
    src, video, combined = probe(source), probe(out["video"]), probe(out["combined"])
    for rec in (video, combined):
        assert (rec.width, rec.height, rec.fps) == (src.width, src.height, src.fps)
    assert count_frames(out["video"]) == count_frames(out["combined"]) == FRAMES
    assert combined.has_audio and combined.audio_rate == 44100 and not video.has_audio


def test_a_second_run_has_nothing_to_do(run):
    workdir, _, overlay = run
    proc = run_workflow(workdir, overlay, "--dry-run")
    assert planned_jobs(proc) == {}, proc.stdout[-2000:]


def test_changing_one_preset_reruns_only_its_jobs(run):
    workdir, _, overlay = run
    changed = {**overlay, "presets": {**PRESETS, "DV8x8x8": {**PRESETS["DV8x8x8"], "window": 33}}}
    jobs = planned_jobs(run_workflow(workdir, changed, "--dry-run"))
    assert jobs == {"visual_encode": 1, "visual_decode": 1, "audio_encode": 1,
                    "audio_decode": 1, "mux": 1, "all": 1}  # fmt: skip
    proc = run_workflow(workdir, changed, "--dry-run")
    planned = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip().startswith("output:")]
    assert len(planned) == 5 and all("/DV8x8x8/" in ln for ln in planned)


def test_adding_a_video_adds_only_its_jobs(run, tmp_path):
    workdir, source, overlay = run
    sheet = tmp_path / "two.tsv"
    second = make_clip(tmp_path / "second.mp4", 64, 48, 9, rate="25", audio_channels=None)
    sheet.write_text(f"name\tpath\n{NAME}\t{source}\nsecond\t{second}\n", encoding="utf-8")
    jobs = planned_jobs(run_workflow(workdir, {**overlay, "videos": str(sheet)}, "--dry-run"))
    per_video = {"visual_encode", "visual_decode", "audio_encode", "audio_decode", "mux"}
    assert jobs == {**{rule: len(PRESETS) for rule in per_video}, "extract_wav": 1, "all": 1}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"presets": {"bad": {"kind": "CV", "temporal": 4, "spatial": 16, "window": 17}}, "run": ["bad"]},
         "temporal 4 exists only with spatial 8"),
        ({"run": ["nope"]}, "`run` names presets that `presets` does not define: ['nope']"),
        ({"device": "gpu"}, "device"),
    ],
)  # fmt: skip
def test_bad_config_is_refused_before_any_job(run, tmp_path, change, message):
    workdir, _, overlay = run
    proc = run_workflow(tmp_path / "w", {**overlay, **change}, "--dry-run", check=False)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr


def test_recomputing_gives_byte_identical_token_files(run):
    # Last in this module: forcing a job makes its dependants stale for later dry runs.
    workdir, _, overlay = run
    files = outputs(workdir, "DV8x8x8")
    before = {key: files[key].read_bytes() for key in ("visual", "audio")}
    written = {key: files[key].stat().st_mtime_ns for key in before}
    targets = [str(files["visual"].relative_to(workdir)), str(files["audio"].relative_to(workdir))]
    run_workflow(workdir, overlay, *targets, "--forcerun", "visual_encode", "audio_encode")
    assert all(files[key].stat().st_mtime_ns > written[key] for key in before)  # really rewritten
    assert {key: files[key].read_bytes() for key in before} == before
