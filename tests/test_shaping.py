"""A preset's picture targets: which bucket, what is scaled, cropped or padded, which frames."""

import json
import math
import subprocess
from fractions import Fraction

import numpy as np
import pytest
import soundfile
from helpers import make_clip, planned_jobs, run_workflow

from avtokens import AvTokensError
from avtokens.data import AlignedClips, ClipBatchSampler
from avtokens.media import ffmpeg_exe, probe, read_frame_windows, run_ffmpeg
from avtokens.picture import plan_picture
from avtokens.shaping import Shaping, Timeline
from avtokens.tokenfile import TokenFileReader, read_metadata
from avtokens.visual import SourceFrames

BUCKETS = {"buckets": ["1280x720", "720x1280", "960x960"]}


@pytest.mark.parametrize(
    "aspect, bucket",
    [(Fraction(16, 9), (1280, 720)), (Fraction(4, 3), (1280, 720)), (Fraction(9, 16), (720, 1280)),
     (Fraction(1), (960, 960)), (Fraction(5, 4), (960, 960)), (Fraction(21, 9), (1280, 720))],
)  # fmt: skip
def test_each_video_goes_to_the_bucket_nearest_its_display_aspect_ratio(aspect, bucket):
    # 4:3 is 1.333: log-distance 0.288 to 16:9 and 0.288 to 1:1, a tie won by the first listed.
    assert Shaping.from_config(BUCKETS).bucket_for(aspect) == bucket


def test_crop_covers_the_bucket_and_cuts_the_middle_out():
    # 960x720 (4:3) into 1280x720: scaled to 1280x960, the middle 720 rows kept.
    geometry = Shaping.from_config({"size": "1280x720"}).geometry(Fraction(4, 3))
    assert (geometry.scaled, geometry.rect) == ((1280, 960), (0, 120, 1280, 720))
    assert geometry.filters == ["scale=1280:960:flags=lanczos,setsar=1", "crop=1280:720:0:120"]
    # A portrait 1080x1920 phone clip into 720x1280: the same aspect, only scaled.
    same = Shaping.from_config({"size": "720x1280"}).geometry(Fraction(9, 16))
    assert (same.scaled, same.rect, same.filters) == (
        (720, 1280), (0, 0, 720, 1280), ["scale=720:1280:flags=lanczos,setsar=1"]
    )  # fmt: skip


def test_pad_fits_the_picture_inside_the_bucket_and_records_where():
    shaping = Shaping.from_config({"size": "1280x720", "fit": "pad"})
    geometry = shaping.geometry(Fraction(4, 3))  # 960x720 in the middle, 160 black columns a side
    assert (geometry.scaled, geometry.rect) == ((960, 720), (160, 0, 960, 720))
    assert geometry.filters[1] == "pad=1280:720:160:0:color=black"
    assert geometry.as_metadata() == {"bucket": "1280x720", "fit": "pad", "scaled": "960x720",
                                      "rect": {"x": 160, "y": 0, "width": 960, "height": 720}}  # fmt: skip
    wide = shaping.geometry(Fraction(12, 5))  # 2.4:1: 1280x533, 93 rows above
    assert (wide.scaled, wide.rect) == ((1280, 533), (0, 93, 1280, 533))


def test_a_timeline_starts_at_the_first_tick_at_or_after_start_and_holds_max_seconds():
    shaping = Shaping.from_config({"fps": "30000/1001", "start": 0.7, "max_seconds": 2})
    timeline = shaping.timeline(Fraction(25))
    # 0.7 s x 29.97 = 20.98: tick 21 (0.7007 s); 2 s hold 59.94 frames: 60 start before the end.
    assert timeline == Timeline(Fraction(30000, 1001), 21, 60)
    assert timeline.start_seconds == Fraction(21 * 1001, 30000)
    assert timeline.filters == ["fps=fps=30000/1001:start_time=0.7007:round=near", "setpts=PTS-21"]
    assert timeline.output_args == ["-frames:v", "60"]
    assert Timeline.from_metadata(timeline.as_metadata()) == timeline
    # No fps: the source's rate; nothing asked: the timeline as it is.
    assert Shaping.from_config({"start": 1}).timeline(Fraction(24000, 1001)).rate == Fraction(24000, 1001)
    assert Shaping.from_config({}).timeline(Fraction(25)) is None


def test_a_job_gets_back_the_shaping_its_params_carry():
    shaping = Shaping.from_config({**BUCKETS, "fps": 24, "fit": "pad", "start": "1.5", "max_seconds": 60})
    params = shaping.as_params()
    assert params == {"fps": "24", **BUCKETS, "fit": "pad", "start": "3/2", "max_seconds": "60"}
    assert Shaping.from_params(params) == shaping
    assert Shaping.from_config({}).as_params() == {} and not Shaping.from_config({}).changes_anything


@pytest.mark.parametrize(
    "fields, message",
    [({"fps": 0}, "fps: a frame rate must be above 0 and at most 240, not 0"),
     ({"fps": 2997}, "at most 240, not 2997"),
     ({"fps": "fast"}, "fps: a frame rate is a number or a fraction such as 30000/1001, not 'fast'"),
     ({"size": "1280*720"}, "size: a size is WIDTHxHEIGHT, such as 1280x720, not '1280*720'"),
     ({"size": "1280x720", "buckets": ["720x1280"]}, "give size or buckets, not both"),
     ({"buckets": []}, "buckets: give at least one size"),
     ({"buckets": ["1280x720", "1280x720"]}, "lists a size twice"),
     ({"size": "1280x720", "fit": "stretch"}, "fit must be crop or pad, not 'stretch'"),
     ({"start": -1}, "start is a number of seconds 0 or more, not -1"),
     ({"max_seconds": 0}, "max_seconds is a number of seconds above 0, not 0")],
)  # fmt: skip
def test_bad_targets_are_refused_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        Shaping.from_config(fields)


def test_bucket_sides_must_be_multiples_of_the_spatial_factor():
    Shaping.from_config({"size": "1280x720"}).check_sides(16, "Cosmos")
    with pytest.raises(ValueError, match="bucket 1280x712: Cosmos takes sides that are multiples of 16"):
        Shaping.from_config(BUCKETS | {"buckets": ["1280x712"]}).check_sides(16, "Cosmos")


@pytest.mark.parametrize("start", [0, 0.3])
def test_the_frames_are_those_ffmpegs_own_fps_filter_picks_scaled_and_cropped(tmp_path, start):
    """Checked against ffmpeg run here on its own: its fps filter over the whole clip, the
    first `first_tick` of its frames dropped, then the same scale and crop."""
    source = make_clip(tmp_path / "a.mp4", 96, 72, 40, rate="25")  # 4:3, 1.6 s
    shaping = Shaping.from_config({"fps": "30000/1001", "size": "64x32", "start": start})
    picture = plan_picture(probe(source), shaping=shaping)
    ours = np.concatenate(list(read_frame_windows(source, picture, 17)))
    geometry, timeline = picture.geometry, picture.timeline
    assert geometry.filters == ["scale=64:48:flags=lanczos,setsar=1", "crop=64:32:0:8"]
    assert timeline.first_tick == {0: 0, 0.3: 9}[start]  # 0.3 s x 29.97 = 8.99: tick 9 is the first after
    chain = (f"fps=fps=30000/1001:round=near,trim=start_frame={timeline.first_tick},"
             "scale=64:48:flags=lanczos,crop=64:32:0:8")  # fmt: skip
    command = [ffmpeg_exe(), "-v", "error", "-i", str(source), "-vf", chain, "-fps_mode", "passthrough",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    theirs = np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, np.uint8)
    assert ours.shape == (48 - timeline.first_tick, 32, 64, 3)  # 1.6 s at 29.97: 47.95, so 48 ticks
    assert np.array_equal(ours, theirs.reshape(ours.shape))


# Four sources of three sizes and four rates under one preset with a frame rate, buckets and a
# start: 25 fps 4:3 with a beep, 30 fps 4:3, 23.976 fps anamorphic (128x72 stored, pixels 4:3
# wide: 2.37:1 shown), a portrait phone clip; about 1.2 s each. In shard mode: fewer jobs.
BEEP = (0.5, 0.55)  # seconds after the first frame
SOURCES = {"tom": (96, 72, "25", 30, "1"), "sitcom": (64, 48, "30", 36, "1"),
           "film": (128, 72, "24000/1001", 29, "4/3"), "phone": (36, 64, "30", 36, "1")}  # fmt: skip
TRAIN = {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "fps": 24,
         "buckets": ["64x48", "48x64", "64x32"], "start": 0.25}  # fmt: skip
# By hand: the bucket nearest each aspect (4:3 -> 64x48; 2.37:1 -> 64x32, 2:1; 9:16 -> 48x64),
# and the frames from the first 24 fps tick at or after 0.25 s (tick 6) to the source's end,
# which ffmpeg's fps filter rounds to the nearest tick (1.2 s: tick 29; 29/23.976 s = 1.2095 s:
# tick 29; 1.2 s: 29).
BUCKET_OF = {"tom": (64, 48), "sitcom": (64, 48), "film": (64, 32), "phone": (48, 64)}
FRAMES = {"tom": 29 - 6, "sitcom": 29 - 6, "film": 29 - 6, "phone": 29 - 6}
# 23 frames in windows of 17 (latent frames of 1 + 8 + 8 frames) and 6 (1 + 5).
SPANS = [(0, 1), (1, 9), (9, 17), (17, 18), (18, 23)]


def make_source(path, width, height, rate, frames, sample_aspect_ratio, beep=None):
    audio = (
        "sin(2*PI*330*t)/4" if beep is None else f"if(between(t,{beep[0]},{beep[1]}),sin(2*PI*1000*t)/2,0)"
    )
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={rate}",
                "-f", "lavfi", "-i", f"aevalsrc='{audio}':s=48000", "-frames:v", str(frames),
                "-vf", f"setsar={sample_aspect_ratio}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-shortest", str(path)], "making a test clip", path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def shaped_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shaped")
    rows = "".join(
        f"{name}\t{make_source(folder / f'{name}.mp4', *spec, beep=BEEP if name == 'tom' else None)}\n"
        for name, spec in SOURCES.items()
    )
    (folder / "videos.tsv").write_text("name\tpath\n" + rows)
    overlay = {"videos": str(folder / "videos.tsv"), "weights": "demo", "presets": {"train": TRAIN},
               "run": ["train"], "shard_size": 4}  # fmt: skip
    run_workflow(folder / "w", overlay)
    return folder / "w" / "results", overlay


def test_every_video_gets_its_buckets_shape_and_the_same_latent_frames_a_second(shaped_run):
    results = shaped_run[0]
    for name, (width, height) in BUCKET_OF.items():
        meta = read_metadata(results / "train" / "tokens" / f"{name}_visual_tokens.safetensors")
        assert (meta["latent"]["width"], meta["latent"]["height"]) == (width // 16, height // 16), name
        assert meta["picture"]["geometry"]["bucket"] == f"{width}x{height}"
        assert (meta["video"]["fps"], meta["video"]["frame_count"]) == ("24/1", FRAMES[name]), name
        assert meta["picture"]["timeline"]["first_tick"] == 6  # 0.25 s x 24
    rows = {
        row["video"]: row for row in map(json.loads, (results / "manifest.jsonl").read_text().splitlines())
    }
    assert {name: (row["bucket"], row["fps"]) for name, row in rows.items()} == {
        name: (f"{w}x{h}", "24/1") for name, (w, h) in BUCKET_OF.items()}  # fmt: skip


def test_each_latent_frame_carries_the_codes_of_its_stretch_of_the_new_timeline(shaped_run):
    """Against times computed here: latent frame [a, b) of the 24 fps timeline that starts at
    tick 6 covers (6 + a) / 24 to (6 + b) / 24 s; code frame k (hop 512 at 44.1 kHz) starts at
    k * 512 / 44100 s and belongs to the latent frame its start falls in. The beep at 0.5 s is
    frame 6 of the timeline ((6 + 6) / 24 = 0.5 s), in latent frame 1 (frames 1 to 8)."""
    results, code_frame = shaped_run[0], Fraction(512, 44100)
    for name, (_, _, rate, frames, _) in SOURCES.items():
        with TokenFileReader(results / "train" / "tokens" / f"{name}_audio_tokens.safetensors") as audio:
            ranges = audio.array("code_ranges").tolist()
        # The codes cover the source (its frames at its rate); the last frame of the new timeline
        # may end after it (1.2083 s, after 1.2 s), and its codes end with the source's.
        coded = math.ceil(frames / Fraction(rate) / code_frame)
        by_hand = [[min(coded, math.ceil(Fraction(6 + a, 24) / code_frame)),
                    min(coded, math.ceil(Fraction(6 + b, 24) / code_frame))] for a, b in SPANS]  # fmt: skip
        assert ranges == by_hand, name
    wav, rate = soundfile.read(results / "audio" / "44100hz" / "tom.wav")
    energy = [float(np.square(wav[start * 512 : end * 512]).sum()) for start, end in by_hand]
    assert int(np.argmax(energy)) == 1 and energy[1] > 0.99 * sum(energy)


def test_the_loaders_batches_hold_one_bucket_each(shaped_run):
    """Three buckets' clips of 2 latent frames (five a video: 1 + 2 + 2 windows' latents),
    batches of 2 over three epochs: one bucket a batch, every clip once an epoch."""
    clips = AlignedClips(shaped_run[0] / "manifest.jsonl", clip_length=2, preset="train")
    assert sorted(video.bucket for video in clips.videos) == ["48x64", "64x32", "64x48", "64x48"]
    # A clip's times are the source's: the second clip's latent frames start at frames 9 and 17
    # of the timeline, ticks 15 and 23 of 24 fps.
    assert clips[1]["time"].tolist() == [15 / 24, 23 / 24]
    batches = ClipBatchSampler(clips, batch_size=2, seed=3, rank=0, world_size=1)
    for epoch in range(3):
        batches.set_epoch(epoch)
        order = list(batches)
        assert sorted(i for batch in order for i in batch) == list(range(len(clips)))
        for batch in order:
            assert len({clips.videos[clips.clips[i][0]].bucket for i in batch}) == 1, batch
            assert len({clips.clip_shape(i) for i in batch}) == 1


def test_a_changed_target_reruns_the_presets_visual_jobs_and_codes_no_audio_again(shaped_run):
    results, overlay = shaped_run
    changed = {**overlay, "presets": {"train": {**TRAIN, "fps": 30}}}
    jobs = planned_jobs(run_workflow(results.parent, changed, "--dry-run"))
    assert jobs["shard_visual_encode"] == 1 and jobs["shard_align_audio"] == 1
    assert not {"shard_extract_wav", "shard_audio_encode", "shard_audio_decode"} & set(jobs)


def test_a_start_past_the_end_fails_that_video_in_one_line(tmp_path):
    source = make_clip(tmp_path / "short.mp4", 48, 32, 10, rate="25")  # 0.4 s
    with pytest.raises(AvTokensError) as failed:
        SourceFrames(source, {}, 17, 64, Shaping.from_config({"start": 5}))
    said = f"{source}: its part starts at 5.000 s (the preset's start), past the end of its 0.400 s of video"
    assert str(failed.value) == said
