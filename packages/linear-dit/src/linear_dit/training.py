"""Flow-matching training of the Linear DiT on precomputed latents and text states.

SANA (Xie et al., ICLR 2025), Sec. 2.3 and the released training configs: the model regresses
the velocity ``noise - x0`` of the straight path ``x_t = (1 - t) x0 + t noise``
(:mod:`linear_dit.flow_matching`) with logit-normal (or uniform) timesteps and the ``flow_shift``
timestep shift; 10% of the captions are replaced by the empty prompt's states so the model also
learns the unconditional velocity that classifier-free guidance needs; AdamW; an EMA of the
weights (:mod:`linear_dit.ema`) is what gets exported. SANA-1.5 (ICML 2025) trains its large models
with sharded data parallelism; here ``torchrun`` runs DDP or FSDP2 (:mod:`linear_dit.distributed`).

Inputs are a latent data set file (:mod:`linear_dit.data`): latents with the text-encoder states
and masks of their captions and the null (empty-prompt) states. The text encoder is not part of
training. To train on real images, encode them once with an autoencoder and the captions with a
Hugging Face encoder -- for SANA's models, Gemma-2-2B-IT's last hidden state (2304-d), at most
300 tokens, the tokenizer's attention mask as the padding mask, and the states of ``""`` as the
null embedding -- and write them with :func:`linear_dit.data.save_latent_dataset`; the
:mod:`linear_dit.data` docstring has the code. Then::

    from linear_dit.training import TrainConfig, train

    result = train(TrainConfig(model="sana-0.6b-512px", data="train.safetensors", out_dir="runs/a"))

or, on 8 GPUs, the same call in a script started by ``torchrun --nproc_per_node=8 script.py``
(every rank runs it; ``strategy="fsdp"`` shards models whose optimizer state does not fit one
GPU). ``batch_size`` is per rank.

A run writes, in ``out_dir`` (rank 0 only):

* ``train_state.pt`` -- the resumable state: model, optimizer, EMA, step, RNG states, loss
  history and the data position. Written atomically every ``save_every`` steps and at the end;
  a rerun with the same settings resumes from it.
* ``model.safetensors`` -- the exported model in the package's format
  (:func:`linear_dit.checkpoint.save`; :func:`linear_dit.load` reads it): the EMA weights, or
  the raw weights without EMA. ``model_raw.safetensors`` holds the raw weights when EMA is on.
* ``log.jsonl`` -- one JSON line per log interval and per validation.

Determinism: every random draw of step ``s`` on rank ``r`` (timesteps, noise, caption dropout)
comes from a generator seeded by ``(seed, s, r)``, and the data order is a seeded permutation per
epoch addressed by the step, so on the CPU the same seed gives bit-identical losses and weights,
and a run interrupted and resumed ends with the same weights as one that was not. Validation
uses a fixed midpoint grid of flow times and noise seeded per sample (independent of the
training seed), so its numbers are comparable across runs and checkpoints.

Mixed precision: ``mixed_precision="bf16"`` runs the forward pass under bf16 autocast on CUDA
(weights, gradients and optimizer states stay fp32); on the CPU the run is fp32 whatever the
setting, and :attr:`TrainResult.precision` says which was used.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from linear_dit._io import atomic_output
from linear_dit.config import LinearDiTConfig, preset_names
from linear_dit.data import LatentDataset, load_latent_dataset
from linear_dit.distributed import (
    DistInfo,
    Strategy,
    all_reduce_sum,
    any_rank,
    barrier,
    cleanup,
    full_state_dict,
    init_distributed,
    load_optimizer_state,
    optimizer_state,
    reshard,
    unwrap,
    wrap_model,
)
from linear_dit.ema import EMA
from linear_dit.errors import CheckpointError, TrainingError
from linear_dit.flow_matching import TimestepSampling, flow_matching_loss, sample_flow_timesteps
from linear_dit.linear_dit import LinearDiT

__all__ = [
    "LOG_FILE",
    "MODEL_FILE",
    "RAW_MODEL_FILE",
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "train",
    "validation_loss",
]

_STATE_FORMAT = "linear_dit_train/1"
STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"
RAW_MODEL_FILE = "model_raw.safetensors"
LOG_FILE = "log.jsonl"
# Settings that may change when a run is resumed without changing the weights it ends with
# (``steps`` changes the cosine schedule's length, so extend only constant-schedule runs).
_RESUMABLE_FIELDS = frozenset(
    {
        "steps",
        "save_every",
        "log_every",
        "val_every",
        "out_dir",
        "resume",
        "device",
        "max_minutes",
        "stop_at_step",
        "strategy",
        "gradient_checkpointing",
        "val_data",
        "val_batch_size",
    }
)


class TrainConfig(BaseModel):
    """One flow-matching training run. Frozen; unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | LinearDiTConfig | None = Field(
        None, description="Preset name or LinearDiTConfig; None: the architecture stored in init_checkpoint."
    )
    init_checkpoint: Path | None = Field(
        None, description="Weights to start from (any layout linear_dit.load reads); None: Sana's random init."
    )
    data: Path = Field(description="Latent data set file (linear_dit.data format) to train on.")
    val_data: Path | None = Field(None, description="Validation data set file; None: hold out val_fraction of data.")
    val_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of data held out for validation when val_data is None (0: none)."
    )
    steps: int = Field(1000, gt=0, description="Total optimiser steps (a resumed run continues up to this).")
    batch_size: int = Field(32, gt=0, description="Samples per optimiser step on each rank.")
    lr: float = Field(1e-4, gt=0, description="Peak AdamW learning rate (SANA: 1e-4).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    weight_decay: float = Field(
        0.0, ge=0, description="AdamW decoupled weight decay on matrices (not on biases, norms, tables)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps from 0.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="After warm-up: constant (SANA), or cosine decay to min_lr_ratio * lr."
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate of the cosine schedule, relative.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; None: no clipping.")
    timestep_sampling: TimestepSampling = Field(
        "logit_normal", description="Training flow times: 'logit_normal' (SANA, SD3) or 'uniform'."
    )
    logit_mean: float = Field(0.0, description="Mean of the logit-normal timestep density.")
    logit_std: float = Field(1.0, gt=0, description="Standard deviation of the logit-normal timestep density.")
    flow_shift: float | None = Field(
        None, gt=0, description="Timestep shift of the sampled times (1: none); None: the model's config.flow_shift."
    )
    cond_dropout: float = Field(
        0.1, ge=0, le=1, description="Probability of replacing a caption by the null text (classifier-free guidance)."
    )
    ema_decay: float | None = Field(0.9999, ge=0, lt=1, description="EMA decay of the weights; None disables EMA.")
    ema_warmup: bool = Field(True, description="EMA decay min(decay, (1+n)/(10+n)) at update n (for short runs).")
    mixed_precision: Literal["no", "bf16"] = Field(
        "bf16", description="'bf16': bf16 autocast on CUDA (fp32 on the CPU); 'no': fp32 everywhere."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute each block in backward to save memory.")
    strategy: Strategy = Field("ddp", description="Under torchrun: 'ddp' (replicated) or 'fsdp' (FSDP2 sharding).")
    log_every: int = Field(10, gt=0, description="Average and log the training loss every this many steps.")
    save_every: int = Field(500, gt=0, description="Write the resumable state every this many steps (and at the end).")
    val_every: int = Field(500, gt=0, description="Validate every this many steps (and at the start and end).")
    val_timesteps: int = Field(8, gt=0, description="Flow times of the validation grid: midpoints (j + 0.5) / n.")
    val_batch_size: int | None = Field(None, gt=0, description="Validation batch size; None: batch_size.")
    val_seed: int = Field(0, ge=0, description="Seed of the fixed validation noise (independent of seed).")
    out_dir: Path = Field(description="Where train_state.pt, model.safetensors and log.jsonl go.")
    seed: int = Field(0, ge=0, description="Seed of the initialisation, data order, timesteps, noise and dropout.")
    resume: bool = Field(True, description="Continue from out_dir/train_state.pt if present; False: start afresh.")
    device: str = Field("auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")
    max_minutes: float | None = Field(
        None, gt=0, description="Stop (saving the state) after this much wall-clock time in this process."
    )
    stop_at_step: int | None = Field(
        None, gt=0, description="Stop (saving the state) at this step, as if pre-empted; rerun to continue."
    )

    @field_validator("model")
    @classmethod
    def _known_preset(cls, v: str | LinearDiTConfig | None) -> str | LinearDiTConfig | None:
        if isinstance(v, str) and v not in preset_names():
            raise ValueError(f"unknown Linear DiT preset {v!r}; known presets: {', '.join(preset_names())}")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"betas must lie in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.model is None and self.init_checkpoint is None:
            raise ValueError("give model (a preset name or LinearDiTConfig) or init_checkpoint")
        return self

    def architecture(self) -> LinearDiTConfig | None:
        """The model config named by ``model`` (None when only ``init_checkpoint`` gives it)."""
        return LinearDiTConfig.from_name(self.model) if isinstance(self.model, str) else self.model


@dataclass
class TrainResult:
    """What :func:`train` returns on every rank."""

    step: int  # last completed optimiser step
    completed: bool  # False when stop_at_step or max_minutes stopped the run early
    precision: str  # "bf16" (autocast on CUDA) or "fp32"
    history: list[dict[str, float]]  # one entry per log interval: step, lr, loss, grad_norm
    val_history: list[dict[str, float]]  # step, val_loss (raw weights) and, at the end, val_loss_ema
    final_loss: float | None  # training loss of the last log interval
    initial_val_loss: float | None  # validation loss of the initial weights (None without validation)
    final_val_loss: float | None  # of the raw weights at the last step
    final_val_loss_ema: float | None  # of the EMA weights at the last step (None without EMA)
    wall_seconds: float  # in this process
    model_path: Path | None  # exported model (EMA weights if enabled); None on ranks > 0
    raw_model_path: Path | None  # raw weights when EMA is on; None otherwise and on ranks > 0
    state_path: Path | None  # resumable training state; None on ranks > 0
    model: LinearDiT = field(repr=False)  # the exported weights, fp32, eval mode, on the CPU

    def summary(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready (paths as strings), e.g. for a CLI's ``--json``."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "model":
                continue
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Path) else value
        return out


# ------------------------------------------------------------------------------------------
# pieces of a run
# ------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig) -> LinearDiT:
    """The fp32 model a fresh run starts from: ``init_checkpoint``'s weights, else the seeded init."""
    arch = cfg.architecture()
    if cfg.init_checkpoint is not None:
        from linear_dit.checkpoint import load

        if not Path(cfg.init_checkpoint).exists():
            raise TrainingError(f"init_checkpoint {cfg.init_checkpoint} does not exist")
        try:
            model = load(cfg.init_checkpoint, dtype=torch.float32)
        except CheckpointError:
            if arch is None:
                raise
            model = load(cfg.init_checkpoint, arch, dtype=torch.float32)
        if arch is not None:
            expected = arch.model_dump(exclude={"name"})
            found = model.config.model_dump(exclude={"name"})
            differing = sorted(k for k in expected if expected[k] != found[k])
            if differing:
                raise TrainingError(f"init_checkpoint is not a {arch.name} model: its config differs in {differing}")
        return model.train()
    assert arch is not None  # the config validator guarantees model or init_checkpoint
    torch.manual_seed(cfg.seed)
    return LinearDiT(arch).train()


def _check_data(config: LinearDiTConfig, data: LatentDataset, what: str) -> None:
    shape = data.latent_shape
    want = 4 if config.video else 3
    problems = []
    if len(shape) != want:
        problems.append(
            f"latents are {'video' if data.video else 'image'} {shape}, the model takes "
            f"{'[C,T,H,W]' if config.video else '[C,H,W]'}"
        )
    elif shape[0] != config.in_channels:
        problems.append(f"latents have {shape[0]} channels, the model {config.in_channels}")
    elif shape[-1] % config.patch_size or shape[-2] % config.patch_size:
        problems.append(f"latent size {shape[-2:]} is not a multiple of the patch size {config.patch_size}")
    if data.caption_channels != config.caption_channels:
        problems.append(f"text states are {data.caption_channels}-d, the model takes {config.caption_channels}-d")
    if problems:
        raise TrainingError(f"{what} does not fit model {config.name!r}: " + "; ".join(problems))


def _load_data(cfg: TrainConfig) -> tuple[LatentDataset, LatentDataset | None]:
    data = load_latent_dataset(cfg.data)
    if cfg.val_data is not None:
        return data, load_latent_dataset(cfg.val_data)
    if cfg.val_fraction > 0:
        return data.split(cfg.val_fraction, seed=cfg.seed)
    return data, None


def _seed_for(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _SampleStream:
    """Sample ``g`` of an endless stream: epoch ``g // n``, position ``g % n`` of a seeded
    permutation of that epoch. A pure function of ``(seed, g)``, so resuming (or any world size)
    reads exactly the samples an uninterrupted run reads at the same step."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _perm_of(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_seed_for(self.seed, 0x5EED, epoch))
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        return self._perm

    def indices(self, step: int, rank: int, world: int, batch: int) -> torch.Tensor:
        """Data set indices of rank ``rank``'s batch at ``step``."""
        base = (step * world + rank) * batch
        return torch.tensor([int(self._perm_of(g // self.n)[g % self.n]) for g in range(base, base + batch)])


def _trim_text(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the trailing text positions that every sample of the batch masks out (pure padding)."""
    kept = mask.any(dim=0).nonzero()
    length = int(kept.max()) + 1 if len(kept) else 1
    return states[:, :length], mask[:, :length]


def _training_batch(
    cfg: TrainConfig, data: LatentDataset, idx: torch.Tensor, step: int, rank: int, shift: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x0, text_states, text_mask, t, noise)`` of rank ``rank``'s batch ``idx`` at ``step``.

    The flow times, the noise and the caption dropout come, in that order, from one generator
    seeded by ``(seed, step, rank)``: a pure function of the step, so resuming reproduces them.
    A dropped caption becomes the data set's null text (states and mask), as SANA trains the
    unconditional branch of classifier-free guidance.
    """
    gen = torch.Generator(device=device).manual_seed(_seed_for(cfg.seed, step, rank))
    x0, y, mask = data.batch(idx, device)
    b = x0.shape[0]
    t = sample_flow_timesteps(
        b,
        sampling=cfg.timestep_sampling,
        logit_mean=cfg.logit_mean,
        logit_std=cfg.logit_std,
        shift=shift,
        generator=gen,
    )
    noise = torch.randn(x0.shape, generator=gen, device=device)
    drop = torch.rand(b, generator=gen, device=device) < cfg.cond_dropout
    if cfg.cond_dropout > 0:
        null_y = data.null_text_states.to(device=device, dtype=torch.float32)
        y = torch.where(drop[:, None, None], null_y[None], y)
        mask = torch.where(drop[:, None], data.null_text_mask.to(device)[None], mask)
    y, mask = _trim_text(y, mask)
    return x0, y, mask, t, noise


def _lr_at(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay only weight matrices: biases, norm gains and the AdaLN tables set scales and offsets.
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith("scale_shift_table") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    dataset: LatentDataset,
    *,
    timesteps: int = 8,
    seed: int = 0,
    batch_size: int = 64,
    max_timestep: float = 1000.0,
    autocast_dtype: torch.dtype | None = None,
    info: DistInfo | None = None,
) -> float:
    """Deterministic flow-matching loss of ``model`` on ``dataset``.

    Every sample is evaluated at the flow times ``(j + 0.5) / timesteps`` (a midpoint grid, so
    every noise level counts equally whatever the training density) with noise drawn from a
    generator seeded by ``(seed, sample index)``, with its own caption (no dropout); the result is
    the mean over samples, times and elements. Under ``torchrun`` pass ``info``: the samples are
    split over ranks and the sums all-reduced (every rank runs the same number of forwards, which
    FSDP needs). ``model`` may be wrapped; it is run in eval mode and put back as it was.
    """
    info = info or DistInfo()
    net = unwrap(model)
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    n, world = len(dataset), info.world_size
    per_rank = -(-n // world)
    positions = torch.arange(per_rank) * world + info.rank
    weights = (positions < n).double()
    positions = torch.where(positions < n, positions, torch.zeros_like(positions))
    grid = (torch.arange(timesteps, dtype=torch.float32) + 0.5) / timesteps
    totals = torch.zeros(2, dtype=torch.float64)
    try:
        for start in range(0, per_rank, batch_size):
            idx = positions[start : start + batch_size]
            w = weights[start : start + batch_size].to(device)
            x0, y, mask = dataset.batch(idx, device)
            y, mask = _trim_text(y, mask)
            noise = torch.stack(
                [
                    torch.randn(
                        timesteps,
                        *dataset.latent_shape,
                        generator=torch.Generator().manual_seed(_seed_for(seed, int(i))),
                    )
                    for i in idx
                ]
            ).to(device)  # [b, J, ...]
            for j in range(timesteps):
                t = grid[j].expand(len(idx)).to(device)
                with _autocast(device, autocast_dtype):
                    losses = flow_matching_loss(
                        net, x0, y, mask, t=t, noise=noise[:, j], max_timestep=max_timestep, reduction="none"
                    )
                totals[0] += float((losses.double() * w).sum())
                totals[1] += float(w.sum())
    finally:
        reshard(net)
        net.train(was_training)
    totals = all_reduce_sum(totals, info)
    return float(totals[0] / totals[1])


# ------------------------------------------------------------------------------------------
# the training state file
# ------------------------------------------------------------------------------------------


def _atomic_torch_save(obj: object, path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise TrainingError(f"cannot read the training state {path} (truncated or corrupt?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TrainingError(f"{path} is not a linear_dit training state (format {found!r}, expected {_STATE_FORMAT!r})")
    return state


def _check_resumable(stored_json: str, cfg: TrainConfig, path: Path) -> None:
    stored = json.loads(stored_json)
    now = json.loads(cfg.model_dump_json())
    differing = sorted(k for k in now if k not in _RESUMABLE_FIELDS and stored.get(k) != now[k])
    if differing:
        detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {now[k]!r}" for k in differing[:4])
        raise TrainingError(
            f"{path} was written by a different configuration ({detail}); use another out_dir, resume=False, "
            f"or the same settings (only {', '.join(sorted(_RESUMABLE_FIELDS))} may change on resume)"
        )


def _progress(enabled: bool) -> Any:
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # On stderr: stdout stays free for results (the CLI's --json).
    return Progress(
        TextColumn("[bold]train[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


# ------------------------------------------------------------------------------------------
# the training loop
# ------------------------------------------------------------------------------------------


def train(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Run (or resume) flow-matching training as configured; see the module docstring.

    Under ``torchrun`` every rank calls this (rank 0 writes the files); in a plain process it
    trains on one device. Joins and leaves the process group unless the caller already did.
    """
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(config.device)
    try:
        return _train(config, info, progress and info.is_main)
    finally:
        if owns_group:
            cleanup(info)


def _train(cfg: TrainConfig, info: DistInfo, show_progress: bool) -> TrainResult:
    from linear_dit.checkpoint import save

    t0 = time.monotonic()
    device = info.device
    amp_dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" and device.type == "cuda" else None
    out = Path(cfg.out_dir)
    state_path = out / STATE_FILE
    resume = _load_state(state_path) if cfg.resume and state_path.exists() else None
    if resume is not None:
        _check_resumable(resume["config"], cfg, state_path)
    train_data, val_data = _load_data(cfg)

    if resume is not None:
        model = LinearDiT(LinearDiTConfig.model_validate_json(resume["model_config"]))
        model.load_state_dict(resume["model"], strict=True)
        model.train()
    else:
        model = build_model(cfg)
    arch = model.config
    _check_data(arch, train_data, f"data set {cfg.data}")
    if val_data is not None:
        _check_data(arch, val_data, f"validation set {cfg.val_data or cfg.data}")
    shift = cfg.flow_shift if cfg.flow_shift is not None else arch.flow_shift
    model.to(device)
    model.gradient_checkpointing = cfg.gradient_checkpointing
    wrapped = wrap_model(model, info, cfg.strategy)
    net = unwrap(wrapped)  # the (possibly sharded) LinearDiT itself
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    ema = EMA(net, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay is not None else None

    start, history, val_history = 0, [], []
    if resume is not None:
        start = int(resume["step"])
        history, val_history = list(resume["history"]), list(resume["val_history"])
        load_optimizer_state(wrapped, opt, resume["optimizer"])
        if ema is not None:
            if resume.get("ema") is None:
                raise TrainingError(f"{state_path} holds no EMA state but ema_decay is set")
            ema.load_state_dict(resume["ema"])
        torch.set_rng_state(resume["rng"]["torch"])
        if device.type == "cuda" and resume["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resume["rng"]["cuda"], device)
    if start > cfg.steps:
        raise TrainingError(f"{state_path} is at step {start}, past the configured steps={cfg.steps}")
    end = cfg.steps if cfg.stop_at_step is None else min(cfg.steps, max(cfg.stop_at_step, start))

    stream = _SampleStream(len(train_data), cfg.seed)
    val_bs = cfg.val_batch_size or cfg.batch_size

    def validate() -> float:
        assert val_data is not None  # callers check
        return validation_loss(
            wrapped,
            val_data,
            timesteps=cfg.val_timesteps,
            seed=cfg.val_seed,
            batch_size=val_bs,
            max_timestep=arch.max_timestep,
            autocast_dtype=amp_dtype,
            info=info,
        )

    log_file = out / LOG_FILE

    def log(entry: dict[str, float]) -> None:
        if info.is_main:
            with open(log_file, "a") as fh:
                fh.write(json.dumps({**entry, "elapsed_s": round(time.monotonic() - t0, 2)}) + "\n")

    def save_state(step: int) -> None:
        # Gathering is collective: every rank takes part, rank 0 writes.
        state = {
            "format": _STATE_FORMAT,
            "step": step,
            "config": cfg.model_dump_json(),
            "model_config": arch.model_dump_json(),
            "model": full_state_dict(wrapped, keep=info.is_main),
            "optimizer": optimizer_state(wrapped, opt),
            "ema": ema.state_dict(keep=info.is_main) if ema is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            },
            "history": history,
            "val_history": val_history,
            # The data order is a function of (seed, step, world size, batch size); recorded for reference.
            "data": {
                "seed": cfg.seed,
                "world_size": info.world_size,
                "batch_size": cfg.batch_size,
                "samples_seen": step * info.world_size * cfg.batch_size,
                "num_train": len(train_data),
            },
        }
        if info.is_main:
            _atomic_torch_save(state, state_path)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if resume is None:
            log_file.unlink(missing_ok=True)
    if resume is None and val_data is not None:
        v0 = validate()
        val_history.append({"step": 0.0, "val_loss": v0})
        log({"step": 0.0, "val_loss": v0})

    # Loss and grad-norm sums stay on the device, so a step never waits for the host.
    window = torch.zeros(2, dtype=torch.float64, device=device)
    window_n = 0
    step = start
    lr = _lr_at(cfg, step)
    stopped_early = False
    with _progress(show_progress) as prog:
        task = prog.add_task("flow matching", total=cfg.steps, completed=start) if prog is not None else None
        while step < end:
            lr = _lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = stream.indices(step, info.rank, info.world_size, cfg.batch_size)
            x0, y, mask, t, noise = _training_batch(cfg, train_data, idx, step, info.rank, shift, device)
            with _autocast(device, amp_dtype):
                loss = flow_matching_loss(wrapped, x0, y, mask, t=t, noise=noise, max_timestep=arch.max_timestep)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.zeros((), device=device)
            if cfg.grad_clip is not None:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                full = getattr(grad_norm, "full_tensor", None)
                if full is not None:  # a DTensor under FSDP2
                    grad_norm = full()
            opt.step()
            if ema is not None:
                ema.update(net)
            step += 1
            window += torch.stack([loss.detach().double(), grad_norm.detach().double()])
            window_n += 1

            if step % cfg.log_every == 0 or step == end:
                mean = all_reduce_sum(window, info) / (window_n * info.world_size)
                entry = {"step": float(step), "lr": lr, "loss": float(mean[0])}
                if cfg.grad_clip is not None:
                    entry["grad_norm"] = float(mean[1])
                window, window_n = torch.zeros_like(window), 0
                if not math.isfinite(entry["loss"]):
                    raise TrainingError(f"loss is not finite at step {step} ({entry}); lower lr or check the data")
                history.append(entry)
                log(entry)
                if prog is not None:
                    prog.update(task, description=f"loss {entry['loss']:.4f}")
            if val_data is not None and step % cfg.val_every == 0 and step < end:
                v = validate()
                val_history.append({"step": float(step), "val_loss": v})
                log({"step": float(step), "val_loss": v})
            if prog is not None:
                prog.update(task, completed=step)
            if step % cfg.save_every == 0 and step < end:
                save_state(step)
            if cfg.max_minutes is not None and step < end:
                if any_rank(time.monotonic() - t0 >= cfg.max_minutes * 60.0, info):
                    stopped_early = True
                    break

    final_val: float | None = None
    final_val_ema: float | None = None
    if val_data is not None:
        final_val = validate()
        entry = {"step": float(step), "val_loss": final_val}
        if ema is not None:
            with ema.swapped_into(net):
                final_val_ema = entry["val_loss_ema"] = validate()
        if val_history and val_history[-1]["step"] == float(step):
            val_history[-1] = entry  # a resumed run that had nothing left to do
        else:
            val_history.append(entry)
        log(entry)
    save_state(step)

    raw_state = full_state_dict(wrapped)
    ema_state = ema.full_shadow() if ema is not None else None
    raw = LinearDiT(arch)
    raw.load_state_dict(raw_state, strict=True)
    final = raw
    if ema_state is not None:
        final = LinearDiT(arch)
        final.load_state_dict(ema_state, strict=True)
    final = final.float().eval()
    model_path = raw_path = None
    if info.is_main:
        model_path = save(final, out / MODEL_FILE)
        if ema_state is not None:
            raw_path = save(raw.eval(), out / RAW_MODEL_FILE)
    barrier(info)
    initial = next((v["val_loss"] for v in val_history if v["step"] == 0.0), None)
    return TrainResult(
        step=step,
        completed=not stopped_early and step == cfg.steps,
        precision="bf16" if amp_dtype is not None else "fp32",
        history=history,
        val_history=val_history,
        final_loss=history[-1]["loss"] if history else None,
        initial_val_loss=initial,
        final_val_loss=final_val,
        final_val_loss_ema=final_val_ema,
        wall_seconds=time.monotonic() - t0,
        model_path=model_path,
        raw_model_path=raw_path,
        state_path=state_path if info.is_main else None,
        model=final,
    )
