"""The run plan: what a run of the workflow does, worked out from its validated config and
sample sheet before any job, and the files and settings each rule asks of it.

`rules/common.smk` validates the config and the sheet against their schemas (Snakemake's
`validate`, which fills in the defaults) and builds one `RunPlan`; the rules keep only the
orchestration: wildcards, file patterns and input functions that ask the plan. Pure Python
(no torch, no Snakemake), so the plan is unit-tested on its own.

A preset has a visual part (`Preset`: what its visual jobs read) and an audio part
(`AudioSetting`). The audio is done once per video and codec setting (the codec and its
number of codebooks) and weights, however many presets share it, and the audio is extracted
once per sample rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from avtokens import AvTokensError
from avtokens.checkpoints import checkpoint_folder
from avtokens.media import unusable_source
from avtokens.presets import AudioSetting, grid_presets, make_audio_setting, make_preset
from avtokens.renamed_keys import renamed_keys
from avtokens.storage import is_url, object_entries

DEMO_WEIGHTS = "resources/demo_weights"  # where stand-in checkpoints are built
# The per-video stages by the scope of their jobs, in run order: what a stage makes, it makes
# per video and scope. Shard mode runs one job per shard, scope and stage, and the run's verdict
# (`check_run`) waits for the record of each.
SCOPES = {
    "audio/{rate}hz": ("extract_wav",),
    "audio/{codec}/{weights}": ("audio_encode", "audio_decode", "summarize_audio"),
    "{preset}": ("visual_encode", "visual_decode", "align_audio", "summarize", "mux", "compare_video"),
    "videos": ("plot_frame_psnr",),
}
SCOPE_OF = {stage: scope for scope, stages in SCOPES.items() for stage in stages}


class ConfigError(ValueError):
    """The config or the sheet cannot be run: one line saying what is wrong and what to do."""


class RunPlan:
    """The presets that run, the videos, shards, sample rates and checkpoint folders of a run.

    `rows`: the sheet's (name, path) rows; `made_here`: sources a rule of the workflow makes
    (so not missing before it runs). A listed file that does not exist or cannot be read is
    left out (`left_out`), so that the rest of a large sheet still runs; so is a listed object
    (`s3://bucket/key`) that is not in its bucket, found by one listing per folder
    (`storage_options`: fsspec's, avtokens.storage)."""

    def __init__(self, config: dict, sheet: str, rows: Iterable[tuple[str, str]], made_here: Iterable = (),
                 storage_options: dict | None = None):  # fmt: skip
        self.config, self.sheet, self.started = config, sheet, time.time()
        for message in renamed_keys(config):
            raise ConfigError(message)
        self.results, self.checkpoints = config["results"], config["checkpoints"]
        rows = list(rows)
        names = [name for name, _ in rows]
        dupes = sorted({name for name in names if names.count(name) > 1})
        if dupes:
            raise ConfigError(f"{sheet}: video names must be unique; rename the repeated ones: {dupes}")
        made_here = {os.path.normpath(path) for path in made_here}
        self.left_out = {}  # name -> path, with `reasons` why
        self.reasons = {}
        try:
            objects = object_entries([path for _, path in rows if is_url(path)], storage_options)
        except AvTokensError as err:
            raise ConfigError(f"{sheet}: {err}") from None
        # What each object source is (shard jobs rerun when it changes: avtokens.shards.files_state)
        self.object_identities = {
            url: [url, entry["size"], entry.get("ETag")] for url, entry in objects.items()
        }
        for name, path in rows:
            if is_url(path):
                reason = None if path in objects else "no such object"
            else:
                reason = None if os.path.normpath(path) in made_here else unusable_source(path)
            if reason:
                self.left_out[name], self.reasons[name] = path, reason
        self.videos = {name: path for name, path in rows if name not in self.left_out}
        if not self.videos:
            raise ConfigError(f"{sheet}: none of the listed videos exists and can be read: fix their paths")
        self._plan_presets(config)
        self._plan_shards(config)
        self._plan_weights()
        self._plan_packing(config)

    def _plan_presets(self, config: dict) -> None:
        try:
            grid, self.grid_skipped = grid_presets(config.get("grid") or {})
        except ValueError as err:
            raise ConfigError(f"config: {err}") from None
        for name, fields in grid.items():
            if name in config["presets"] and config["presets"][name] != fields:
                raise ConfigError(f"config: grid preset {name} differs from the preset of that name in "
                                  "`presets`: rename that one")  # fmt: skip
        # `presets` is a catalogue: only those that run are built (and checked), so an entry for a
        # family or codec this installation lacks stops no run that does not use it.
        entries, weights = {**config["presets"], **grid}, config["weights"]
        self.run = list(dict.fromkeys([*config["run"], *grid]))
        unknown = [name for name in self.run if name not in entries]
        if unknown:
            raise ConfigError(f"config: `run` names presets that `presets` does not define: {unknown}; "
                              f"defined: {sorted(entries)}")  # fmt: skip
        if not self.run:
            raise ConfigError("config: nothing to run: list presets in `run` or give a `grid`")
        # The revision of a preset's repo is the fetch's alone (not a visual param): a changed
        # revision refetches the files, and new files rerun the jobs that read them.
        self.revisions = {name: entries[name].get("revision") for name in self.run}
        try:
            self.presets = {name: make_preset(name, entries[name], weights) for name in self.run}
            self.audio = {name: make_audio_setting(name, entries[name], weights) for name in self.run}
        except ValueError as err:
            raise ConfigError(f"config: {err}") from None
        # Codec setting -> its audio part (the first preset's: the weights come from the wildcards).
        self.codec_settings: dict[str, AudioSetting] = {}
        for name in self.run:
            self.codec_settings.setdefault(self.audio[name].name, self.audio[name])
        self.audio_runs = sorted({(self.audio[name].name, self.audio[name].weights) for name in self.run})
        self.rates = sorted({str(setting.sample_rate) for setting in self.codec_settings.values()})

    def _plan_shards(self, config: dict) -> None:
        """Shard mode (shard_size > 0): consecutive rows of the sheet in shards of that many
        videos, named by their position, so appended rows add shards and leave the full ones as
        they were."""
        self.shard_size = config["shard_size"]
        self.report_videos_per_shard = config["report_videos_per_shard"]
        if self.report_videos_per_shard is not None and not self.shard_size:
            raise ConfigError(
                "config: `report_videos_per_shard` samples the comparison videos and plots of shard mode; "
                "set `shard_size` too, or leave it null (one job per video makes them for every video)"
            )
        rows, size = list(self.videos.items()), self.shard_size
        self.shards = {
            f"shard{number:05d}": rows[start : start + size]
            for number, start in enumerate(range(0, len(rows) if size else 0, size or 1))
        }

    def _plan_packing(self, config: dict) -> None:
        """The presets `snakemake pack` packs (every one that runs unless `pack.presets` says),
        its settings, and its parts: one per shard of the sheet, so that a new video rewrites
        its shard's tars only, or one, "all", outside shard mode."""
        section = dict(config.get("pack") or {})
        chosen = section.pop("presets", None)
        self.pack_presets = list(self.run if chosen is None else chosen)
        unknown = [name for name in self.pack_presets if name not in self.run]
        if unknown:
            raise ConfigError(
                f"config: pack.presets names presets that do not run: {unknown}; running: {self.run}"
            )
        self.pack_settings = section
        self.pack_parts = list(self.shards) or ["all"]

    def pack_videos(self, part: str) -> dict[str, str]:
        """The videos of a pack part and their sources, as the sheet lists them."""
        return dict(self.shards[part]) if self.shards else dict(self.videos)

    def _plan_weights(self) -> None:
        """Checkpoint folder -> where its files come from ({"repo": ..., optionally "revision":
        ...} or {"url": ...}), and the files the families and codecs read, for the official
        presets that run; stand-in folder -> the model it stands in for (a family's model or a
        codec), for the demo ones."""
        self.official_sources, self.checkpoint_files, self.demo_models = {}, set(), {}
        for name in self.run:
            preset, codec = self.presets[name], self.audio[name].audio_codec
            if preset.weights == "demo":
                model = {"family": preset.family, "kind": preset.kind, "temporal": preset.temporal,
                         "spatial": preset.spatial}  # fmt: skip
                self.demo_models.setdefault(preset.model, model)
                self.demo_models.setdefault(codec.folder, {"codec": codec.name})
                continue
            # Without a revision, the source is what it was before revisions could be set, so
            # the fetches of existing configs keep their params.
            source = {"repo": preset.repo}
            if self.revisions[name]:
                source["revision"] = self.revisions[name]
            known = self.official_sources.setdefault(preset.model, source)
            if known != source:
                raise ConfigError(
                    f"config: presets use two sources for {preset.model} ({_described(known)} and "
                    f"{_described(source)}); their files would share a folder"
                )
            self.official_sources.setdefault(codec.folder, codec.source(self.config))
            self.checkpoint_files.update(preset.tokenizer.checkpoint_files(), codec.files)

    def left_out_lines(self) -> list[str]:
        """One error line per video left out of the run."""
        return [f"{path}: {self.reasons[name]} (video {name} of {self.sheet}); left out"
                for name, path in self.left_out.items()]  # fmt: skip

    def outputs_note(self, outputs: list[str], report: str, under: str = "") -> str:
        """What a finished run tells its user: where its outputs and report are, and which
        presets ran on stand-in weights. `under`: the storage prefix they are objects under."""
        results, report = under_prefix(under, self.results), under_prefix(under, report)
        outputs = [under_prefix(under, path) for path in outputs]
        lines = [f"\nOutputs under {results}/ (per preset: tokens/, reconstructed/, metrics/):"]
        if self.shards:
            lines.append(f"  {len(self.videos)} videos in {len(self.shards)} shards of up to "
                         f"{self.shard_size}; what each shard job made is listed in its record under "
                         f"{results}/shards/")  # fmt: skip
        lines += [f"  {path}" for path in outputs if not path.endswith(".shard.json")]
        lines.append(f'Report: {report}/index.html, with a page per preset (README, "Judging fidelity")')
        demo = sorted(name for name in self.run if self.presets[name].weights == "demo")
        if demo:
            lines.append(f"Presets {', '.join(demo)} used stand-in demo weights: their tokens carry no "
                         "meaning, their reconstructions show only that the pipeline works (the report "
                         "says what they look like); use `weights: official` for real ones.")  # fmt: skip
        return "\n".join(lines)

    def pack_note(self, under: str = "") -> str:
        """Where `snakemake pack` left the packed datasets (`under`: the storage prefix)."""
        results = under_prefix(under, self.results)
        lines = [f'\nPacked training shards under {results}/packed/ (README, "Packed training shards"):']
        lines += [f"  {results}/packed/{name}/  (README.md: what it holds; .nv-meta/: Energon's index)"
                  for name in self.pack_presets]  # fmt: skip
        return "\n".join(lines)

    def visual_params(self, preset: str) -> dict:
        """The preset's fields its visual jobs read: a change to any of them reruns those jobs.
        Not its audio's: another codec makes other audio, not other visual tokens."""
        return self.presets[preset].as_params()

    def codec_params(self, setting: str) -> dict:
        """The audio jobs' codec and number of codebooks."""
        audio = self.codec_settings[setting]
        return {"codec": audio.codec, "codebooks": audio.codebooks}

    def implied(self, values: dict[str, str]) -> dict[str, str]:
        """Wildcard values with those they imply: a preset's codec setting and weights, a codec
        setting's sample rate."""
        values = dict(values.items())
        if "preset" in values:
            audio = self.audio[values["preset"]]
            values.update(codec=audio.name, weights=audio.weights)
        if "codec" in values:
            values["rate"] = str(self.codec_settings[values["codec"]].sample_rate)
        return values

    def audio_of(self) -> dict[str, str]:
        """Preset -> "<codec setting>/<weights>", where its audio's files are kept."""
        return {name: f"{self.audio[name].name}/{self.audio[name].weights}" for name in self.run}

    def model_folder(self, preset: str) -> str:
        """Where the preset's checkpoint is: the stand-in folder a rule builds (demo weights),
        or the official one."""
        visual = self.presets[preset]
        if visual.weights == "demo":
            return f"{DEMO_WEIGHTS}/{visual.model}"
        return str(checkpoint_folder(self.checkpoints, visual))

    def model_files(self, preset: str, *parts: str) -> list[str]:
        """The checkpoint files the preset's `parts` (encoder, decoder) read: its stand-in
        folder, built whole by one rule, or each official file, fetched unless present."""
        folder = self.model_folder(preset)
        if self.presets[preset].weights == "demo":
            return [folder]
        return [f"{folder}/{name}" for name in self.presets[preset].tokenizer.checkpoint_files(*parts)]

    def codec_folder(self, setting: str, weights: str) -> str:
        """Where the checkpoint of a codec setting is: its stand-in folder or the official one."""
        folder = self.codec_settings[setting].audio_codec.folder
        return f"{DEMO_WEIGHTS if weights == 'demo' else self.checkpoints}/{folder}"

    def codec_files(self, setting: str, weights: str) -> list[str]:
        """The checkpoint files a codec setting reads, as `model_files`."""
        folder = self.codec_folder(setting, weights)
        if weights == "demo":
            return [folder]
        return [f"{folder}/{name}" for name in self.codec_settings[setting].audio_codec.files]

    def weights_lock(self, weights: str) -> str | None:
        """The lock file official weights are pinned in; stand-ins are not pinned."""
        return self.config["weights_lock"] if weights == "official" else None

    def preset_lock(self, preset: str) -> str | None:
        return self.weights_lock(self.presets[preset].weights)

    def source(self, video: str) -> str:
        return self.videos[video]

    def official_source(self, folder: str) -> dict:
        return self.official_sources[folder]

    def demo_model(self, folder: str) -> dict:
        """The model a stand-in folder is built for: a family's model, or a codec."""
        return self.demo_models[folder]

    def scopes(self) -> dict[str, tuple[str, ...]]:
        """Each scope of this run's per-video jobs ("audio/44100hz", "audio/dac/demo", a preset,
        "videos") -> its stages."""
        filled = {"videos": SCOPES["videos"]}
        filled |= {f"audio/{rate}hz": SCOPES["audio/{rate}hz"] for rate in self.rates}
        filled |= {f"audio/{setting}/{weights}": SCOPES["audio/{codec}/{weights}"]
                   for setting, weights in self.audio_runs}  # fmt: skip
        return filled | {name: SCOPES["{preset}"] for name in self.run}

    def shard_record(self, stage: str, scope: str | None = None) -> str:
        """The record a shard job of `stage` writes, `{shard}` left as a wildcard; its scope is
        the stage's pattern unless given."""
        scope = SCOPE_OF[stage] if scope is None else scope
        return f"{self.results}/shards/{scope}/{{shard}}/{stage}.shard.json"

    def shard_records(self) -> list[str]:
        """Every record the shard jobs of this run write (none outside shard mode)."""
        return [
            self.shard_record(stage, scope).replace("{shard}", shard)
            for scope, stages in self.scopes().items()
            for stage in stages
            for shard in self.shards
        ]


def under_prefix(prefix: str, path: str) -> str:
    """`path` as the object it is under a storage prefix (Snakemake's default storage), or as
    it is without one."""
    return f"{prefix.rstrip('/')}/{path}" if prefix else path


def _described(source: dict) -> str:
    """A repo and its revision, for a message."""
    return f"{source['repo']} at {source['revision']}" if "revision" in source else source["repo"]


def read_sheet(path: str):
    """The sample sheet as a table of strings, as written (no NA guessing, no quoting)."""
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)
    except (OSError, pd.errors.ParserError) as err:
        raise ConfigError(
            f"cannot read the sample sheet {path} ({err}): check the config's `videos`"
        ) from None
