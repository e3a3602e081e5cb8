"""Bad input files: one clear line each, the other videos finish, nothing half-written."""

from helpers import make_clip, run_workflow

from avtokens.media import run_ffmpeg


def test_broken_inputs_fail_clearly_while_the_good_video_finishes(tmp_path):
    good = make_clip(tmp_path / "good.mp4", 48, 32, 9, rate="25")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is not a video\n" * 50)
    whole = make_clip(tmp_path / "whole.mp4", 64, 48, 50, rate="25")
    truncated = tmp_path / "truncated.mp4"  # the index (moov) sits at the end: cut off
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    audio_only = tmp_path / "audio_only.mp4"
    run_ffmpeg(
        ["-y", "-f", "lavfi", "-i", "sine=r=16000:d=1", "-c:a", "aac", str(audio_only)], "making", audio_only
    )
    bad = {"empty": empty, "text": text, "truncated": truncated, "audio_only": audio_only}
    sheet = tmp_path / "videos.tsv"
    sheet.write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in {"good": good, **bad}.items()))
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
        "run": ["p"],
    }
    proc = run_workflow(tmp_path / "w", overlay, check=False)  # the profile keeps going
    assert proc.returncode != 0
    text_out = proc.stdout + proc.stderr
    results = tmp_path / "w" / "results"
    assert (results / "p" / "reconstructed" / "good_combined.mp4").is_file()
    reasons = {"empty": "file is empty", "text": "not a readable video", "truncated": "not a readable video",
               "audio_only": "no video stream"}  # fmt: skip
    for name, path in bad.items():
        assert f"ERROR {path}: " in text_out and reasons[name] in text_out, name
        left = [p for p in results.rglob(f"{name}*") if p.suffix != ".log"]
        assert left == [], left  # no output that a later run could take for finished
    assert not [p for p in results.rglob("*partial*")]
