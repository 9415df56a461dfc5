"""Training DC-AE: the three phases of "Decoupled High-Resolution Adaptation".

Paper: Chen et al., "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models"
(ICLR 2025), Sec. 3.3 and Fig. 6. The official training code was never released (efficientvit
#146, #148, #157, #161, #173); this module is an open implementation of the recipe:

1. **Low-resolution full training** -- every module, at low resolution (default 256 px), with
   L1 + perceptual loss (the maintainer's answer in efficientvit#143: L1 + LPIPS).
2. **High-resolution latent adaptation** -- only the "middle layers" next to the latent, at high
   resolution (default 512 px), same loss. Default modules: ``encoder.stages.<last>``,
   ``encoder.conv_out``, ``decoder.conv_in``, ``decoder.stages.<last>``. Which layers the paper
   calls "middle" was never published (efficientvit#168 was closed without an answer; a
   community reproduction trains only the latent projections ``project_out``/``project_in``, i.e.
   our ``encoder.conv_out``/``decoder.conv_in``). We also train the lowest-resolution stage on
   each side because that is where high-resolution images differ most from low-resolution ones:
   the global context the linear attention sees grows with the image, while the
   high-resolution stages only see local texture whose statistics do not change with image size.
3. **Low-resolution local refinement** -- only the decoder head, at low resolution (default
   256 px), with a PatchGAN hinge loss (:mod:`dc_ae.discriminator`) added to L1 + perceptual.
   Default modules: ``decoder.stages.<h>``, ``decoder.norm_out``, ``decoder.conv_out``, where
   ``h`` is the highest-resolution decoder stage that has blocks (stage 0, or stage 1 for the
   in/mix presets whose stage 0 is folded into ``conv_out``). The encoder is frozen, so the
   latent space -- and any diffusion model trained on it -- stays valid.

``TrainConfig.trainable`` overrides the module set with dotted name prefixes (module or
parameter names of :class:`~dc_ae.autoencoder.DCAE`). Frozen parameters get
``requires_grad=False`` and frozen modules stay in eval mode (BatchNorm statistics do not move),
so they are bit-identical after training.

Runs single-process or under ``torchrun`` (DDP, see :mod:`dc_ae.distributed`); AdamW with linear
warm-up and cosine decay; EMA (:mod:`dc_ae.ema`); bf16 autocast on CUDA; optional gradient
checkpointing of each stage; atomic, resumable checkpoints; on the CPU a fixed seed gives
bit-identical weights, and a run interrupted and resumed equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn
from torch.utils.checkpoint import checkpoint

from dc_ae._io import atomic_output
from dc_ae.autoencoder import DCAE
from dc_ae.config import DCAEConfig, preset_names
from dc_ae.discriminator import PatchDiscriminator, adaptive_gan_weight, d_hinge_loss, g_hinge_loss
from dc_ae.distributed import (
    DistInfo,
    any_rank,
    barrier,
    broadcast_buffers,
    cleanup,
    init_distributed,
    wrap_ddp,
)
from dc_ae.ema import EMA
from dc_ae.errors import CheckpointError, TrainingError

__all__ = [
    "PHASE_NAMES",
    "TrainConfig",
    "TrainResult",
    "default_trainable",
    "enable_gradient_checkpointing",
    "freeze_except",
    "train",
]

#: What each phase of Decoupled High-Resolution Adaptation is called in the paper.
PHASE_NAMES: dict[int, str] = {
    1: "low-resolution full training",
    2: "high-resolution latent adaptation",
    3: "low-resolution local refinement",
}
_DEFAULT_RESOLUTION = {1: 256, 2: 512, 3: 256}
_DEFAULT_GAN_WEIGHT = {1: 0.0, 2: 0.0, 3: 0.1}
_STATE_FORMAT = "dc_ae_train/1"
STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"
LOG_FILE = "log.jsonl"
# Fields that may change between a run and its resumption without changing the result.
_RESUMABLE_FIELDS = frozenset(
    {"steps", "max_minutes", "save_every", "log_every", "num_workers", "device", "out_dir", "init_checkpoint"}
)


def default_trainable(phase: int, model_config: DCAEConfig) -> tuple[str, ...]:
    """The module prefixes phase ``phase`` trains by default (see the module docstring)."""
    last = model_config.num_stages - 1
    if phase == 1:
        return ("encoder", "decoder")
    if phase == 2:
        return (f"encoder.stages.{last}", "encoder.conv_out", "decoder.conv_in", f"decoder.stages.{last}")
    if phase == 3:
        head = next(i for i, d in enumerate(model_config.decoder_depth_list) if d > 0)
        return (f"decoder.stages.{head}", "decoder.norm_out", "decoder.conv_out")
    raise TrainingError(f"phase must be 1, 2 or 3, got {phase}")


class TrainConfig(BaseModel):
    """One training run of one phase. Frozen; unknown fields are errors.

    Phase defaults (used when the field is left at ``None``):

    ======  ===================================  ==========  ==========  =========================
    phase   name                                 resolution  gan_weight  trainable
    ======  ===================================  ==========  ==========  =========================
    1       low-resolution full training         256         0           encoder, decoder
    2       high-resolution latent adaptation    512         0           middle layers (see module)
    3       low-resolution local refinement      256         0.1         decoder head (see module)
    ======  ===================================  ==========  ==========  =========================

    Phases 2 and 3 continue a trained model, so they need ``init_checkpoint``. The loss is
    ``l1_weight * L1 + perceptual_weight * P + w_gan * G`` where ``P`` is LPIPS when
    ``perceptual_network`` names a local file and otherwise the weight-free loss of
    :func:`dc_ae.metrics.weight_free_loss` (with a warning), and ``w_gan = gan_weight`` times
    VQGAN's adaptive ratio when ``adaptive_gan_weight`` is on.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | DCAEConfig | None = Field(
        None, description="Preset name or DCAEConfig; None: the architecture stored in init_checkpoint."
    )
    init_checkpoint: Path | None = Field(
        None, description="Weights to start from (any layout dc_ae.load reads); required for phases 2 and 3."
    )
    data: Path = Field(description="Folder of training images (searched recursively; png/jpg/webp/bmp).")
    phase: Literal[1, 2, 3] = Field(
        1, description="1: full low-res training, 2: latent adaptation, 3: head refinement."
    )
    trainable: tuple[str, ...] | None = Field(
        None, description="Module/parameter name prefixes to train; None: the phase default."
    )
    resolution: int = Field(None, gt=0, description="Square random-crop size in pixels; None: 256 (phase 2: 512).")  # type: ignore[assignment]
    min_scale: float = Field(
        1.0, gt=0, le=1, description="Random rescale factor range [min_scale, 1] applied before cropping."
    )
    batch_size: int = Field(8, gt=0, description="Images per optimiser step on each rank.")
    steps: int = Field(1000, gt=0, description="Total optimiser steps (a resumed run continues up to this).")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps from 0.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="After warm-up: constant, or cosine decay to min_lr_ratio * lr at the last step."
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate of the cosine schedule, relative.")
    l1_weight: float = Field(1.0, ge=0, description="Weight of the pixel L1 loss.")
    perceptual_weight: float = Field(1.0, ge=0, description="Weight of the perceptual loss (0 disables it).")
    perceptual_network: Path | None = Field(
        None,
        description="Local LPIPS weights (LPIPS.state_dict() keys: backbone.* for a torchvision-layout VGG16 "
        "'features' and lin{i}.model.1.weight); None: the weight-free fallback, with a warning.",
    )
    gan_weight: float = Field(None, ge=0, description="GAN loss weight; None: 0.1 in phase 3, else 0.")  # type: ignore[assignment]
    adaptive_gan_weight: bool = Field(True, description="Scale the GAN weight by VQGAN's gradient-norm ratio.")
    disc_lr: float = Field(1e-4, gt=0, description="Discriminator AdamW learning rate.")
    disc_betas: tuple[float, float] = Field((0.5, 0.9), description="Discriminator AdamW betas.")
    disc_start_step: int = Field(0, ge=0, description="Step at which the GAN loss and discriminator training start.")
    disc_channels: int = Field(64, gt=0, description="Width of the PatchGAN's first layer.")
    disc_layers: int = Field(3, gt=0, description="Normalised layers of the PatchGAN (3: 70x70 patches).")
    ema_decay: float | None = Field(0.999, ge=0, lt=1, description="EMA decay of the weights; None disables EMA.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; None: no clipping.")
    grad_checkpointing: bool = Field(False, description="Recompute each stage in backward to save memory.")
    seed: int = Field(0, ge=0, description="Seed of the initialisation and of the crops.")
    out_dir: Path = Field(description="Where train_state.pt, model.safetensors and log.jsonl go.")
    save_every: int = Field(500, gt=0, description="Checkpoint every this many steps (and at the end).")
    log_every: int = Field(10, gt=0, description="Average and log the losses every this many steps.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    max_minutes: float | None = Field(
        None, gt=0, description="Stop (saving a checkpoint) after this much wall-clock time in this process."
    )
    device: str = Field("auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto': bf16 autocast on CUDA, fp32 on the CPU."
    )

    @model_validator(mode="before")
    @classmethod
    def _phase_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            phase = data.get("phase", 1)
            data = dict(data)
            if data.get("resolution") is None and phase in _DEFAULT_RESOLUTION:
                data["resolution"] = _DEFAULT_RESOLUTION[phase]
            if data.get("gan_weight") is None and phase in _DEFAULT_GAN_WEIGHT:
                data["gan_weight"] = _DEFAULT_GAN_WEIGHT[phase]
        return data

    @field_validator("model")
    @classmethod
    def _known_preset(cls, v: str | DCAEConfig | None) -> str | DCAEConfig | None:
        if isinstance(v, str) and v not in preset_names():
            raise ValueError(f"unknown DC-AE preset {v!r}; known presets: {', '.join(preset_names())}")
        return v

    @field_validator("betas", "disc_betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @field_validator("trainable")
    @classmethod
    def _prefixes(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None:
            if not v:
                raise ValueError("trainable is empty; give at least one module prefix, or None for the phase default")
            bad = [p for p in v if not p or p.startswith(".") or p.endswith(".")]
            if bad:
                raise ValueError(f"trainable prefixes must be dotted module names, got {bad}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.model is None and self.init_checkpoint is None:
            raise ValueError("give model (a preset name or DCAEConfig) or init_checkpoint")
        if self.phase in (2, 3) and self.init_checkpoint is None:
            raise ValueError(
                f"phase {self.phase} ({PHASE_NAMES[self.phase]}) continues a trained model: set init_checkpoint "
                "(e.g. the model.safetensors of a phase-1 run)"
            )
        if self.l1_weight == 0 and self.perceptual_weight == 0 and self.gan_weight == 0:
            raise ValueError("l1_weight, perceptual_weight and gan_weight are all 0: nothing to train on")
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns on every rank."""

    step: int  # last completed optimiser step
    completed: bool  # False when max_minutes stopped the run early
    trainable: tuple[str, ...]  # resolved module prefixes
    num_trainable_params: int
    perceptual_kind: str  # "lpips", "weight-free" or "none"
    history: list[dict[str, float]]  # one entry per log interval: step, lr and mean losses
    final_losses: dict[str, float]  # the last history entry
    wall_seconds: float  # in this process
    model_path: Path | None  # exported model (EMA weights if enabled); None on ranks > 0
    state_path: Path | None  # training state; None on ranks > 0
    model: DCAE = field(repr=False)  # the exported weights, in fp32 and eval mode, on the CPU


# ------------------------------------------------------------------------------------------
# freezing and gradient checkpointing
# ------------------------------------------------------------------------------------------


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze_except(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Train only parameters under ``prefixes``; freeze the rest and keep frozen modules in eval.

    Returns the trainable parameter names. Raises :class:`TrainingError` naming a prefix that
    matches no parameter (a typo, or a module without weights such as an empty stage).
    """
    names = [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not any(_matches(n, p) for n in names):
            modules = sorted({n.rsplit(".", 1)[0] for n in names})
            hint = [m for m in modules if m.count(".") <= 2][:20]
            raise TrainingError(f"trainable prefix {p!r} matches no parameter of the model; modules include {hint}")
    trainable = []
    for n, param in model.named_parameters():
        on = any(_matches(n, p) for p in prefixes)
        param.requires_grad_(on)
        if on:
            trainable.append(n)
    set_train_modes(model, prefixes)
    return trainable


def set_train_modes(model: nn.Module, prefixes: tuple[str, ...]) -> None:
    """``model.train()``, then eval mode for every module outside the trainable prefixes.

    A module stays in train mode if it lies under a prefix or contains one (an ancestor); all
    other modules -- the frozen ones -- go to eval so BatchNorm statistics stay fixed.
    """
    model.train()
    for name, module in model.named_modules():
        inside = any(_matches(name, p) for p in prefixes)
        ancestor = name == "" or any(p.startswith(name + ".") for p in prefixes)
        if not (inside or ancestor):
            module.eval()


def enable_gradient_checkpointing(model: DCAE) -> None:
    """Recompute each encoder and decoder stage during backward instead of storing activations.

    Uses ``torch.utils.checkpoint`` (non-reentrant), so gradients equal the plain ones; memory
    drops to the stage boundaries. BatchNorm running statistics are restored after the
    recomputation, so they too match a run without checkpointing. Replaces the stages'
    ``forward`` on these instances only.
    """
    for stage in [*model.encoder.stages, *model.decoder.stages]:
        if getattr(stage, "_dc_ae_checkpointed", False):
            continue
        inner = stage.forward

        def forward(
            x: torch.Tensor, _inner: Callable[[torch.Tensor], torch.Tensor] = inner, _stage: nn.Module = stage
        ) -> torch.Tensor:
            # Checkpoint only when a graph is being built through this stage: from its input or
            # its own trainable weights. A frozen stage fed by frozen layers runs plainly.
            if not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in _stage.parameters()))):
                return _inner(x)
            calls = [0]

            def run(inp: torch.Tensor) -> torch.Tensor:
                calls[0] += 1
                if calls[0] == 1:
                    return _inner(inp)
                with _keep_norm_stats(_stage):  # the recomputation must not count the batch twice
                    return _inner(inp)

            return checkpoint(run, x, use_reentrant=False)

        stage.forward = forward
        stage._dc_ae_checkpointed = True


@contextlib.contextmanager
def _keep_norm_stats(module: nn.Module) -> Iterator[None]:
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)


# ------------------------------------------------------------------------------------------
# data: a step-addressable stream of random crops
# ------------------------------------------------------------------------------------------


class _CropStream(torch.utils.data.Dataset[torch.Tensor]):
    """Sample ``g`` of an endless stream: epoch ``g // n``, a seeded permutation within it.

    A pure function of ``(seed, g)``, so a resumed run (or any worker count) reads exactly the
    crops an uninterrupted run would, and a batch may hold the same photograph twice with
    different crops when the folder has fewer images than a batch.
    """

    def __init__(self, folder: Any, seed: int) -> None:
        self.folder = folder
        self.seed = seed
        self._perm_epoch = -1
        self._perm: list[int] = []

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, g: int) -> torch.Tensor:
        n = len(self.folder)
        epoch, pos = divmod(g, n)
        if epoch != self._perm_epoch:
            seq = np.random.SeedSequence([self.seed, 0x5EED, epoch]).generate_state(1)[0]
            self._perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seq))).tolist()
            self._perm_epoch = epoch
        self.folder.set_epoch(epoch)
        return self.folder[self._perm[pos]]


class _StepBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of stream indices for steps ``start..steps-1``; rank ``r`` takes its own slice."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.batch
            yield list(range(base, base + self.batch))


# ------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------


def _atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise TrainingError(f"cannot read the training state {path}: {e}") from e
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path} is not a dc_ae training state (format {found!r}, expected {_STATE_FORMAT!r})")
    return state


def _check_resumable(stored_json: str, cfg: TrainConfig) -> None:
    stored = json.loads(stored_json)
    now = json.loads(cfg.model_dump_json())
    differing = sorted(k for k in now if k not in _RESUMABLE_FIELDS and stored.get(k) != now[k])
    if differing:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {now[k]!r}" for k in differing[:4])
        raise TrainingError(
            f"{cfg.out_dir / STATE_FILE} was written by a different configuration ({detail}); "
            "use another out_dir or the same settings (only steps, max_minutes, save_every, log_every, "
            "num_workers and device may change on resume)"
        )


# ------------------------------------------------------------------------------------------
# building blocks of a run
# ------------------------------------------------------------------------------------------


def _vgg16_features() -> nn.Sequential:
    """VGG16 ``features`` (Simonyan & Zisserman 2015) in torchvision's index layout, untrained."""
    layers: list[nn.Module] = []
    c = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            c = int(v)
    return nn.Sequential(*layers)


def _perceptual(cfg: TrainConfig) -> nn.Module | None:
    if cfg.perceptual_weight == 0:
        return None
    from dc_ae.metrics import PerceptualLoss

    if cfg.perceptual_network is None:
        return PerceptualLoss.from_local(None)  # warns: weight-free fallback
    if not Path(cfg.perceptual_network).is_file():
        raise TrainingError(f"perceptual_network {cfg.perceptual_network} does not exist")
    return PerceptualLoss.from_local(
        cfg.perceptual_network, backbone=_vgg16_features(), layer_names=("3", "8", "15", "22", "29")
    )


def _build_model(cfg: TrainConfig) -> DCAE:
    arch = DCAEConfig.from_name(cfg.model) if isinstance(cfg.model, str) else cfg.model
    if cfg.init_checkpoint is not None:
        from dc_ae.checkpoint import load

        if not Path(cfg.init_checkpoint).exists():
            raise TrainingError(f"init_checkpoint {cfg.init_checkpoint} does not exist")
        try:  # the checkpoint's own config first, so its name and scaling_factor carry over
            model = load(cfg.init_checkpoint, dtype=torch.float32)
        except CheckpointError:
            if arch is None:
                raise
            model = load(cfg.init_checkpoint, config=arch, dtype=torch.float32)
        if arch is not None:
            expected = arch.model_dump(exclude={"name", "scaling_factor"})
            found = model.config.model_dump(exclude={"name", "scaling_factor"})
            differing = sorted(k for k in expected if expected[k] != found[k])
            if differing:
                raise TrainingError(f"init_checkpoint is not a {arch.name} model: its config differs in {differing}")
        return model
    assert arch is not None  # the config validator guarantees model or init_checkpoint
    torch.manual_seed(cfg.seed)
    return DCAE(arch)


def _lr_at(cfg: TrainConfig, step: int, peak: float) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return peak
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return peak * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _last_decoder_weight(model: DCAE) -> torch.Tensor:
    convs = [m for m in model.decoder.conv_out.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise TrainingError("decoder.conv_out holds no convolution for the adaptive GAN weight")
    return convs[-1].weight


def _resolve_device(cfg: TrainConfig, info: DistInfo) -> tuple[torch.device, torch.dtype | None]:
    dev = info.device
    if cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda"):
        return dev, torch.bfloat16
    return dev, None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )


# ------------------------------------------------------------------------------------------
# the training loop
# ------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, progress: bool = True) -> TrainResult:
    """Run (or resume) one phase of DC-AE training as configured; see the module docstring.

    If ``cfg.out_dir`` holds a ``train_state.pt`` from the same configuration, training resumes
    from it. Writes ``train_state.pt`` every ``save_every`` steps and at the end, the exported
    model ``model.safetensors`` (dc_ae format, EMA weights if enabled) and ``log.jsonl``. Under
    ``torchrun`` every rank calls this; rank 0 writes the files.
    """
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.device)
    try:
        return _train(cfg, info, progress and info.is_main)
    finally:
        if owns_group:
            cleanup(info)


def _train(cfg: TrainConfig, info: DistInfo, show_progress: bool) -> TrainResult:
    from dc_ae.checkpoint import save
    from dc_ae.data import ImageFolder

    t0 = time.monotonic()
    if not Path(cfg.data).is_dir():
        raise TrainingError(f"data folder {cfg.data} does not exist or is not a directory")
    device, amp_dtype = _resolve_device(cfg, info)
    out = Path(cfg.out_dir)
    state_path = out / STATE_FILE
    resume = _load_state(state_path) if state_path.exists() else None
    if resume is not None:
        _check_resumable(resume["config"], cfg)

    model = _build_model(cfg) if resume is None else DCAE(DCAEConfig.model_validate_json(resume["model_config"]))
    if resume is not None:
        model.load_state_dict(resume["model"], strict=True)
    f = model.spatial_compression
    if cfg.resolution % f:
        raise TrainingError(f"resolution {cfg.resolution} is not a multiple of the model's spatial compression {f}")
    prefixes = cfg.trainable if cfg.trainable is not None else default_trainable(cfg.phase, model.config)
    model.to(device)
    freeze_except(model, prefixes)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.grad_checkpointing:
        enable_gradient_checkpointing(model)
    last_layer = _last_decoder_weight(model)

    perceptual = _perceptual(cfg)
    if perceptual is not None:
        perceptual.to(device)
    gan = cfg.gan_weight > 0
    if gan and cfg.adaptive_gan_weight and not last_layer.requires_grad:
        raise TrainingError("adaptive_gan_weight needs the decoder's last layer (decoder.conv_out) to be trainable")
    disc: PatchDiscriminator | None = None
    disc_opt: torch.optim.Optimizer | None = None
    if gan:
        if PatchDiscriminator.output_size(cfg.resolution, cfg.disc_layers) < 1:
            raise TrainingError(
                f"resolution {cfg.resolution} is too small for a PatchGAN with disc_layers={cfg.disc_layers}; "
                "use larger crops or fewer layers"
            )
        torch.manual_seed(cfg.seed + 1)  # discriminator init independent of the model's
        disc = PatchDiscriminator(model.config.in_channels, cfg.disc_channels, cfg.disc_layers).to(device)
        disc_opt = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=cfg.disc_betas, weight_decay=0.0)

    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None
    start, history = 0, []
    if resume is not None:
        start = int(resume["step"])
        history = list(resume["history"])
        opt.load_state_dict(resume["optimizer"])
        if ema is not None:
            ema.load_state_dict(resume["ema"])
        if disc is not None and disc_opt is not None:
            disc.load_state_dict(resume["disc"])
            disc_opt.load_state_dict(resume["disc_optimizer"])
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
    if start > cfg.steps:
        raise TrainingError(f"{state_path} is at step {start}, past the configured steps={cfg.steps}")

    ddp_model = wrap_ddp(model, info)
    ddp_disc = wrap_ddp(disc, info) if disc is not None else None
    folder = ImageFolder(cfg.data, crop_size=cfg.resolution, min_scale=cfg.min_scale, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        _CropStream(folder, cfg.seed),
        batch_sampler=_StepBatches(start, cfg.steps, cfg.batch_size, info.rank, info.world_size),
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    def save_state(step: int) -> None:
        if not info.is_main:
            return
        state = {
            "format": _STATE_FORMAT,
            "step": step,
            "config": cfg.model_dump_json(),
            "model_config": model.config.model_dump_json(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "disc": disc.state_dict() if disc is not None else None,
            "disc_optimizer": disc_opt.state_dict() if disc_opt is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            "history": history,
        }
        _atomic_torch_save(state, state_path)

    log_file = out / LOG_FILE
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume is None:
            log_file.unlink(missing_ok=True)
    window: dict[str, torch.Tensor] = {}
    window_n = 0
    step = start
    stopped_early = False
    with _progress(show_progress) as prog:
        task = prog.add_task(f"phase {cfg.phase}", total=cfg.steps, completed=start) if prog is not None else None
        for batch in loader:
            lr = _lr_at(cfg, step, cfg.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            x = batch.to(device, non_blocking=True)  # [B, 3, r, r] in [-1, 1]
            with autocast():
                recon = ddp_model(x)  # [B, 3, r, r]
            recon32 = recon.float()
            terms: dict[str, torch.Tensor] = {}
            rec_loss = x.new_zeros(())
            if cfg.l1_weight:
                terms["l1"] = F.l1_loss(recon32, x)
                rec_loss = rec_loss + cfg.l1_weight * terms["l1"]
            if perceptual is not None:
                terms["perceptual"] = perceptual(recon32, x)
                rec_loss = rec_loss + cfg.perceptual_weight * terms["perceptual"]
            loss = rec_loss
            gan_on = disc is not None and step >= cfg.disc_start_step
            if gan_on:
                assert disc is not None
                disc.requires_grad_(False)  # the generator step must not touch D's gradients
                with autocast():
                    fake_logits = disc(recon)  # [B, 1, h, w]
                g_loss = g_hinge_loss(fake_logits)
                w = x.new_tensor(cfg.gan_weight)
                if cfg.adaptive_gan_weight and rec_loss.requires_grad:
                    w = w * adaptive_gan_weight(rec_loss, g_loss, last_layer)
                disc.requires_grad_(True)
                terms["g"], terms["gan_weight"] = g_loss, w
                loss = loss + w * g_loss
            terms["loss"] = loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip is not None:
                terms["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            broadcast_buffers(model, info)  # rank 0's BatchNorm statistics, as DDP's next forward would
            if ema is not None:
                ema.update(model)
            if gan_on:
                assert ddp_disc is not None and disc_opt is not None
                b = x.shape[0]
                with autocast():
                    logits = ddp_disc(torch.cat([x, recon.detach()]))  # real and fake in one pass
                d_loss = d_hinge_loss(logits[:b], logits[b:])
                disc_opt.zero_grad(set_to_none=True)
                d_loss.backward()
                disc_opt.step()
                terms["d"] = d_loss
            step += 1
            for k, v in terms.items():
                window[k] = window.get(k, x.new_zeros(())) + v.detach().float()
            window_n += 1

            if step % cfg.log_every == 0 or step == cfg.steps:
                entry = {"step": float(step), "lr": lr, **{k: float(v) / window_n for k, v in window.items()}}
                window, window_n = {}, 0
                if not math.isfinite(entry["loss"]):
                    raise TrainingError(f"loss is not finite at step {step} ({entry}); lower lr or check the data")
                history.append(entry)
                if info.is_main:
                    with open(log_file, "a") as fh:
                        fh.write(json.dumps({**entry, "elapsed_s": round(time.monotonic() - t0, 2)}) + "\n")
                if prog is not None:
                    prog.update(task, description=f"phase {cfg.phase} loss {entry['loss']:.4f}")
            if prog is not None:
                prog.update(task, completed=step)
            if step % cfg.save_every == 0 and step < cfg.steps:
                save_state(step)
            if cfg.max_minutes is not None and step < cfg.steps:
                if any_rank(time.monotonic() - t0 >= cfg.max_minutes * 60.0, info):
                    stopped_early = True
                    break

    if window_n:  # a partial window at an early stop still gets logged
        history.append({"step": float(step), "lr": lr, **{k: float(v) / window_n for k, v in window.items()}})
    save_state(step)

    final = DCAE(model.config)
    final.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()}, strict=True)
    if ema is not None:
        ema.copy_to(final)
    final = final.float().eval()
    model_path = None
    if info.is_main:
        model_path = save(final, out / MODEL_FILE)
    barrier(info)
    return TrainResult(
        step=step,
        completed=not stopped_early and step == cfg.steps,
        trainable=prefixes,
        num_trainable_params=sum(p.numel() for p in params),
        perceptual_kind=getattr(perceptual, "kind", "none"),
        history=history,
        final_losses=history[-1] if history else {},
        wall_seconds=time.monotonic() - t0,
        model_path=model_path,
        state_path=state_path if info.is_main else None,
        model=final,
    )
