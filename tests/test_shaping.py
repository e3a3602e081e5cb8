"""A preset's picture targets: which bucket, what is scaled, cropped or padded, which frames."""

import subprocess
from fractions import Fraction

import numpy as np
import pytest
from helpers import make_clip

from avtokens.media import ffmpeg_exe, probe, read_frame_windows
from avtokens.picture import plan_picture
from avtokens.shaping import Shaping, Timeline

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
    geometry = Shaping.from_config({"size": "1280x720"}).geometry(960, 720, Fraction(4, 3))
    assert (geometry.scaled, geometry.rect) == ((1280, 960), (0, 120, 1280, 720))
    assert geometry.filters == ["scale=1280:960:flags=lanczos,setsar=1", "crop=1280:720:0:120"]
    # A portrait 1080x1920 phone clip into 720x1280: the same aspect, only scaled.
    same = Shaping.from_config({"size": "720x1280"}).geometry(1080, 1920, Fraction(9, 16))
    assert (same.scaled, same.rect, same.filters) == (
        (720, 1280), (0, 0, 720, 1280), ["scale=720:1280:flags=lanczos,setsar=1"]
    )  # fmt: skip


def test_pad_fits_the_picture_inside_the_bucket_and_records_where():
    shaping = Shaping.from_config({"size": "1280x720", "fit": "pad"})
    geometry = shaping.geometry(640, 480, Fraction(4, 3))  # 960x720 in the middle, 160 black columns a side
    assert (geometry.scaled, geometry.rect) == ((960, 720), (160, 0, 960, 720))
    assert geometry.filters[1] == "pad=1280:720:160:0:color=black"
    assert geometry.as_metadata() == {"bucket": "1280x720", "fit": "pad", "scaled": "960x720",
                                      "rect": {"x": 160, "y": 0, "width": 960, "height": 720}}  # fmt: skip
    wide = shaping.geometry(1920, 800, Fraction(12, 5))  # 2.4:1: 1280x533, 93 rows above
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
