"""Load the Cosmos causal video tokenizer from its TorchScript files and run it on tensors.

The same code loads the official `encoder.jit` / `decoder.jit` and the stand-ins (`stand_in`);
only the checkpoint folder differs. The preset's engine says what runs: the TorchScript graph
itself, our own modules (`network`) filled with its weights, or those modules through
`torch.compile`. Our modules run only after a self-check on every load has shown that they
compute what the file computes.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from avtokens import AvTokensError
from avtokens.joblog import warn_stand_in
from avtokens.media import sha256_of
from avtokens.storage import as_declared
from avtokens.visual_tokenizers.cosmos.fsq import CODEBOOK_SIZE
from avtokens.visual_tokenizers.cosmos.network import DECODER_VARIANTS, network_from_release
from avtokens.visual_tokenizers.cosmos.stand_in import STAND_IN_MARKER
from avtokens.windows import latent_frame_count

if TYPE_CHECKING:
    from avtokens.presets import Preset

log = logging.getLogger(__name__)

# The self-check passes when our network's output is within this many bf16 steps of the
# file's (RMS over the output, a step taken at the output's RMS size). Right networks land
# below 3 in bf16 (op order and attention kernels round differently) and near 0 in float32;
# a decoder with its levels chosen by the other rule, or wrongly, lands near 100.
SELF_CHECK_TOLERANCE = 16
_BF16_STEP = 2.0**-7  # bf16 keeps 8 significant bits: its spacing is 2^-7 of the value's power of two
LATENT_CHANNELS = 16  # of CV latents


def bf16_steps_apart(reference: torch.Tensor, other: torch.Tensor) -> float:
    """RMS difference of `other` from `reference`, in bf16 steps at the reference's RMS size;
    infinite when the shapes differ."""
    if reference.shape != other.shape:
        return math.inf
    reference, other = reference.double(), other.double()
    size = reference.square().mean().sqrt().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return float((other - reference).square().mean().sqrt() / (size * _BF16_STEP))


def resolve_engine(requested: str, device: torch.device, tiny: bool) -> str:
    """The engine `auto` stands for: our compiled network on a GPU, else the TorchScript graph."""
    if requested != "auto":
        return requested
    return "compiled" if device.type == "cuda" and not tiny else "torchscript"


def _pad_by_repeating(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """`x` extended along `dim` to `size` by repeating its last entry."""
    missing = size - x.shape[dim]
    if missing <= 0:
        return x
    last = x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([x, last.expand(*[missing if d == dim else -1 for d in range(x.dim())])], dim=dim)


# Dynamo compiles at most `recompile_limit` (8) shapes of a function and runs any further
# one uncompiled, silently and with other rounding: a shard job's ninth resolution would get
# other tokens than it gets alone. So every new shape compiles (minutes; cached on disk).
_COMPILE_EVERY_SHAPE = {"recompile_limit": 1 << 30, "accumulated_recompile_limit": 1 << 30}


def run_compiled(compiled, x: torch.Tensor):
    """`compiled` (a torch.compile'd network) on `x`, compiled for its shape however many
    shapes came before."""
    with torch._dynamo.config.patch(**_COMPILE_EVERY_SHAPE):
        return compiled(x)


def _model_dtypes(device: torch.device, discrete: bool) -> tuple[torch.dtype, torch.dtype]:
    """(encoder, decoder) dtypes. bf16 on GPU. On CPU PyTorch has no bf16 3D average
    pooling, so float32, except the DV decoder, whose graph casts its codes to bf16."""
    if device.type == "cuda":
        return torch.bfloat16, torch.bfloat16
    return torch.float32, (torch.bfloat16 if discrete else torch.float32)


class _CosmosNetwork:
    """One TorchScript file of a preset (`part`: encoder or decoder), probed with a tiny input,
    plus what the token metadata records of it (`sha256`: the file's, as the host pinned it;
    hashed here when the file is opened directly, as tests and benchmarks do).
    Engines other than torchscript replace the file's graph by our network once the
    self-check passes; `compile_backend` (a name or a callable) is torch.compile's backend."""

    part: str

    def __init__(
        self, path: Path | str, preset: Preset, device: torch.device, sha256: str | None = None,
        compile_backend="inductor",
    ):  # fmt: skip
        self.preset, self.device, path = preset, device, Path(path)
        encoder_dtype, decoder_dtype = _model_dtypes(device, preset.is_discrete)
        self.dtype = encoder_dtype if self.part == "encoder" else decoder_dtype
        extra = {STAND_IN_MARKER: ""}
        try:
            with warnings.catch_warnings():  # the released format is TorchScript, deprecated or not
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AvTokensError(f"{path}: not a loadable TorchScript checkpoint ({first})") from None
        self.module = module.to(self.dtype).eval()
        self.channels = None if preset.is_discrete else LATENT_CHANNELS
        self.metadata = {}  # nothing more for the token file's tokenizer record
        self.stand_in = bool(extra[STAND_IN_MARKER])
        tiny = self.stand_in and json.loads(extra[STAND_IN_MARKER]).get("network", "tiny") == "tiny"
        self.record = {
            "file": as_declared(path),
            "repo": preset.repo,
            "sha256": sha256 or sha256_of(path),
            "dtype": str(self.dtype).removeprefix("torch."),
            "stand_in": self.stand_in,
        }
        if self.stand_in:
            warn_stand_in(log, path, "tokens")
        expected, found = f"a {preset.kind}{preset.factors} {self.part}", self._probe()
        if found != expected:
            raise AvTokensError(f"{path}: preset '{preset.name}' expects {expected}, but the file is {found}")
        self.engine = resolve_engine(preset.engine, device, tiny)
        self.self_check_seconds = 0.0  # measured in the benchmark, kept out of the record
        if self.engine != "torchscript":
            self._use_our_network(path, tiny)
        self.record["engine"] = self.engine
        self._compiled = None
        if self.engine == "compiled":
            # One input shape per resolution (see _run), compiled once each; the
            # compiled kernels are cached on disk (TORCHINDUCTOR_CACHE_DIR) for later jobs.
            self._compiled = torch.compile(self.module, dynamic=False, backend=compile_backend)

    def _run(self, x: torch.Tensor, full_length: int, dim: int, full_batch: int | None):
        """The network on `x`. The compiled engine sees one shape per resolution: dimension
        `dim` (time) padded to `full_length` and the batch to `full_batch` (None: as it is),
        by repeating the last entry; the caller crops the output. The network is causal and
        codes each window alone, so padding changes no value, but the padded shape can change
        the rounding: it comes from the call's arguments, never from the calls before it (a
        shard job's earlier videos)."""
        if self._compiled is None:
            return self.module(x)
        x = _pad_by_repeating(_pad_by_repeating(x, dim, full_length), 0, full_batch or x.shape[0])
        if not x.is_inference():  # padded inputs are inference tensors: keep one kind (one graph)
            x = x.clone()
        try:
            return run_compiled(self._compiled, x)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # a compiler failure must not cost the job: run as written
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log.warning("torch.compile failed (%s); running the network uncompiled", reason)
            self._compiled, self.engine, self.record["engine"] = None, "eager", "eager"
            return self.module(x)

    def _probe(self) -> str:
        """What the file is, read from how it maps a tiny input: "a CV8x16x16 encoder" and so on."""
        raise NotImplementedError

    def _check_input(self) -> torch.Tensor:
        """A small seeded input for the self-check: three latent frames of 3x4 positions."""
        raise NotImplementedError

    def _check_output(self, out) -> torch.Tensor:
        """The floating-point output the self-check compares."""
        raise NotImplementedError

    def _use_our_network(self, path: Path, tiny: bool) -> None:
        """Replace the file's graph by our network filled with its weights, once the same seeded
        input gives the same output through both (for a decoder, with NVIDIA's standard level
        rule, else the legacy one). If neither matches: `auto` keeps the graph and warns; an
        explicit engine stops the job. The figures go into the record."""
        preset, started = self.preset, time.perf_counter()
        if tiny:
            raise AvTokensError(f"{path}: engine '{self.engine}' runs our own Cosmos network, which the tiny "
                                "stand-in weights are not; they run only as engine torchscript")  # fmt: skip
        state = self.module.state_dict()
        probe = self._check_input()
        with torch.inference_mode():  # only the passes: parameters made here stay ordinary tensors
            expected = self._check_output(self.module(probe))
        steps: dict[str, float] = {}  # bf16 steps apart, per level rule tried (inf: another shape)
        unfit: dict[str, str] = {}  # why a rule's network cannot be filled from the file
        tried = []  # level choices tried: where the two rules agree (DV4x8x8), one try
        for variant in DECODER_VARIANTS if self.part == "decoder" else DECODER_VARIANTS[:1]:
            try:
                network = network_from_release(
                    state, self.part, preset.kind, preset.temporal, preset.spatial, variant=variant
                )
            except ValueError as err:
                unfit[variant] = str(err)
                continue
            levels = network.upsampling if self.part == "decoder" else None
            if levels in tried:
                continue
            tried.append(levels)
            network = network.to(self.device, self.dtype).eval()
            with torch.inference_mode():
                steps[variant] = bf16_steps_apart(expected, self._check_output(network(probe)))
            if steps[variant] <= SELF_CHECK_TOLERANCE:
                break
        else:
            network = None
        self.self_check_seconds = time.perf_counter() - started
        self.record["self_check"] = {
            "passed": network is not None,
            "bf16_steps": {v: round(f, 2) if math.isfinite(f) else None for v, f in steps.items()},
            "tolerance_bf16_steps": SELF_CHECK_TOLERANCE,
        }  # fmt: skip
        if network is not None:
            if self.part == "decoder":
                self.record["self_check"]["variant"] = variant
            # Timed in the log, not the record: the token file's bytes must not depend on it.
            rule = f", {variant} level rule" if self.part == "decoder" else ""
            log.info("%s: our network computes what the file computes (%.2f bf16 steps apart%s); "
                     "self-check %.2f s", path, steps[variant], rule, self.self_check_seconds)  # fmt: skip
            self.module = network
            return
        rules = {"standard": "NVIDIA's standard level rule: ", "legacy": "their legacy rule: "}
        detail = "; ".join(
            (rules[v] if self.part == "decoder" else "")
            + (unfit[v] if v in unfit else f"{steps[v]:.0f} bf16 steps off" if math.isfinite(steps[v])
               else "another output shape")
            for v in DECODER_VARIANTS if v in unfit or v in steps
        )  # fmt: skip
        if preset.engine == "auto":
            log.warning("%s: our Cosmos network does not compute what the file computes (%s; at most %d "
                        "bf16 steps pass): running the file's TorchScript graph instead",
                        path, detail, SELF_CHECK_TOLERANCE)  # fmt: skip
            self.engine = "torchscript"
            return
        raise AvTokensError(
            f"{path}: engine '{self.engine}': our Cosmos network does not compute what this file computes "
            f"({detail}; at most {SELF_CHECK_TOLERANCE} bf16 steps pass); "
            f"run preset '{preset.name}' with engine torchscript"
        )


class CosmosEncoder(_CosmosNetwork):
    """frames [B, 3, T, H, W] in [-1, 1] -> CV latents bf16 [B, t, h, w, 16] or DV
    indices int64 [B, t, h, w]; T must be 1 + k*tc and H, W multiples of the spatial factor."""

    part = "encoder"

    @torch.inference_mode()
    def _probe(self) -> str:
        out = self.module(torch.zeros(1, 3, 17, 32, 32, device=self.device, dtype=self.dtype))[0]
        if out.dim() == 4 and not out.is_floating_point():  # DV indices [1, t, h, w]
            kind, t, h = "DV", out.shape[1], out.shape[2]
        elif out.dim() == 5 and out.shape[1] == LATENT_CHANNELS:  # CV latents [1, 16, t, h, w]
            kind, t, h = "CV", out.shape[2], out.shape[3]
        else:
            kind, t, h = None, 0, 0
        if kind is None or t < 2 or 16 % (t - 1) or 32 % h:
            return f"not a Cosmos encoder (17 frames of 32x32 gave {tuple(out.shape)})"
        s = 32 // h
        return f"a {kind}{16 // (t - 1)}x{s}x{s} encoder"

    def _check_input(self) -> torch.Tensor:
        tc, s = self.preset.temporal, self.preset.spatial
        frames = torch.rand(1, 3, 1 + 2 * tc, 3 * s, 4 * s, generator=torch.Generator().manual_seed(0))
        return (frames * 2 - 1).to(self.device, self.dtype)

    def _check_output(self, out) -> torch.Tensor:
        return out[1] if self.preset.is_discrete else out[0]  # DV codes, CV latents

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor, full_batch: int | None = None) -> torch.Tensor:
        batch, latent_frames = frames.shape[0], latent_frame_count(frames.shape[2], self.preset.temporal)
        out = self._run(frames.to(self.dtype), self.preset.window, 2, full_batch)[0][:batch]
        if self.preset.is_discrete:
            return out[:, :latent_frames].to(torch.int64)
        return out[:, :, :latent_frames].permute(0, 2, 3, 4, 1).to(torch.bfloat16)


class CosmosDecoder(_CosmosNetwork):
    """CV latents [B, t, h, w, 16] or DV indices [B, t, h, w] -> frames [B, 3, 1 + tc*(t - 1),
    h*s, w*s] in the network's dtype (`dtype`), clamped to [-1, 1] (the network does not clamp)."""

    part = "decoder"

    @torch.inference_mode()
    def _probe(self) -> str:
        kind = self.preset.kind
        if self.preset.is_discrete:
            tokens = torch.zeros(1, 2, 2, 2, dtype=torch.int64, device=self.device)
        else:
            tokens = torch.zeros(1, LATENT_CHANNELS, 2, 2, 2, dtype=self.dtype, device=self.device)
        try:
            out = self.module(tokens)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            return f"not a {kind} decoder (it refused {kind} tokens: {reason})"
        if out.dim() != 5 or out.shape[1] != 3 or out.shape[3] % 2:
            return f"not a Cosmos decoder (2 latent frames of 2x2 gave {tuple(out.shape)})"
        s = out.shape[3] // 2
        return f"a {kind}{out.shape[2] - 1}x{s}x{s} decoder"

    def _check_input(self) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        if self.preset.is_discrete:
            return torch.randint(0, CODEBOOK_SIZE, (1, 3, 3, 4), generator=generator).to(self.device)
        return torch.randn(1, LATENT_CHANNELS, 3, 3, 4, generator=generator).to(self.device, self.dtype)

    def _check_output(self, out) -> torch.Tensor:
        return out

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, full_batch: int | None = None) -> torch.Tensor:
        if self.preset.is_discrete:
            tokens, time_dim = tokens.to(self.device, torch.int64), 1
        else:
            tokens, time_dim = tokens.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype), 2
        batch, latent_frames = tokens.shape[0], tokens.shape[time_dim]
        window_latents = latent_frame_count(self.preset.window, self.preset.temporal)
        frames = self._run(tokens, window_latents, time_dim, full_batch)[:batch]
        # In the network's dtype: a float32 copy of a 4K window would be 1.7 GB more.
        return frames[:, :, : 1 + self.preset.temporal * (latent_frames - 1)].clamp_(-1, 1)
