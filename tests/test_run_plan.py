"""The run plan from a config and a sheet, without Snakemake: presets and grids, each preset's
visual and audio parts, sample rates, shards, checkpoint folders and lock files, and the
stage table the shard rules and the run's verdict share."""

import subprocess
import sys

import pytest
import yaml

from avtokens.presets import Preset
from avtokens.run_plan import DEMO_WEIGHTS, SCOPES, ConfigError, RunPlan
from avtokens.workflow import DEFAULT_CONFIG

DEFAULTS = yaml.safe_load(DEFAULT_CONFIG.read_text())
PRESETS = DEFAULTS["presets"]


@pytest.fixture
def clips(tmp_path) -> list[tuple[str, str]]:
    """Five sheet rows whose files exist (the plan only asks whether they can be read)."""
    rows = []
    for i in range(5):
        (tmp_path / f"v{i}.mp4").write_bytes(b"")
        rows.append((f"v{i}", str(tmp_path / f"v{i}.mp4")))
    return rows


def plan_of(rows, **config) -> RunPlan:
    return RunPlan({**DEFAULTS, **config}, "videos.tsv", rows)


def test_each_preset_has_a_visual_part_without_a_codec_and_an_audio_part(clips):
    plan = plan_of(clips, presets={**PRESETS, "m": {**PRESETS["CV8x8x8"], "codec": "mimi", "codebooks": 4}},
                   run=["CV8x8x8", "m"], weights="demo")  # fmt: skip
    params = plan.visual_params("m")
    assert "codec" not in params and "codebooks" not in params
    assert params == plan.visual_params("CV8x8x8") | {"name": "m"}  # another codec: the same visual jobs
    assert plan.codec_params("mimi-q4") == {"codec": "mimi", "codebooks": 4}
    assert plan.audio_of() == {"CV8x8x8": "dac/demo", "m": "mimi-q4/demo"}
    assert plan.rates == ["24000", "44100"]
    assert plan.implied({"preset": "m", "video": "v0"}) == {
        "preset": "m", "video": "v0", "codec": "mimi-q4", "weights": "demo", "rate": "24000"
    }  # fmt: skip


def test_audio_is_planned_once_per_codec_setting_and_weights_whatever_the_presets(clips):
    visual = {name: PRESETS[name] for name in ("CV8x8x8", "DV8x16x16")}
    presets = {**visual, **{f"{name}-mimi": {**fields, "codec": "mimi"} for name, fields in visual.items()},
               "q4": {**visual["CV8x8x8"], "codec": "mimi", "codebooks": 4},
               "own": {**visual["DV8x16x16"], "weights": "official"}}  # fmt: skip
    plan = plan_of(clips, presets=presets, run=list(presets), weights="demo")
    assert plan.audio_runs == [("dac", "demo"), ("dac", "official"), ("mimi-q4", "demo"), ("mimi-q8", "demo")]
    assert plan.rates == ["24000", "44100"]  # the two Mimi settings share a wav


def test_a_grid_adds_every_released_combination_and_says_which_it_left_out(clips):
    grid = {"kind": ["DV"], "temporal": [4, 8], "spatial": [16], "window": [17], "codec": ["dac", "mimi"]}
    plan = plan_of(clips, run=[], grid=grid)
    assert plan.run == ["DV8x16x16-w17", "DV8x16x16-w17-mimi"]
    skipped = [reason.split(":")[0] for reason in plan.grid_skipped]
    assert skipped == ["preset 'DV4x16x16-w17'", "preset 'DV4x16x16-w17-mimi'"]  # no released tokenizer


def test_checkpoint_folders_sources_and_locks_follow_the_presets_weights(clips):
    presets = {"wan": {"family": "wan2.1"}, "cv": PRESETS["CV8x8x8"]}
    plan = plan_of(clips, presets=presets, run=["wan", "cv"], weights="official")
    assert plan.official_sources == {
        "Wan2.1-T2V-1.3B-Diffusers": {"repo": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"},
        "dac": DEFAULTS["codecs"]["dac"],
        "Cosmos-0.1-Tokenizer-CV8x8x8": {"repo": "nvidia/Cosmos-0.1-Tokenizer-CV8x8x8"},
    }
    assert plan.model_files("wan", "decoder") == [
        f"{DEFAULTS['checkpoints']}/Wan2.1-T2V-1.3B-Diffusers/vae/{name}"
        for name in ("config.json", "diffusion_pytorch_model.safetensors")
    ]
    assert plan.model_files("cv", "decoder") == [
        f"{DEFAULTS['checkpoints']}/Cosmos-0.1-Tokenizer-CV8x8x8/decoder.jit"
    ]
    assert plan.codec_files("dac", "official") == [
        f"{DEFAULTS['checkpoints']}/dac/weights_44khz_8kbps_0.0.1.pth"
    ]
    assert plan.preset_lock("cv") == DEFAULTS["weights_lock"] and not plan.demo_models
    demo = plan_of(clips, presets=presets, run=["wan"], weights="demo")
    assert demo.model_files("wan", "encoder") == [f"{DEMO_WEIGHTS}/Wan2.1-T2V-1.3B-Diffusers"]
    assert demo.codec_folder("dac", "demo") == f"{DEMO_WEIGHTS}/dac"
    assert demo.preset_lock("wan") is None and not demo.official_sources
    wan = {"family": "wan2.1", "kind": "CV", "temporal": 4, "spatial": 8}
    assert demo.demo_models == {"Wan2.1-T2V-1.3B-Diffusers": wan, "dac": {"codec": "dac"}}


def test_a_revision_goes_with_its_repo_to_the_fetch_and_not_into_the_visual_params(clips):
    presets = {"cv": {**PRESETS["CV8x8x8"], "revision": "v1", "codec": "mimi"}}
    codecs = {**DEFAULTS["codecs"], "mimi": {"repo": "kyutai/mimi", "revision": "a" * 40}}
    plan = plan_of(clips, presets=presets, run=["cv"], weights="official", codecs=codecs)
    assert plan.official_sources == {
        "Cosmos-0.1-Tokenizer-CV8x8x8": {"repo": "nvidia/Cosmos-0.1-Tokenizer-CV8x8x8", "revision": "v1"},
        "mimi": {"repo": "kyutai/mimi", "revision": "a" * 40},
    }
    unpinned = plan_of(clips, presets={"cv": PRESETS["CV8x8x8"]}, run=["cv"], weights="official")
    assert plan.visual_params("cv") == unpinned.visual_params("cv")  # the same jobs: no rerun


def test_shards_are_consecutive_rows_and_the_verdict_waits_for_every_stage_of_every_scope(clips):
    plan = plan_of(clips, shard_size=2, run=["CV8x8x8"], weights="demo")
    assert plan.shards == {"shard00000": clips[:2], "shard00001": clips[2:4], "shard00002": clips[4:]}
    records = plan.shard_records()
    per_shard = sum(len(stages) for stages in SCOPES.values())  # one scope of each kind in this run
    assert len(records) == 3 * per_shard == len(set(records))
    assert "results/shards/audio/44100hz/shard00002/extract_wav.shard.json" in records
    assert "results/shards/CV8x8x8/shard00001/align_audio.shard.json" in records
    assert (
        plan.shard_record("audio_decode")
        == "results/shards/audio/{codec}/{weights}/{shard}/audio_decode.shard.json"
    )
    assert not plan_of(clips).shards and not plan_of(clips).shard_records()


def test_missing_videos_are_left_out_and_a_sheet_without_one_is_refused(clips, tmp_path):
    rows = [*clips[:1], ("gone", str(tmp_path / "gone.mp4")), ("example", "resources/example/example.mp4")]
    plan = RunPlan(DEFAULTS, "videos.tsv", rows, made_here=["resources/example/example.mp4"])
    assert list(plan.videos) == ["v0", "example"]
    assert plan.left_out_lines() == [
        f"{tmp_path / 'gone.mp4'}: no such file (video gone of videos.tsv); left out"
    ]
    with pytest.raises(ConfigError, match="none of the listed videos exists and can be read"):
        RunPlan(DEFAULTS, "videos.tsv", rows[1:2])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"presets": {"bad": {"kind": "CV", "temporal": 4, "spatial": 16, "window": 17}}, "run": ["bad"]},
         "config: preset 'bad': no Cosmos tokenizer of release 0.1 is CV4x16x16; it has CV4x8x8, "),
        ({"presets": {"w": {"family": "wan2.1", "kind": "DV"}}, "run": ["w"]},
         "preset 'w': give temporal, spatial (family wan2.1, release 2.1 has CV4x8x8)"),
        ({"run": ["nope"]}, "config: `run` names presets that `presets` does not define: ['nope']"),
        ({"presets": {"m": {"kind": "CV", "temporal": 8, "spatial": 8, "codec": "mimi", "codebooks": 40}},
          "run": ["m"]}, "preset 'm': Mimi codes with 1 to 32 codebooks, not 40"),
        ({"run": []}, "config: nothing to run: list presets in `run` or give a `grid`"),
        ({"report_videos_per_shard": 2}, "`report_videos_per_shard` samples the comparison videos"),
        ({"presets": {"a": {**PRESETS["CV8x8x8"], "repo": "me/Cosmos-0.1-Tokenizer-CV8x8x8"},
                      "b": PRESETS["CV8x8x8"]}, "run": ["a", "b"]},
         "presets use two sources for Cosmos-0.1-Tokenizer-CV8x8x8 (me/Cosmos-0.1-Tokenizer-CV8x8x8 and "
         "nvidia/Cosmos-0.1-Tokenizer-CV8x8x8)"),
        ({"presets": {"a": {**PRESETS["CV8x8x8"], "revision": "v1"}, "b": PRESETS["CV8x8x8"]},
          "run": ["a", "b"]},
         "two sources for Cosmos-0.1-Tokenizer-CV8x8x8 (nvidia/Cosmos-0.1-Tokenizer-CV8x8x8 at v1 and"),
        ({"grid": {"kind": ["CV"], "temporal": [8], "spatial": [8], "window": [17]},
          "presets": {"CV8x8x8-w17": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 33}}},
         "grid preset CV8x8x8-w17 differs from the preset of that name in `presets`"),

        ({"presets": {"t": {**PRESETS["DV8x16x16"], "buckets": ["1280x720", "720x1272"]}}, "run": ["t"]},
         "config: preset 't': bucket 720x1272: the Cosmos DV8x16x16 takes sides that are multiples of 16"),
        ({"presets": {"t": {**PRESETS["CV8x8x8"], "fps": -24}}, "run": ["t"]},
         "config: preset 't': fps: a frame rate must be above 0 and at most 240, not -24"),
        ({"presets": {"t": {**PRESETS["CV8x8x8"], "size": "640x480", "fit": "stretch"}}, "run": ["t"]},
         "config: preset 't': fit must be crop or pad, not 'stretch'"),
        ({"pack": {**DEFAULTS["pack"], "presets": ["CV8x8x8", "CV4x8x8"]}},
         "config: pack.presets names presets that do not run: ['CV4x8x8']"),
    ],
)  # fmt: skip
def test_a_config_that_cannot_run_is_refused_with_one_line(clips, change, message):
    with pytest.raises(ConfigError) as refused:
        plan_of(clips, **change)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_repeated_video_names_are_refused(clips):
    with pytest.raises(ConfigError, match=r"videos.tsv: video names must be unique; .*\['v0'\]"):
        plan_of([*clips, clips[0]])


def test_the_plan_imports_neither_snakemake_nor_torch():
    blocked = "import sys; sys.modules.update(snakemake=None, torch=None); import avtokens.run_plan"
    subprocess.run([sys.executable, "-c", blocked], check=True)


def test_a_renamed_config_key_is_refused_naming_its_replacement(clips):
    with pytest.raises(ConfigError, match=r"config: `dac_url` is now `codecs: \{dac: \{url: ...\}\}`"):
        plan_of(clips, dac_url="https://example.org/w.pth")


def test_presets_are_a_catalogue_only_those_that_run_are_built(clips):
    catalogue = {**PRESETS, "elsewhere": {"family": "not-installed"}, "wan": {"family": "wan2.1"}}
    plan = plan_of(clips, presets=catalogue, run=["wan"])
    assert list(plan.presets) == ["wan"] and plan.rates == ["44100"]
    with pytest.raises(ConfigError, match="config: preset 'elsewhere': no tokenizer family 'not-installed'"):
        plan_of(clips, presets=catalogue, run=["wan", "elsewhere"])


def test_targets_go_to_the_visual_params_only_where_set_and_a_grid_names_them(clips):
    shaped = {**PRESETS["CV8x8x8"], "fps": "30000/1001", "size": "640x480", "start": 1.5}
    plan = plan_of(clips, presets={**PRESETS, "shaped": shaped}, run=["CV8x8x8", "shaped"], weights="demo")
    assert "shaping" not in plan.visual_params("CV8x8x8")  # as before targets existed: no job reruns
    params = plan.visual_params("shaped")
    assert params["shaping"] == {"fps": "30000/1001", "buckets": ["640x480"], "start": "3/2"}
    assert Preset(**params) == plan.presets["shaped"]  # what a job makes of its params
    grid = {"kind": ["CV"], "temporal": [8], "spatial": [8], "window": [17], "fps": [24, "30000/1001"],
            "size": ["640x480"], "fit": ["crop", "pad"]}  # fmt: skip
    plan = plan_of(clips, run=[], grid=grid)
    assert plan.run == [
        f"CV8x8x8-w17-fps{fps}-640x480-{fit}" for fps in ("24", "30000-1001") for fit in ("crop", "pad")
    ]
    assert plan.presets["CV8x8x8-w17-fps24-640x480-pad"].shaping.as_params() == {
        "fps": "24", "buckets": ["640x480"], "fit": "pad"}  # fmt: skip


def test_packing_has_a_part_per_shard_and_packs_the_presets_that_run_unless_told(clips):
    plan = plan_of(clips, shard_size=2)
    assert plan.pack_presets == ["CV8x8x8", "DV8x16x16"] and plan.pack_parts == [
        "shard00000",
        "shard00001",
        "shard00002",
    ]
    assert plan.pack_videos("shard00002") == {"v4": clips[4][1]}
    assert "presets" not in plan.pack_settings and plan.pack_settings["clip_latent_frames"] == 16
    plan = plan_of(clips, pack={**DEFAULTS["pack"], "presets": ["DV8x16x16"]})
    assert plan.pack_presets == ["DV8x16x16"] and plan.pack_parts == ["all"]
    assert plan.pack_videos("all") == dict(clips)
