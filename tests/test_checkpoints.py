"""Official weights: fetched once, reused offline, pinned, and clear failures."""

import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_hub import FakeHub
from helpers import make_clip, planned_jobs, run_workflow

from avtokens import AvTokensError, load_tokens
from avtokens.audio_codecs import AUDIO_CODECS
from avtokens.audio_codecs.base import AudioCodec
from avtokens.audio_codecs.dac import DAC
from avtokens.audio_codecs.dac import WEIGHTS_FILE as DAC_WEIGHTS_FILE
from avtokens.checkpoints import WeightsLock, checkpoint_folder, fetch_files, fetch_url
from avtokens.media import sha256_of
from avtokens.presets import make_preset
from avtokens.visual_tokenizers import VISUAL_TOKENIZERS
from avtokens.visual_tokenizers.base import VisualTokenizer
from avtokens.visual_tokenizers.cosmos.stand_in import write_cosmos_stand_in

REPO = "nvidia/Cosmos-0.1-Tokenizer-CV8x16x16"
FOLDER = "Cosmos-0.1-Tokenizer-CV8x16x16"
WAN_REPO, WAN_FOLDER = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Wan2.1-T2V-1.3B-Diffusers"
WAN_FILES = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")
WAN_TAG = "diffusers-vae"  # a tag of the fake Wan repo, which the workflow's Wan preset pins
SMALL, SMALL_FILES = "me/small", ("a.txt", "sub/b.txt")  # a repo of two small files


def hub_for(weights):
    """The stand-ins served as the official CV8x16x16 repo and Wan2.1 Diffusers repo (with the
    released repos' other files, which are not needed; the Wan files also at the commit of the
    tag `WAN_TAG`, main's parent) and DAC release file."""
    files = {name: weights / FOLDER / name for name in ("encoder.jit", "decoder.jit")}
    files |= {
        "autoencoder.jit": weights / FOLDER / "decoder.jit",
        "README.md": weights / FOLDER / "decoder.jit",
    }
    wan = {name: weights / WAN_FOLDER / name for name in WAN_FILES}
    wan["model_index.json"] = wan["transformer/config.json"] = weights / WAN_FOLDER / WAN_FILES[0]
    hub = FakeHub(
        {REPO: files}, {DAC_WEIGHTS_FILE: weights / "dac" / DAC_WEIGHTS_FILE}, refused=["nvidia/gated"]
    )
    hub.push(WAN_REPO, wan, ref=WAN_TAG)
    hub.push(WAN_REPO, wan)
    return hub


def served(folder: Path, version: str) -> dict[str, Path]:
    """`SMALL_FILES`, each holding its name and `version`: one commit's files of `SMALL`."""
    files = {}
    for name in SMALL_FILES:
        files[name] = folder / "served" / version / name
        files[name].parent.mkdir(parents=True, exist_ok=True)
        files[name].write_text(f"{version} {name}")
    return files


def contents(folder: Path) -> list[str]:
    return [(folder / name).read_text() for name in SMALL_FILES]


def test_fetch_into_an_empty_folder(demo_weights, tmp_path):
    with hub_for(demo_weights) as hub:
        fetch_files(REPO, ["encoder.jit", "decoder.jit"], tmp_path / FOLDER, endpoint=hub.url)
        fetch_files(WAN_REPO, list(WAN_FILES), tmp_path / WAN_FOLDER, endpoint=hub.url)
        fetch_url(f"{hub.url}/files/{DAC_WEIGHTS_FILE}", tmp_path / "dac" / DAC_WEIGHTS_FILE)
    for folder, names in ((FOLDER, ("encoder.jit", "decoder.jit")), (WAN_FOLDER, WAN_FILES)):
        for name in names:
            assert (tmp_path / folder / name).read_bytes() == (demo_weights / folder / name).read_bytes()
    assert sha256_of(tmp_path / "dac" / DAC_WEIGHTS_FILE) == sha256_of(
        demo_weights / "dac" / DAC_WEIGHTS_FILE
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER, WAN_FOLDER, "dac"]  # no staging left


@pytest.mark.parametrize("repo, reason", [("nvidia/gated", "401"), ("nvidia/nothing-here", "404")])
def test_a_failed_fetch_says_what_where_and_how_out_and_leaves_nothing(demo_weights, tmp_path, repo, reason):
    with hub_for(demo_weights) as hub:
        with pytest.raises(AvTokensError) as err:
            fetch_files(repo, ["encoder.jit", "decoder.jit"], tmp_path / "ckpt" / "X", endpoint=hub.url)
    message = str(err.value)
    for part in ("encoder.jit, decoder.jit", f"Hugging Face repo {repo}", f"{tmp_path}/ckpt/X/", reason,
                 "HF_TOKEN", "copy encoder.jit, decoder.jit there by hand",
                 "to try the workflow offline meanwhile, set `weights: demo`"):  # fmt: skip
        assert part in message
    assert "\n" not in message
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_a_pinned_revision_is_the_one_fetched(tmp_path):
    with FakeHub({}, {}) as hub:
        tagged = hub.push(SMALL, served(tmp_path, "v1"), ref="v1")
        hub.push(SMALL, served(tmp_path, "v2"))  # main
        for revision in ("v1", tagged):  # a tag, a commit
            fetched = fetch_files(
                SMALL, list(SMALL_FILES), tmp_path / revision, endpoint=hub.url, revision=revision
            )
            assert fetched == tagged and contents(tmp_path / revision) == ["v1 a.txt", "v1 sub/b.txt"]
    assert [r for r in hub.requests if r.startswith("/api/models/")] == [f"/api/models/{SMALL}/revision/v1"]


def test_an_unpinned_fetch_takes_one_commit_and_the_lock_keeps_it_after_main_moved(tmp_path):
    lock = WeightsLock(tmp_path / "lock.json")
    lock.check("old/repo/w.bin", "w.bin", "a" * 64)  # a lock written before commits were recorded
    with FakeHub({SMALL: served(tmp_path, "v1")}, {}) as hub:
        first = hub.commit_of(SMALL, "main")
        assert fetch_files(SMALL, [SMALL_FILES[0]], tmp_path / "x", endpoint=hub.url, lock=lock) == first
        hub.push(SMALL, served(tmp_path, "v2"))  # main moves on, as on another machine later
        assert fetch_files(SMALL, [SMALL_FILES[1]], tmp_path / "x", endpoint=hub.url, lock=lock) == first
        assert contents(tmp_path / "x") == ["v1 a.txt", "v1 sub/b.txt"]
        assert sum(r.startswith("/api/models/") for r in hub.requests) == 1
        assert json.loads(lock.path.read_text()) == {
            "old/repo/w.bin": "a" * 64,
            "revisions": {SMALL: {"main": first}},
        }
        hub.requests.clear()
        second = fetch_files(SMALL, list(SMALL_FILES), tmp_path / "y", endpoint=hub.url)  # no lock
    assert second == hub.commit_of(SMALL, "main") != first
    assert contents(tmp_path / "y") == ["v2 a.txt", "v2 sub/b.txt"]
    # main looked up once, and every file fetched at its commit, not at whatever main is by then.
    assert [r for r in hub.requests if r.startswith("/api/models/")] == [f"/api/models/{SMALL}/revision/main"]
    assert all(f"/resolve/{second}/" in r for r in hub.requests if not r.startswith("/api/models/"))


def test_a_missing_revision_or_recorded_commit_is_refused_in_one_line(tmp_path):
    lock = WeightsLock(tmp_path / "lock.json")
    lock.commit(SMALL, "main", lambda: "f" * 40)  # a commit the repo has since lost (a rewritten main)
    with FakeHub({SMALL: served(tmp_path, "v1")}, {}) as hub:
        refused = []
        for revision, with_lock in (("v9", None), ("0" * 40, None), (None, lock)):
            with pytest.raises(AvTokensError) as err:
                fetch_files(SMALL, list(SMALL_FILES), tmp_path / "x", hub.url, revision, with_lock)
            refused.append(str(err.value))
    cannot = f"cannot fetch a.txt, b.txt from Hugging Face repo {SMALL} into {tmp_path}/x/: "
    for revision, message in zip(("v9", "0" * 40), refused[:2], strict=True):
        assert message.startswith(f"{cannot}it has no revision '{revision}'; set the `revision` of its")
    assert refused[2].startswith(f"{cannot}{lock.path} records main as commit {'f' * 40}, which the repo no")
    assert f'delete "main" under "revisions": "{SMALL}" from {lock.path}' in refused[2]
    assert not any("\n" in message for message in refused) and not (tmp_path / "x").exists()


def test_offline_mode_forbids_the_dac_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AvTokensError, match="offline mode"):
        fetch_url("http://127.0.0.1:9/x.pth", tmp_path / "x.pth")
    assert not list(tmp_path.iterdir())


def test_the_lock_pins_on_first_use_and_refuses_a_changed_file(tmp_path):
    lock = WeightsLock(tmp_path / "weights.lock.json")
    lock.check("nvidia/X/encoder.jit", "enc.jit", "a" * 64)
    lock.check("nvidia/X/encoder.jit", "enc.jit", "a" * 64)  # same file: fine
    assert json.loads(lock.path.read_text()) == {"nvidia/X/encoder.jit": "a" * 64}
    with pytest.raises(AvTokensError) as err:
        lock.check("nvidia/X/encoder.jit", "ck/enc.jit", "b" * 64)
    message = str(err.value)
    assert "ck/enc.jit has sha256 " + "b" * 64 in message and "a" * 64 in message
    assert f'delete the "nvidia/X/encoder.jit" entry from {lock.path}' in message


def test_files_under_the_older_repo_name_are_found(tmp_path):
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 8, "window": 17})
    assert checkpoint_folder(tmp_path, preset) == tmp_path / "Cosmos-0.1-Tokenizer-DV8x8x8"  # fetch target
    old = tmp_path / "Cosmos-Tokenizer-DV8x8x8"
    old.mkdir()
    for name in ("encoder.jit", "decoder.jit"):
        (old / name).write_bytes(b"x")
    assert checkpoint_folder(tmp_path, preset) == old
    renamed = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 8, "window": 17,
                                "repo": "nvidia/Cosmos-Tokenizer-DV8x8x8"})  # fmt: skip
    assert renamed.folder_names == ["Cosmos-Tokenizer-DV8x8x8", "Cosmos-0.1-Tokenizer-DV8x8x8"]


@pytest.fixture(scope="module")
def official(tmp_path_factory, demo_weights):
    """The workflow with `weights: official`, fetching from the fake hub into an empty folder."""
    workdir = tmp_path_factory.mktemp("official")
    clip = make_clip(workdir / "clip.mp4", 64, 48, 12, rate="25")
    (workdir / "videos.tsv").write_text(f"name\tpath\nclip\t{clip}\n")
    hub = hub_for(demo_weights).__enter__()
    overlay = {
        "videos": str(workdir / "videos.tsv"),
        "checkpoints": str(workdir / "ckpt"),
        "weights_lock": str(workdir / "weights.lock.json"),
        "codecs": {"dac": {"url": f"{hub.url}/files/{DAC_WEIGHTS_FILE}"}},
        "presets": {"p": {"kind": "CV", "temporal": 8, "spatial": 16, "window": 17},
                    "w": {"family": "wan2.1", "window": 9, "revision": WAN_TAG}},
        "run": ["p", "w"],
    }  # fmt: skip
    run_workflow(workdir, overlay, env={"HF_ENDPOINT": hub.url})
    hub.__exit__(None, None, None)
    return workdir, overlay, hub


def test_the_workflow_fetches_pins_and_records_the_hashes(official):
    workdir, _, hub = official
    downloads = [r.split("?")[0] for r in hub.requests if "/resolve/" in r or r.startswith("/files/")]
    fetched = {path.rsplit("/", 1)[-1] for path in downloads}
    # Not the repos' other files.
    assert fetched == {"encoder.jit", "decoder.jit", "config.json", "diffusion_pytorch_model.safetensors",
                       DAC_WEIGHTS_FILE}  # fmt: skip
    pins = json.loads((workdir / "weights.lock.json").read_text())
    encoder = workdir / "ckpt" / FOLDER / "encoder.jit"
    wan = workdir / "ckpt" / WAN_FOLDER / WAN_FILES[1]
    # Each repo's commit looked up once, though each file is a job of its own (the Wan preset's
    # at the tag it pins), and every file fetched at its repo's commit.
    commits = {REPO: hub.commit_of(REPO, "main"), WAN_REPO: hub.commit_of(WAN_REPO, WAN_TAG)}
    looked_up = sorted(r for r in hub.requests if r.startswith("/api/models/"))
    assert looked_up == sorted(
        [f"/api/models/{REPO}/revision/main", f"/api/models/{WAN_REPO}/revision/{WAN_TAG}"]
    )
    fetched_at = {(r[1:].split("/resolve/")[0], r.split("/resolve/")[1].split("/")[0]) for r in downloads
                  if "/resolve/" in r}  # fmt: skip
    assert fetched_at == set(commits.items())
    assert pins.pop("revisions") == {REPO: {"main": commits[REPO]}, WAN_REPO: {WAN_TAG: commits[WAN_REPO]}}
    assert pins == {
        f"{REPO}/encoder.jit": sha256_of(encoder),
        f"{REPO}/decoder.jit": sha256_of(encoder.with_name("decoder.jit")),
        f"{WAN_REPO}/{WAN_FILES[0]}": sha256_of(wan.parent / "config.json"),
        f"{WAN_REPO}/{WAN_FILES[1]}": sha256_of(wan),
        DAC.lock_key(DAC_WEIGHTS_FILE): sha256_of(workdir / "ckpt" / "dac" / DAC_WEIGHTS_FILE),
    }
    wan_tokens = load_tokens(workdir / "results" / "w" / "tokens" / "clip_visual_tokens.safetensors")
    tokenizer = wan_tokens.metadata["tokenizer"]
    assert (tokenizer["family"], tokenizer["repo"]) == ("wan2.1", WAN_REPO)
    assert tokenizer["encoder"]["sha256"] == tokenizer["decoder_sha256"] == pins[f"{WAN_REPO}/{WAN_FILES[1]}"]
    assert not wan_tokens.metadata["stand_in_weights"]  # the marker is not a file of the repo
    visual = load_tokens(workdir / "results" / "p" / "tokens" / "clip_visual_tokens.safetensors")
    tokenizer = visual.metadata["tokenizer"]
    assert tokenizer["encoder"]["sha256"] == pins[f"{REPO}/encoder.jit"] and tokenizer["repo"] == REPO
    assert tokenizer["decoder_sha256"] == pins[f"{REPO}/decoder.jit"]
    audio = load_tokens(workdir / "results" / "p" / "tokens" / "clip_audio_tokens.safetensors")
    assert audio.metadata["codec"]["sha256"] == pins[DAC.lock_key(DAC_WEIGHTS_FILE)]


def test_present_checkpoints_are_reused_without_network(official, tmp_path):
    workdir, overlay = copy_of_official_run(official, tmp_path)  # the hub is down now
    shutil.rmtree(workdir / "results")
    dry = run_workflow(workdir, overlay, "--dry-run", env={"HF_HUB_OFFLINE": "1"})
    assert "download_weights" not in planned_jobs(dry) and "download_dac" not in planned_jobs(dry)
    # The combined mp4: every job that loads a checkpoint (the two models each way), and no
    # other. A fetch would have failed: offline, and the endpoint a closed port.
    combined = workdir / "results" / "p" / "reconstructed" / "clip_combined.mp4"
    proc = run_workflow(workdir, overlay, str(combined.relative_to(workdir)),
                        env={"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip
    assert combined.is_file()
    assert {"visual_encode", "visual_decode", "audio_encode", "audio_decode"} <= set(planned_jobs(proc))


def copy_of_official_run(official, tmp_path) -> tuple[Path, dict]:
    """A copy of the shared run, checkpoints and pins included, to change: the other tests of
    the module read its files."""
    workdir = tmp_path / "copy"
    shutil.copytree(official[0], workdir)
    overlay = {**official[1], "checkpoints": str(workdir / "ckpt"),
               "weights_lock": str(workdir / "weights.lock.json")}  # fmt: skip
    return workdir, overlay


def test_a_changed_checkpoint_is_refused(official, tmp_path):
    workdir, overlay = copy_of_official_run(official, tmp_path)  # the failed job removes its outputs
    encoder = workdir / "ckpt" / FOLDER / "encoder.jit"
    write_cosmos_stand_in(tmp_path, discrete=False, temporal=8, spatial=16, seed=1)
    shutil.copyfile(tmp_path / "encoder.jit", encoder)
    # The job that loads it, alone (the Wan preset's jobs and every later step would run too).
    tokens = "results/p/tokens/clip_visual_tokens.safetensors"
    proc = run_workflow(workdir, overlay, tokens, "--forcerun", "visual_encode", check=False,
                        env={"HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert f"{encoder} has sha256 {sha256_of(tmp_path / 'encoder.jit')}" in text
    assert f'delete the "{REPO}/encoder.jit" entry' in text


@pytest.mark.workflow
def test_unobtainable_weights_stop_the_run_before_any_model_job(demo_weights, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", 64, 48, 5, rate="25")
    (tmp_path / "videos.tsv").write_text(f"name\tpath\nclip\t{clip}\n")
    with hub_for(demo_weights) as hub:
        overlay = {
            "videos": str(tmp_path / "videos.tsv"),
            "checkpoints": str(tmp_path / "ckpt"),
            "weights_lock": str(tmp_path / "lock.json"),
            "codecs": {"dac": {"url": f"{hub.url}/files/{DAC_WEIGHTS_FILE}"}},
            "presets": {
                "p": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17, "repo": "nvidia/gated"}
            },
            "run": ["p"],
        }
        proc = run_workflow(tmp_path / "w", overlay, check=False, env={"HF_ENDPOINT": hub.url})
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert re.search(r"cannot fetch (en|de)coder\.jit from Hugging Face repo nvidia/gated", text)
    assert f"{tmp_path}/ckpt/gated/" in text and "HF_TOKEN" in text
    assert not (tmp_path / "ckpt" / "gated").exists()
    assert not (tmp_path / "w" / "results" / "p").exists()  # no model job ran


class _Opened(Exception):
    """Raised by the plug-ins below in place of loading a model."""


class _Family(VisualTokenizer):
    name, label, files = "toy", "Toy", {"encoder": ("w.bin",), "decoder": ("cfg.json", "w.bin")}

    def open_encoder(self, folder, preset, device, digests):
        raise _Opened(digests)

    open_decoder = open_encoder


class _Codec(AudioCodec):
    name, label, folder, files, repo = "toy", "Toy codec", "toy", ("w.bin",), "me/toy"

    def open(self, folder, codebooks, device, digests):
        raise _Opened(digests)


def test_the_host_pins_every_plugins_files_before_the_plugin_opens_them(tmp_path):
    """A family or codec implements only how to open its files: loading goes through the base
    class, which pins them first, so a plug-in cannot load weights the lock does not hold."""
    (tmp_path / "w.bin").write_bytes(b"weights")
    (tmp_path / "cfg.json").write_text("{}")
    lock = WeightsLock(tmp_path / "lock.json")
    preset = SimpleNamespace(name="p", repo="me/toy-model")
    for load in (lambda: _Family().decoder(tmp_path, preset, "cpu", lock),
                 lambda: _Codec().load(tmp_path, 1, "cpu", lock)):  # fmt: skip
        with pytest.raises(_Opened) as opened:
            load()
        assert opened.value.args[0]["w.bin"] == hashlib.sha256(b"weights").hexdigest()
    pins = json.loads((tmp_path / "lock.json").read_text())
    assert sorted(pins) == ["me/toy-model/cfg.json", "me/toy-model/w.bin", "me/toy/w.bin"]
    (tmp_path / "w.bin").write_bytes(b"other weights")
    for load in (lambda: _Family().encoder(tmp_path, preset, "cpu", lock),
                 lambda: _Codec().load(tmp_path, 1, "cpu", lock)):  # fmt: skip
        with pytest.raises(AvTokensError, match="changed since it was first used"):
            load()
    (tmp_path / "w.bin").unlink()
    with pytest.raises(
        AvTokensError, match=r": the Toy codec checkpoint is missing w.bin \(files of the Hugging"
    ):
        _Codec().load(tmp_path, 1, "cpu", None)


def test_no_registered_plugin_replaces_the_pinning_host():
    for family in VISUAL_TOKENIZERS.values():
        host = (VisualTokenizer.encoder, VisualTokenizer.decoder)
        assert (type(family).encoder, type(family).decoder) == host, family.name
    for codec in AUDIO_CODECS.values():
        assert type(codec).load is AudioCodec.load, codec.name
