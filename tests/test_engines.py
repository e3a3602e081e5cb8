"""The three engines agree: the TorchScript graph, our own modules filled from its weights,
and those modules compiled; and the self-check on load tells our network from another one.
Random weights in the released layout, all six models, CPU. Token files at one torch thread
count and across counts (README, Determinism).

Tolerances (CPU, float32 encoders; the DV decoder runs in bf16 as the released graph does):
CV latents, stored as bf16, within one bf16 step of each other; DV indices equal on at least
99.9% of positions; reconstructions within 8 bf16 steps (RMS, at the output's RMS size: the
self-check's measure). The DV decoders' bf16 arithmetic on the compiled engine's padded
input lands near 3; a network with other levels lands near 100.
"""

import contextlib
import json
import logging
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_clip, max_bf16_steps

from avtokens import AvTokensError, load_tokens
from avtokens.media import ffmpeg_exe
from avtokens.presets import make_preset
from avtokens.shards import RECORD_SUFFIX, Item, ShardJob, read_record, run_items
from avtokens.tokenfile import read_metadata
from avtokens.visual import VisualDecode, VisualEncode, decode_token_file, encode_video_file, windows_per_call
from avtokens.visual_tokenizers.cosmos import loader, network
from avtokens.visual_tokenizers.cosmos.loader import (
    SELF_CHECK_TOLERANCE,
    CosmosDecoder,
    CosmosEncoder,
    bf16_steps_apart,
)
from avtokens.visual_tokenizers.cosmos.network import CosmosDecoderNetwork, CosmosEncoderNetwork
from avtokens.visual_tokenizers.cosmos.stand_in import (
    trace_release_files,
    with_every_upsampling_conv,
    write_cosmos_stand_in,
)

MODELS = [("CV", 4, 8), ("CV", 8, 8), ("CV", 8, 16), ("DV", 4, 8), ("DV", 8, 8), ("DV", 8, 16)]
# The compiled engine wraps the same network code as eager, which the parity test checks for
# every model. Dynamo's graph capture with a backend that generates no code (9 s a model on 2
# cores, most of the test's time) runs for both kinds, both temporal and both spatial factors;
# the inductor test below compiles CV4x8x8 too.
GRAPH_CAPTURED = [("CV", 8, 16), ("DV", 8, 8)]
CPU = torch.device("cpu")
RECONSTRUCTION_STEPS = 8


def preset(kind, temporal, spatial, engine, window=17):
    fields = {"kind": kind, "temporal": temporal, "spatial": spatial, "window": window, "engine": engine}
    return make_preset("p", fields, "demo")


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """Full-size networks with random weights, traced into encoder.jit / decoder.jit."""
    root = tmp_path_factory.mktemp("release")
    for kind, temporal, spatial in MODELS:
        write_cosmos_stand_in(root / f"{kind}{temporal}x{spatial}", kind == "DV", temporal, spatial,
                              seed=temporal + spatial, full_size=True)  # fmt: skip
    return root


# Our network at an eighth of the released width: the same layers, loaded, checked and run
# the same way, at a fraction of the cost (not compiled with inductor: its kernels take as long
# to build, 55-60 CPU s), for what does not depend on the width: the fallback when compiling
# fails, what a video leaves behind in a shard job.
NARROW_WIDTH = network.BASE_WIDTH // 8


@pytest.fixture(scope="module")
def narrow_cv8x16x16(tmp_path_factory):
    """CV8x16x16 at NARROW_WIDTH, traced into encoder.jit / decoder.jit."""
    folder = tmp_path_factory.mktemp("narrow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(network, "BASE_WIDTH", NARROW_WIDTH)
        write_cosmos_stand_in(folder, False, 8, 16, seed=6, full_size=True)
    return folder


def to_pixels(frames):
    return ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).flatten(0, 1)


def run(folder, model, engine, frames, backend="inductor"):
    """Tokens of `frames`, their reconstruction, and the reconstruction of the first latent
    frame alone (a last window of one frame): what each engine makes of them."""
    p = preset(*model, engine)
    encoder = CosmosEncoder(folder / "encoder.jit", p, CPU, compile_backend=backend)
    decoder = CosmosDecoder(folder / "decoder.jit", p, CPU, compile_backend=backend)
    tokens = encoder(frames)
    outputs = tokens, decoder(tokens), decoder(tokens[:, :1])
    # Read after the calls: a compiler failure falls back to eager during the first call.
    assert encoder.record["engine"] == decoder.record["engine"] == engine
    return outputs


def assert_parity(reference, other, kind):
    (ref_tokens, ref_frames, ref_single), (tokens, frames, single) = reference, other
    assert tokens.shape == ref_tokens.shape and frames.shape == ref_frames.shape
    if kind == "CV":
        assert max_bf16_steps(ref_tokens, tokens) <= 1
    else:
        assert (tokens == ref_tokens).float().mean() >= 0.999
    assert bf16_steps_apart(ref_frames, frames) <= RECONSTRUCTION_STEPS
    assert single.shape == ref_single.shape and single.shape[2] == 1
    assert bf16_steps_apart(ref_single, single) <= RECONSTRUCTION_STEPS


def test_the_self_check_measure_counts_bf16_steps():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert bf16_steps_apart(x, x) == 0
    # Rounding to bf16 moves a value by at most half a step, about 0.3 of its step RMS
    # (uniform error; a value's step is below the step at the RMS size for the smaller half).
    assert 0.1 < bf16_steps_apart(x, x.to(torch.bfloat16)) < 0.5
    assert 9.5 < bf16_steps_apart(x, x * (1 + 10 * 2**-7)) < 10.5  # ten steps at every size
    assert bf16_steps_apart(x, x[:-1]) == float("inf")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m[0]}{m[1]}x{m[2]}x{m[2]}")
def test_eager_and_compiled_match_the_torchscript_graph(release_files, model):
    folder = release_files / f"{model[0]}{model[1]}x{model[2]}"
    frames = torch.rand(2, 3, 17, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = run(folder, model, "torchscript", frames)
    assert_parity(reference, run(folder, model, "eager", frames), model[0])
    if model in GRAPH_CAPTURED:
        assert_parity(reference, run(folder, model, "compiled", frames, backend="aot_eager"), model[0])


@pytest.mark.workflow
def test_inductor_compiles_once_serves_short_windows_and_reuses_its_kernel_cache(
    release_files, tmp_path, monkeypatch
):
    model = ("CV", 4, 8)
    folder = release_files / "CV4x8"
    frames = torch.rand(2, 3, 17, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    short = frames[:1, :, :9]  # a last batch of one short window: padded, then cropped
    compiles = []

    def counting_inductor(graph, example_inputs):  # inductor, counting the graphs it is given
        compiles.append(graph)
        return torch._dynamo.lookup_backend("inductor")(graph, example_inputs)

    cache = tmp_path / "compile_cache"  # what the workflow's compile_cache setting points at
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(cache))
    eager = CosmosEncoder(folder / "encoder.jit", preset(*model, "eager"), CPU)
    compiled = CosmosEncoder(folder / "encoder.jit", preset(*model, "compiled"), CPU,
                             compile_backend=counting_inductor)  # fmt: skip
    tokens = compiled(frames, full_batch=2)
    assert max_bf16_steps(eager(frames), tokens) <= 1
    assert max_bf16_steps(eager(short), compiled(short, full_batch=2)) <= 1
    assert compiled.engine == "compiled"  # read after the calls: a compile failure would say eager
    assert len(compiles) == 1  # one graph, and no recompile for the short one
    assert list(cache.glob("fxgraph/**/*"))  # the compiled graph, on disk
    # A later job (here: the same process with Dynamo's in-memory state dropped) loads the
    # kernels from the cache instead of compiling them again.
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters["inductor"]
    counters.clear()
    again = CosmosEncoder(folder / "encoder.jit", preset(*model, "compiled"), CPU)
    assert torch.equal(again(frames, full_batch=2), tokens)
    assert counters["fxgraph_cache_hit"] >= 1 and counters["fxgraph_cache_miss"] == 0, dict(counters)


def test_the_self_check_passes_and_is_recorded(release_files):
    folder = release_files / "DV4x8"
    encoder = CosmosEncoder(folder / "encoder.jit", preset("DV", 4, 8, "eager"), CPU)
    decoder = CosmosDecoder(folder / "decoder.jit", preset("DV", 4, 8, "eager"), CPU)
    for part in (encoder, decoder):
        check = part.record["self_check"]
        assert check["passed"] and check["tolerance_bf16_steps"] == SELF_CHECK_TOLERANCE
        assert 0 <= check["bf16_steps"]["standard"] <= SELF_CHECK_TOLERANCE
    assert decoder.record["self_check"]["variant"] == "standard"
    assert "variant" not in encoder.record["self_check"]  # the encoder has one rule
    graph = CosmosDecoder(folder / "decoder.jit", preset("DV", 4, 8, "torchscript"), CPU)
    assert "self_check" not in graph.record  # nothing to check when the graph itself runs


@pytest.mark.workflow
def test_a_file_exported_with_the_legacy_level_rule_is_decoded_with_it(tmp_path):
    write_cosmos_stand_in(tmp_path, False, 8, 16, seed=3, full_size=True, variant="legacy")
    decoder = CosmosDecoder(tmp_path / "decoder.jit", preset("CV", 8, 16, "eager"), CPU)
    check = decoder.record["self_check"]
    assert check["passed"] and check["variant"] == "legacy"
    assert check["bf16_steps"]["standard"] > 4 * SELF_CHECK_TOLERANCE  # the standard rule was tried first
    assert check["bf16_steps"]["legacy"] <= SELF_CHECK_TOLERANCE
    graph = CosmosDecoder(tmp_path / "decoder.jit", preset("CV", 8, 16, "torchscript"), CPU)
    latents = torch.randn(1, 3, 2, 3, 16, generator=torch.Generator().manual_seed(4))
    assert bf16_steps_apart(graph(latents), decoder(latents)) <= RECONSTRUCTION_STEPS


@pytest.fixture(scope="module")
def mirrored_dv4x8x8(tmp_path_factory):
    """A DV4x8x8 whose decoder up-samples in space at up.1, the encoder's mirror image, where
    NVIDIA's decoder does it at up.2 under either rule: another network in the same layout."""
    folder = tmp_path_factory.mktemp("mirrored")
    torch.manual_seed(5)
    encoder = CosmosEncoderNetwork("DV", 4, 8)
    decoder = with_every_upsampling_conv(
        CosmosDecoderNetwork("DV", 4, 8, upsampling=[(True, False), (False, False)])
    )
    marker = {"stand_in": True, "kind": "DV", "temporal": 4, "spatial": 8, "network": "cosmos"}
    trace_release_files(folder, encoder, decoder, marker)
    return folder


@pytest.mark.parametrize("engine", ["eager", "compiled"])
def test_another_network_in_the_release_layout_is_refused_by_an_explicit_engine(mirrored_dv4x8x8, engine):
    path = mirrored_dv4x8x8 / "decoder.jit"
    # For DV4x8x8 NVIDIA's two rules choose the same levels: one try.
    message = (
        f"{re.escape(str(path))}: engine '{engine}': our Cosmos network does not compute what this "
        r"file computes \(NVIDIA's standard level rule: (\d+) bf16 steps off; "
        rf"at most {SELF_CHECK_TOLERANCE} bf16 steps pass\); run preset 'p' with engine torchscript$"
    )
    with pytest.raises(AvTokensError, match=message) as err:
        CosmosDecoder(path, preset("DV", 4, 8, engine), CPU)
    assert int(re.search(message, str(err.value)).group(1)) > 4 * SELF_CHECK_TOLERANCE
    # Its encoder is NVIDIA's network: it passes.
    encoder = CosmosEncoder(mirrored_dv4x8x8 / "encoder.jit", preset("DV", 4, 8, engine), CPU)
    assert encoder.record["self_check"]["passed"]


def test_with_auto_another_network_leaves_the_file_graph_running(mirrored_dv4x8x8, monkeypatch, caplog):
    # On a GPU, auto picks our compiled network; make it do so here.
    monkeypatch.setattr(loader, "resolve_engine", lambda requested, device, tiny: "compiled")
    path = mirrored_dv4x8x8 / "decoder.jit"
    with caplog.at_level(logging.WARNING, logger="avtokens.visual_tokenizers.cosmos.loader"):
        decoder = CosmosDecoder(path, preset("DV", 4, 8, "auto"), CPU)
    assert decoder.engine == decoder.record["engine"] == "torchscript"
    assert isinstance(decoder.module, torch.jit.ScriptModule)
    assert not decoder.record["self_check"]["passed"] and "variant" not in decoder.record["self_check"]
    assert f"{path}: our Cosmos network does not compute what the file computes" in caplog.text
    assert "running the file's TorchScript graph instead" in caplog.text


def test_token_files_and_reconstructions_record_the_engine_and_self_check(release_files, tmp_path):
    folder, p = release_files / "CV8x8", preset("CV", 8, 8, "eager", window=9)
    clip = make_clip(tmp_path / "clip.mp4", 48, 32, 12, rate="25", audio_channels=None)
    tokens, recon, table = tmp_path / "tokens.safetensors", tmp_path / "recon.mp4", tmp_path / "frames.tsv"
    encode_video_file(clip, tokens, p, folder, "cpu", 2, "clip")
    encoder_record = read_metadata(tokens)["tokenizer"]["encoder"]
    assert encoder_record["engine"] == "eager" and encoder_record["self_check"]["passed"]
    decode_token_file(tokens, recon, p, folder, "cpu", 2, 12, "ultrafast", clip, table)
    decoder_record = decoder_record_of(recon)
    assert decoder_record["engine"] == "eager"
    assert decoder_record["self_check"]["passed"] and decoder_record["self_check"]["variant"] == "standard"


def decoder_record_of(reconstruction) -> dict:
    """The decoder's record, read from the reconstruction mp4's comment tag with ffmpeg."""
    tags = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(reconstruction), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    comment = next(line for line in tags.splitlines() if line.startswith("comment="))
    return json.loads(re.sub(r"\\(.)", r"\1", comment.removeprefix("comment=")))["avtokens_decoder"]


def test_a_compiler_failure_runs_the_network_uncompiled_and_says_so(
    narrow_cv8x16x16, tmp_path, monkeypatch, caplog
):
    """Compiling can fail on some platform (no C++ compiler, an operator the compiler lacks):
    the job logs a warning, runs our network uncompiled and records engine eager, and its
    tokens and reconstruction are the eager engine's."""

    def compile_that_fails(module, **options):
        def compiled(x):
            raise RuntimeError("InductorError: no working C++ compiler found\n(the rest of the trace)")

        return compiled

    monkeypatch.setattr(torch, "compile", compile_that_fails)
    monkeypatch.setattr(network, "BASE_WIDTH", NARROW_WIDTH)  # read as the file's weights are loaded
    folder = narrow_cv8x16x16
    clip = make_clip(tmp_path / "clip.mp4", 48, 32, 12, rate="25", audio_channels=None)
    warning = "torch.compile failed (InductorError: no working C++ compiler found); running the network"
    made = {}
    for engine in ("compiled", "eager"):
        p = preset("CV", 8, 16, engine, window=9)
        tokens, recon = tmp_path / engine, tmp_path / f"{engine}.mp4"
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="avtokens"):
            encode_video_file(clip, tokens, p, folder, "cpu", 2, "c")
            decode_token_file(tokens, recon, p, folder, "cpu", 2, 12, "ultrafast", clip,
                              tmp_path / f"{engine}.tsv")  # fmt: skip
        made[engine] = load_tokens(tokens), decoder_record_of(recon)["engine"]
        assert caplog.text.count(warning) == (2 if engine == "compiled" else 0)  # encoder and decoder
    (tokens, decoder_engine), (eager_tokens, _) = made["compiled"], made["eager"]
    assert tokens.metadata["tokenizer"]["encoder"]["engine"] == decoder_engine == "eager"
    assert max_bf16_steps(eager_tokens["latents"], tokens["latents"]) <= 1
    scores = [np.loadtxt(tmp_path / f"{engine}.tsv", skiprows=1)[:, 2:] for engine in made]
    assert np.abs(scores[0] - scores[1]).max() < 0.01  # PSNR and SSIM of the same frames


def test_our_network_refuses_weights_that_do_not_fill_it(tmp_path, demo_weights):
    p = preset("CV", 8, 8, "eager")
    with pytest.raises(AvTokensError, match="tiny stand-in weights are not; they run only as engine torch"):
        CosmosEncoder(demo_weights / p.model / "encoder.jit", p, CPU)
    # A release file with one layer taken out: the error names it.
    write_cosmos_stand_in(tmp_path, False, 8, 8, full_size=True)
    module = torch.jit.load(str(tmp_path / "encoder.jit"))
    state = module.state_dict()
    from avtokens.visual_tokenizers.cosmos.network import network_from_release

    del state["encoder.mid.attn_1.1.q.conv3d.weight"]
    with pytest.raises(ValueError, match=r"1 parameters missing: encoder\.mid\.attn_1\.1\.q\.conv3d\.weight"):
        network_from_release(state, "encoder", "CV", 8, 8)


# Two 17-frame windows of 32x32 a call: the long clip's two windows go in one call.
ORDER_BUDGET_MEGAPIXELS = 0.04


@pytest.mark.parametrize("engine", ["compiled", "eager"])
def test_a_videos_files_do_not_depend_on_the_videos_before_it(
    narrow_cv8x16x16, tmp_path, monkeypatch, engine
):
    """A shard job loads its model once for all its videos, so nothing a video leaves behind
    may change another's bytes: a short clip (one window, a call of its own) encoded and
    decoded first in a shard job, fifth (after three long clips of two windows a call) and
    alone gives the same token file, reconstruction and scores, byte for byte. The compiled
    engine once padded each call to the largest batch seen so far, which on this CPU changed
    the clip's reconstruction after the long clips."""
    monkeypatch.setattr(network, "BASE_WIDTH", NARROW_WIDTH)  # read as the file's weights are loaded
    # The compiled engine's padding, minus Dynamo's capture (3 s a shape here): what a
    # compiled graph computes is checked above, against eager.
    monkeypatch.setattr(torch, "compile", lambda module, **options: module)
    folder, p = narrow_cv8x16x16, preset("CV", 8, 16, engine)
    assert windows_per_call(ORDER_BUDGET_MEGAPIXELS, p.window, 32, 32) == 2
    clip = make_clip(tmp_path / "clip.mp4", 32, 32, 9, rate="25", audio_channels=None)
    long = make_clip(tmp_path / "long.mp4", 32, 32, 2 * p.window, rate="25", audio_channels=None)

    def shard_jobs(name, videos):
        """The clip's files (token file, reconstruction, scores) from an encode and a decode
        shard job over `videos`, (name, source) each, for each time the clip comes in them
        (under its own name each time: its files record it)."""
        out = tmp_path / name
        out.mkdir()
        files = [{kind: str(out / f"{k}.{kind}") for kind in ("safetensors", "mp4", "tsv")}
                 for k in range(len(videos))]  # fmt: skip
        encode = [Item(video, {"source": str(source)}, {"tokens": f["safetensors"]})
                  for (video, source), f in zip(videos, files, strict=True)]  # fmt: skip
        decode = [Item(video, {"tokens": f["safetensors"], "source": str(source)},
                       {"video": f["mp4"], "frame_metrics": f["tsv"]})
                  for (video, source), f in zip(videos, files, strict=True)]  # fmt: skip
        budget = ORDER_BUDGET_MEGAPIXELS
        stages = (VisualEncode(p, folder, "cpu", budget),
                  VisualDecode(p, folder, "cpu", budget, 18, "ultrafast"))  # fmt: skip
        for stage, items in zip(stages, (encode, decode), strict=True):
            record = out / f"{type(stage).__name__}{RECORD_SUFFIX}"
            run_items(stage, items, ShardJob(record, {}, []))
            assert read_record(record)["failed"] == {}
        return [{kind: Path(path).read_bytes() for kind, path in f.items()}
                for (video, _), f in zip(videos, files, strict=True) if video == "clip"]  # fmt: skip

    longs = [(f"long{k}", long) for k in range(3)]
    first, fifth = shard_jobs("shard", [("clip", clip), *longs, ("clip", clip)])
    (alone,) = shard_jobs("alone", [("clip", clip)])
    for kind in alone:
        assert first[kind] == alone[kind], f"the clip's {kind} first in a shard and alone differ"
        assert fifth[kind] == alone[kind], f"the clip's {kind} fifth in a shard and alone differ"


def test_the_compiled_engine_compiles_every_shape_however_many_came_before():
    """Dynamo compiles a function for 8 shapes and runs any further one uncompiled, silently:
    a shard job's ninth resolution would run otherwise than it runs alone."""
    graphs = []

    def counting_backend(graph, example_inputs):  # no code generated: the graph as it is
        graphs.append(graph)
        return graph.forward

    class Doubling(torch.nn.Module):
        def forward(self, x):
            return x * 2

    compiled = torch.compile(Doubling(), dynamic=False, backend=counting_backend)
    sizes = range(1, torch._dynamo.config.recompile_limit + 3)
    for size in sizes:
        assert torch.equal(loader.run_compiled(compiled, torch.ones(size)), torch.full((size,), 2.0))
    assert len(graphs) == len(sizes)


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op thread count, as a job of `count` threads sets it (avtokens.rule)."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("model", [("CV", 4, 8), ("DV", 8, 16)], ids=lambda m: f"{m[0]}{m[1]}x{m[2]}x{m[2]}")
def test_token_files_are_byte_identical_at_one_thread_count_and_a_step_apart_across_counts(
    release_files, tmp_path, model
):
    """README, Determinism. The full networks' sums are split differently over 1 and 2 threads:
    here 1 of 3,840 CV latents lands a bf16 step apart, and 15 of 156,672 values of its
    reconstruction a level apart; no DV index moves."""
    kind = model[0]
    folder, p = release_files / f"{kind}{model[1]}x{model[2]}", preset(*model, "auto")
    clip = make_clip(tmp_path / "c.mp4", 64, 48, 17, rate="25", audio_channels=None)
    decoder = CosmosDecoder(folder / "decoder.jit", p, CPU)
    tensor = "latents" if kind == "CV" else "indices"
    files, frames = [tmp_path / f"{n}.safetensors" for n in range(3)], []
    for path, threads in zip(files, (1, 2, 1), strict=True):
        with torch_threads(threads):
            encode_video_file(clip, path, p, folder, "cpu", 2, "c")
            frames.append(decoder(load_tokens(files[0])[tensor]))
    assert files[0].read_bytes() == files[2].read_bytes()
    one, two = load_tokens(files[0]), load_tokens(files[1])
    assert [t.metadata["runtime"]["threads"] for t in (one, two)] == [1, 2]
    if kind == "CV":
        assert max_bf16_steps(one["latents"], two["latents"]) <= 1
    else:
        assert (one["indices"] == two["indices"]).float().mean() >= 0.999
    # The same tokens reconstructed: the same frames at one count; across counts, CV's a level
    # apart at most, DV's (decoded in bf16) within a bf16 step RMS.
    assert torch.equal(frames[0], frames[2])
    assert bf16_steps_apart(frames[0], frames[1]) <= 1
    if kind == "CV":
        assert (to_pixels(frames[0]).int() - to_pixels(frames[1]).int()).abs().max() <= 1
