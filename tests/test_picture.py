"""Sources as people have them: non-square pixels, interlacing, HDR, each made with ffmpeg."""

import json
from fractions import Fraction

import numpy as np
import pytest
from helpers import count_frames, run_workflow

from avtokens import AvTokensError, load_tokens
from avtokens.compare import write_comparison
from avtokens.media import probe, read_frame_windows, run_ffmpeg
from avtokens.picture import plan_picture
from avtokens.presets import make_preset
from avtokens.shaping import Shaping
from avtokens.visual import decode_token_file, encode_video_file

H264 = ("-c:v", "libx264", "-pix_fmt", "yuv420p")
INTERLACED_H264 = ("-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "tff=1", "-pix_fmt", "yuv420p")


def make(path, filters: str, size="720x480", frames=9, codec=H264):
    source = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", str(frames)]
    run_ffmpeg(
        ["-y", *source, *(["-vf", filters] if filters else []), *codec, str(path)], "making a clip", path
    )
    return path


def sdr_rendition(size="320x240", frames=3):
    raw = run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", str(frames),
                      "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], "rendering", "testsrc2")  # fmt: skip
    width, height = map(int, size.split("x"))
    return np.frombuffer(raw, np.uint8).reshape(frames, height, width, 3)


def frames_seen(path, **settings):
    info = probe(path)
    picture = plan_picture(info, **settings)
    return np.concatenate(list(read_frame_windows(path, picture, 64))), picture


def display_aspect(path) -> Fraction:
    info = probe(path)
    return info.width * info.sample_aspect_ratio / info.height


def test_the_probe_reads_pixel_aspect_field_order_and_transfer(tmp_path):
    anamorphic = probe(make(tmp_path / "a.mp4", "setsar=8/9"))
    assert (anamorphic.width, anamorphic.height, anamorphic.sample_aspect_ratio) == (720, 480, Fraction(8, 9))
    interlaced = probe(make(tmp_path / "i.mp4", "setfield=tff", codec=INTERLACED_H264))
    assert interlaced.field_order == "top first" and anamorphic.field_order == "progressive"
    filters, codec = hdr_encoding("smpte2084")
    pq = probe(make(tmp_path / "pq.mp4", filters, size="320x240", codec=codec))
    assert (pq.transfer, pq.primaries) == ("smpte2084", "bt2020")
    assert anamorphic.as_metadata()["sample_aspect_ratio"] == "8:9"


@pytest.mark.parametrize(
    "size, sar, square",
    [((720, 480), Fraction(8, 9), (640, 480)),  # NTSC DVD 4:3
     ((704, 480), Fraction(10, 11), (640, 480)),  # the ITU-R 601 4:3 ratio
     ((1440, 1080), Fraction(4, 3), (1920, 1080)),  # HDV, 16:9
     ((720, 576), Fraction(64, 45), (1024, 576))],  # PAL DVD 16:9
)  # fmt: skip
def test_square_pixels_keep_the_height_and_resample_the_width(tmp_path, size, sar, square):
    info = probe(
        make(tmp_path / "c.mp4", f"setsar={sar.numerator}/{sar.denominator}", size="x".join(map(str, size)))
    )
    picture = plan_picture(info)
    assert (picture.width, picture.height) == square and picture.sample_aspect_ratio == 1
    assert picture.display_aspect_ratio == Fraction(*square)
    assert "scale=" in picture.filters and "setsar=1" in picture.filters
    converted = picture.converted
    assert (converted.stored_width, converted.stored_height) == square and converted.filters == ""
    stored = plan_picture(info, pixels="stored")
    assert (stored.width, stored.height, stored.sample_aspect_ratio) == (*size, sar) and stored.filters == ""


@pytest.mark.parametrize("pixels, seen", [("square", (640, 480)), ("stored", (720, 480))])
def test_an_anamorphic_source_reconstructs_at_its_display_aspect_either_way(
    tmp_path, demo_weights, pixels, seen
):
    source = make(tmp_path / "dvd.mp4", "setsar=8/9", frames=12)
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 9, "weights": "demo"})
    model = demo_weights / preset.model
    tokens, video, metrics, comparison = (tmp_path / n for n in ("t.safetensors", "v.mp4", "f.tsv", "c.mp4"))
    encode_video_file(source, tokens, preset, model, "cpu", 2, "dvd",
                      picture={"pixels": pixels, "deinterlace": True})  # fmt: skip
    meta = load_tokens(tokens).metadata
    assert (meta["picture"]["width"], meta["picture"]["height"]) == seen and meta["picture"][
        "pixels"
    ] == pixels
    assert meta["picture"]["display_aspect_ratio"] == "4:3" and meta["video"]["sample_aspect_ratio"] == "8:9"
    assert (meta["latent"]["width"], meta["latent"]["height"]) == (-(-seen[0] // 16), 30)
    decode_token_file(tokens, video, preset, model, "cpu", 2, 18, "ultrafast", source, metrics)
    write_comparison(source, video, metrics, tokens, comparison, "p", 18, "ultrafast")
    assert (probe(video).width, probe(video).height) == seen and count_frames(video) == 12
    assert display_aspect(video) == Fraction(4, 3) and display_aspect(comparison) == Fraction(8, 3)
    if pixels == "square":  # the source's stored 720x480 frames are no reconstruction of 640x480 ones
        with pytest.raises(AvTokensError, match=r"dvd.mp4: its frames are not 640x480"):
            write_comparison(source, source, metrics, tokens, comparison, "p", 18, "ultrafast")


@pytest.mark.workflow
def test_the_workflow_describes_an_anamorphic_source_at_the_size_the_tokenizer_saw(tmp_path):
    source = make(tmp_path / "dvd.mp4", "setsar=8/9")
    (tmp_path / "videos.tsv").write_text(f"name\tpath\ndvd\t{source}\n")
    overlay = {"videos": str(tmp_path / "videos.tsv"), "weights": "demo", "run": ["p"],
               "presets": {"p": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 9}}}  # fmt: skip
    results = tmp_path / "w" / "results"
    run_workflow(
        tmp_path / "w",
        overlay,
        "results/p/metrics/dvd_summary.json",
        "results/p/reconstructed/dvd_combined.mp4",
    )
    summary = json.loads((results / "p" / "metrics" / "dvd_summary.json").read_text())
    assert (summary["width"], summary["height"]) == (640, 480) and " 640x480 => " in summary["description"]
    assert display_aspect(results / "p" / "reconstructed" / "dvd_combined.mp4") == Fraction(4, 3)


def combing(frames: np.ndarray) -> float:
    """How much neighbouring lines (one from each field) differ beyond lines two apart."""
    x = frames.astype(float).mean(-1)
    return float(np.abs(x[:, 1:-1] - (x[:, :-2] + x[:, 2:]) / 2).mean())


def test_interlaced_sources_are_deinterlaced_frame_for_frame(tmp_path):
    # Two moments per frame, one in each field, flagged top field first: combing on motion.
    source = make(
        tmp_path / "i.mp4", "tinterlace=mode=interleave_top,setfield=tff", frames=40, codec=INTERLACED_H264
    )
    frames, picture = frames_seen(source)
    kept, untouched = frames_seen(source, deinterlace=False)
    assert (
        picture.deinterlaced == "top first" and "bwdif" in picture.filters and untouched.deinterlaced is None
    )
    assert len(frames) == len(kept) == count_frames(source) == 40
    assert combing(frames) < 0.6 * combing(kept)


def hdr_encoding(transfer: str) -> tuple[str, tuple]:
    """The SDR test pattern turned into 10-bit BT.2020 HDR (SDR white at 203 cd/m2, BT.2408)."""
    filters = (f"zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t={transfer}:m=bt2020nc:p=bt2020:r=tv:npl=203,"
               "format=yuv420p10le")  # fmt: skip
    codec = ("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params",
             f"crf=4:colorprim=bt2020:transfer={transfer}:colormatrix=bt2020nc:log-level=error")  # fmt: skip
    return filters, codec


def brightness_and_saturation(frames: np.ndarray) -> tuple[float, float]:
    x = frames.astype(float)
    return x.mean(), (x.max(-1) - x.min(-1)).mean()


@pytest.mark.parametrize("transfer, name", [("smpte2084", "PQ"), ("arib-std-b67", "HLG")])
def test_hdr_is_tone_mapped_close_to_its_sdr_rendition(tmp_path, transfer, name):
    filters, codec = hdr_encoding(transfer)
    source = make(tmp_path / "hdr.mp4", filters, size="320x240", frames=3, codec=codec)
    frames, picture = frames_seen(source)
    assert picture.tone_mapped == name and "tonemap" in picture.filters
    reference = brightness_and_saturation(sdr_rendition())
    tone_mapped = brightness_and_saturation(frames)
    # Within 15% in brightness and 25% in saturation of the SDR original ...
    assert abs(tone_mapped[0] / reference[0] - 1) < 0.15 and abs(tone_mapped[1] / reference[1] - 1) < 0.25
    # ... where the same frames converted without tone mapping are washed out.
    info = probe(source)
    plain = np.concatenate(list(read_frame_windows(source, info, 64)))
    assert brightness_and_saturation(plain)[1] < 0.5 * reference[1]


def test_tone_mapped_frames_are_the_same_at_any_thread_count(tmp_path):
    """zscale cut into slices for 4 threads or more gives other frames (picture.TONE_MAP)."""
    filters, codec = hdr_encoding("smpte2084")
    source = make(tmp_path / "hdr.mp4", filters, size="480x320", frames=2, codec=codec)
    picture = plan_picture(probe(source))
    assert picture.tone_mapped == "PQ"
    one, four = (np.concatenate(list(read_frame_windows(source, picture, 2, threads=n))) for n in (1, 4))
    assert np.array_equal(one, four)


def test_an_odd_sized_comparison_is_4_2_0_so_that_browsers_play_it(tmp_path, demo_weights):
    """4:4:4 H.264 (what an odd size would need) plays in no browser: the report's videos get
    an even height, a black bottom row added, and the frames above it unchanged."""
    import av

    yuv444 = ("-c:v", "libx264", "-pix_fmt", "yuv444p")
    source = make(tmp_path / "odd.mp4", "scale=34:21,setsar=1", size="64x48", codec=yuv444)
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 9, "weights": "demo"})
    model = demo_weights / preset.model
    tokens, video, metrics, comparison = (tmp_path / n for n in ("t.safetensors", "v.mp4", "f.tsv", "c.mp4"))
    encode_video_file(source, tokens, preset, model, "cpu", 2, "odd",
                      picture={"pixels": "square", "deinterlace": True})  # fmt: skip
    decode_token_file(tokens, video, preset, model, "cpu", 2, 18, "ultrafast", source, metrics)
    write_comparison(source, video, metrics, tokens, comparison, "p", 0, "ultrafast")
    with av.open(str(comparison)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (68, 22)
        assert stream.codec_context.pix_fmt == "yuv420p" and stream.frames == 9
        luma = next(container.decode(stream)).to_ndarray(format="yuv420p")[:22]  # Y rows, then U and V
    assert luma[21].max() <= 20  # the added row: black (16 in video range)
    assert luma[:21].mean() > 40  # the picture itself above it


def test_interlaced_anamorphic_and_hdr_sources_go_to_their_bucket_and_rate(tmp_path):
    """The targets after what makes the frames the tokenizer's kind: deinterlaced at the stream's
    own rate, then the frame rate changed, tone-mapped, and scaled to the bucket from the stored
    pixels at the display aspect ratio (720x480 at 32:27 pixels: 16:9, in 64x32 padded)."""
    shaping = Shaping.from_config({"fps": 24, "buckets": ["64x48", "64x32"], "fit": "pad"})
    interlaced = make(tmp_path / "i.mp4", "setsar=32/27,setfield=tff", frames=12, codec=INTERLACED_H264)
    frames, picture = frames_seen(interlaced, shaping=shaping)
    chain = picture.filters.split(",")
    order = [chain.index(step) for step in ("bwdif=mode=send_frame:parity=auto:deint=all",
                                            "fps=fps=24:round=near", "scale=57:32:flags=lanczos",
                                            "pad=64:32:3:0:color=black")]  # fmt: skip
    assert order == sorted(order) and picture.deinterlaced == "top first"
    assert frames.shape == (12, 32, 64, 3)  # 0.48 s at 24 fps: 11.5, which the fps filter rounds to 12
    assert not frames[:, :, :3].any() and frames[:, :, 3:61].any()  # black bars left and right
    filters, codec = hdr_encoding("smpte2084")
    hdr = make(tmp_path / "pq.mp4", f"setsar=32/27,{filters}", frames=12, codec=codec)
    frames, picture = frames_seen(hdr, shaping=shaping)
    chain = picture.filters.split(",")
    order = [chain.index(step) for step in ("fps=fps=24:round=near", "tonemap=tonemap=mobius:desat=0",
                                            "scale=57:32:flags=lanczos")]  # fmt: skip
    assert order == sorted(order) and picture.tone_mapped == "PQ" and frames.shape == (12, 32, 64, 3)
