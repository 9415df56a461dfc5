"""LoRA on an SVDQuant model without re-quantization: merge by rank concatenation into the 16-bit branch.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.4 ("integration with LoRA"), following the Nunchaku engine (reference notes, Sec. 2.3). A quantized layer
computes ``y = Q(x / s) @ Q(R)^T + (x @ proj_down) @ proj_up^T`` where the low-rank branch acts on the *raw*
(unsmoothed) input. A LoRA ``delta(x) = scale * (x @ A^T) @ B^T`` (``A`` ``[r, K]``, ``B`` ``[N, r]``) acts on the
same raw input, so it is merged exactly by concatenating ranks::

    proj_down < -cat([proj_down, A ^ T], dim=1)  # [K, R + r]
    proj_up < -cat([proj_up, strength * scale * B], dim=1)  # [N, R + r]

The 4-bit weight, the scales and the smoothing are untouched, so nothing is re-quantized; the cost is the extra
rank in the 16-bit branch. Several LoRAs stack, each with its own strength (negative and ``|strength| > 1``
allowed), and each can be re-weighted, removed, or all reset to the base branch bit-identically.

Targets are any module that follows the low-rank-branch protocol: buffers ``proj_down`` ``[K, R]`` and
``proj_up`` ``[N, R]`` and attributes ``in_features``/``out_features`` (``svdquant.svdq_linear.SVDQLinear``).

Bookkeeping (base rank, which columns belong to which LoRA, each LoRA's unscaled ``B`` so strengths can be changed
without drift) lives in a plain attribute of each target module (``_svdq_lora``), never in the state dict. Saving
a model with merged LoRAs therefore saves the *merged* branch (``proj_down``/``proj_up`` of rank ``R + sum r``) and
loses the record: once loaded, the LoRAs are part of the base branch and cannot be removed. Call
:func:`reset_lora` before saving to keep the base checkpoint.

Accepted state-dict layouts (a mapping of tensors, or a path to a ``.safetensors`` file):

- PEFT / diffusers: ``<module>.lora_A.weight`` ``[r, K]``, ``<module>.lora_B.weight`` ``[N, r]`` (also with a
  PEFT adapter name, ``<module>.lora_A.<adapter>.weight``), optional ``<module>.alpha`` or ``<module>.lora_alpha``;
- old diffusers: ``<module>.lora.down.weight`` / ``<module>.lora.up.weight``;
- kohya: ``<module>.lora_down.weight`` / ``<module>.lora_up.weight`` / ``<module>.alpha``, where the module name
  may have its dots replaced by underscores (``lora_unet_blocks_0_attn_to_q``).

The scale is ``alpha / r`` when an alpha is present, else 1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor, nn

from svdquant.errors import InputError

__all__ = [
    "DEFAULT_LORA_PREFIXES",
    "LoraHandle",
    "applied_loras",
    "apply_lora",
    "load_lora_state_dict",
    "remove_lora",
    "reset_lora",
    "set_lora_strength",
]

DEFAULT_LORA_PREFIXES: tuple[str, ...] = (
    "base_model.model.",
    "transformer.",
    "unet.",
    "diffusion_model.",
    "model.diffusion_model.",
    "lora_unet_",
    "lora_transformer_",
)
"""Prefixes tried (each only where the stripped name then names a target) when ``prefix=None``."""

_RECORD_ATTR = "_svdq_lora"

# (regex, role); the module name is group 1. The adapter-name variant is tried after the plain one, and it needs a
# non-empty segment between the role and ".weight", so "m.lora_A.weight" never parses as adapter "weight".
_KEY_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(.+)\.lora_A\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_B\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora_A\.[^.]+\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_B\.[^.]+\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora_down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora_up\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora\.down\.weight$"), "down"),
    (re.compile(r"^(.+)\.lora\.up\.weight$"), "up"),
    (re.compile(r"^(.+)\.lora_alpha$"), "alpha"),
    (re.compile(r"^(.+)\.alpha$"), "alpha"),
)


@dataclass
class _LoraEntry:
    name: str
    rank: int
    scale: float
    strength: float
    up: Tensor  # unscaled B [N, r], float32, on the module's device: strengths are re-applied from it, no drift


@dataclass
class _LoraRecord:
    base_rank: int
    entries: list[_LoraEntry] = field(default_factory=list)

    def columns(self, name: str) -> tuple[int, int]:
        start = self.base_rank
        for e in self.entries:
            if e.name == name:
                return start, start + e.rank
            start += e.rank
        raise KeyError(name)


@dataclass(frozen=True)
class LoraHandle:
    """What :func:`apply_lora` merged: the LoRA's name and, per target module, its name, rank and scale.

    ``set_strength`` and ``remove`` are shortcuts for :func:`set_lora_strength` / :func:`remove_lora`.
    """

    name: str
    modules: tuple[str, ...]
    ranks: tuple[int, ...]
    scales: tuple[float, ...]
    model: nn.Module = field(repr=False, compare=False)

    def set_strength(self, strength: float) -> None:
        """Re-weight this LoRA on every module it was merged into."""
        set_lora_strength(self.model, self.name, strength)

    def remove(self) -> None:
        """Unmerge this LoRA, leaving the others in place."""
        remove_lora(self.model, self.name)


@dataclass
class _Pending:
    """One LoRA module (A, B, optional alpha) parsed from the state dict, before it is merged."""

    down: Tensor | None = None
    up: Tensor | None = None
    alpha: Tensor | float | None = None
    keys: list[str] = field(default_factory=list)
    role_keys: dict[str, str] = field(default_factory=dict)


def _is_target(module: nn.Module) -> bool:
    return (
        isinstance(getattr(module, "proj_down", None), Tensor)
        and isinstance(getattr(module, "proj_up", None), Tensor)
        and hasattr(module, "in_features")
        and hasattr(module, "out_features")
    )


def load_lora_state_dict(path: str | PathLike[str]) -> dict[str, Tensor]:
    """Load a LoRA state dict from a ``.safetensors`` file (on CPU)."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise InputError(f"LoRA file: expected an existing .safetensors file, found no file at {str(p)!r}")
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # safetensors raises its own error types; re-raise with the path
        raise InputError(f"LoRA file {str(p)!r}: expected a safetensors file, could not read it ({exc})") from exc


def _check_finite(key: str, t: Tensor) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(f"LoRA tensor {key!r}: expected finite values, found NaN or Inf")


def _resolve(
    lora_module: str,
    targets: Mapping[str, nn.Module],
    underscored: Mapping[str, list[str]],
    prefixes: Sequence[str],
    name_map: Callable[[str], str] | None,
) -> str | None:
    """The target module name for a LoRA module name, or None when none matches."""
    name = name_map(lora_module) if name_map is not None else lora_module
    candidates = [name] + [name[len(p) :] for p in prefixes if name.startswith(p) and len(name) > len(p)]
    found: set[str] = set()
    for cand in candidates:
        if cand in targets:
            found.add(cand)
        else:
            # kohya writes module paths with "_" for "."; match against the model's names written the same way
            found.update(underscored.get(cand, ()))
    if len(found) > 1:
        raise InputError(
            f"LoRA module {lora_module!r}: expected it to name one target module, found several: {sorted(found)}"
        )
    return next(iter(found), None)


def _scalar(key: str, value: Tensor | float) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InputError(f"LoRA alpha {key!r}: expected a scalar, found shape {tuple(value.shape)}")
        out = float(value.reshape(()).item())
    else:
        out = float(value)
    if not math.isfinite(out):
        raise InputError(f"LoRA alpha {key!r}: expected a finite number, found {out}")
    return out


def apply_lora(
    model: nn.Module,
    lora: Mapping[str, Tensor] | str | PathLike[str],
    strength: float = 1.0,
    *,
    name: str = "lora0",
    prefix: str | Sequence[str] | None = None,
    name_map: Callable[[str], str] | None = None,
) -> LoraHandle:
    """Merge a LoRA into the low-rank branches of ``model`` by rank concatenation, without re-quantizing.

    ``lora`` is a state dict (or a ``.safetensors`` path) in PEFT/diffusers or kohya layout. Each LoRA module
    name is first passed through ``name_map`` (when given), then matched to a target module name as is, or with
    one prefix stripped: ``prefix`` when given (a string or several), else :data:`DEFAULT_LORA_PREFIXES`. Kohya
    names with underscores for dots also match.

    Every key must be consumed; all keys are checked (names, shapes, finiteness) before any module is changed,
    so on error the model is left as it was. ``name`` identifies this LoRA for :func:`set_lora_strength` and
    :func:`remove_lora`; it must not already be applied.
    """
    if not math.isfinite(float(strength)):
        raise InputError(f"LoRA {name!r}: expected a finite strength, found {strength}")
    sd: Mapping[str, Tensor] = load_lora_state_dict(lora) if isinstance(lora, (str, PathLike)) else lora
    if len(sd) == 0:
        raise InputError(
            f"LoRA {name!r}: expected a state dict with lora_A/lora_B (or lora_down/lora_up) keys, found none"
        )

    targets = {n: m for n, m in model.named_modules() if _is_target(m)}
    if not targets:
        raise InputError(
            "apply_lora: expected a model with low-rank-branch modules (proj_down/proj_up buffers), found none"
        )
    for tname, m in targets.items():
        rec = getattr(m, _RECORD_ATTR, None)
        if rec is not None and any(e.name == name for e in rec.entries):
            raise InputError(
                f"LoRA name {name!r}: expected a new name, found it already applied (on {tname!r}); "
                "remove it first or pick another name"
            )
    underscored: dict[str, list[str]] = {}
    for tname in targets:
        underscored.setdefault(tname.replace(".", "_"), []).append(tname)
    prefixes: tuple[str, ...] = (
        DEFAULT_LORA_PREFIXES if prefix is None else (prefix,) if isinstance(prefix, str) else tuple(prefix)
    )

    # Parse: group keys by LoRA module name. Keys that match no pattern stay unconsumed.
    pending: dict[str, _Pending] = {}
    unconsumed: list[str] = []
    for key, value in sd.items():
        for pattern, role in _KEY_PATTERNS:
            match = pattern.match(key)
            if match is None:
                continue
            entry = pending.setdefault(match.group(1), _Pending())
            if getattr(entry, role) is not None:
                raise InputError(f"LoRA key {key!r}: expected one {role} tensor per module, found a duplicate")
            setattr(entry, role, value)
            entry.keys.append(key)
            entry.role_keys[role] = key
            break
        else:
            unconsumed.append(key)

    # Resolve and validate every module before touching the model.
    plan: dict[str, tuple[Tensor, Tensor, float, list[str]]] = {}
    for mod_name, p in pending.items():
        if p.down is None or p.up is None:
            unconsumed.extend(p.keys)  # an A without B (or alpha alone) cannot be merged
            continue
        target = _resolve(mod_name, targets, underscored, prefixes, name_map)
        if target is None:
            unconsumed.extend(p.keys)
            continue
        if target in plan:
            raise InputError(
                f"LoRA module {mod_name!r}: expected one LoRA module per target, found a second one for {target!r} "
                f"(keys {plan[target][3]} and {p.keys})"
            )
        down_key, up_key = p.role_keys["down"], p.role_keys["up"]
        a, b = p.down, p.up
        m = targets[target]
        k_in, n_out = int(m.in_features), int(m.out_features)
        if a.dim() != 2 or a.shape[1] != k_in:
            raise InputError(
                f"LoRA key {down_key!r}: expected shape [r, {k_in}] (in_features of {target!r}), found {tuple(a.shape)}"
            )
        if b.dim() != 2 or b.shape[0] != n_out:
            raise InputError(
                f"LoRA key {up_key!r}: expected shape [{n_out}, r] (out_features of {target!r}), found {tuple(b.shape)}"
            )
        if a.shape[0] != b.shape[1] or a.shape[0] == 0:
            raise InputError(
                f"LoRA keys {down_key!r} / {up_key!r}: expected the same non-zero rank, found {tuple(a.shape)} "
                f"and {tuple(b.shape)}"
            )
        if not (a.is_floating_point() and b.is_floating_point()):
            raise InputError(f"LoRA keys {down_key!r} / {up_key!r}: expected float tensors, found {a.dtype}/{b.dtype}")
        _check_finite(down_key, a)
        _check_finite(up_key, b)
        rank = int(a.shape[0])
        scale = 1.0 if p.alpha is None else _scalar(mod_name + ".alpha", p.alpha) / rank
        plan[target] = (a, b, scale, p.keys)

    if unconsumed:
        sample = sorted(targets)[:8]
        raise InputError(
            f"LoRA {name!r}: expected every key to be merged into a target module, found {len(unconsumed)} "
            f"unconsumed: {sorted(unconsumed)}. Targets look like {sample}; pass prefix= or name_map= to map names"
        )
    if not plan:
        raise InputError(f"LoRA {name!r}: expected at least one lora A/B pair, found none")

    # Merge. Nothing below can fail on user input, so the model is never left half-merged.
    names, ranks, scales = [], [], []
    for target, (a, b, scale, _keys) in plan.items():
        m = targets[target]
        down: Tensor = m.proj_down
        up: Tensor = m.proj_up
        rec = getattr(m, _RECORD_ATTR, None)
        if rec is None:
            rec = _LoraRecord(base_rank=int(down.shape[1]))
            setattr(m, _RECORD_ATTR, rec)
        b32 = b.detach().to(device=up.device, dtype=torch.float32).clone()
        new_up = (b32 * (float(strength) * scale)).to(up.dtype)
        _set_branch(m, "proj_down", torch.cat([down, a.detach().to(device=down.device, dtype=down.dtype).T], dim=1))
        _set_branch(m, "proj_up", torch.cat([up, new_up], dim=1))
        rec.entries.append(_LoraEntry(name=name, rank=int(a.shape[0]), scale=scale, strength=float(strength), up=b32))
        names.append(target)
        ranks.append(int(a.shape[0]))
        scales.append(scale)
    return LoraHandle(name=name, modules=tuple(names), ranks=tuple(ranks), scales=tuple(scales), model=model)


def _set_branch(m: nn.Module, attr: str, value: Tensor) -> None:
    # Buffers take a plain tensor; a module that keeps the branch as a Parameter gets a frozen Parameter back.
    if isinstance(getattr(m, attr), nn.Parameter):
        value = nn.Parameter(value, requires_grad=False)
    setattr(m, attr, value)


def _records(model: nn.Module) -> Iterable[tuple[str, nn.Module, _LoraRecord]]:
    for n, m in model.named_modules():
        rec = getattr(m, _RECORD_ATTR, None)
        if isinstance(rec, _LoraRecord):
            yield n, m, rec


def _with_lora(model: nn.Module, name: str) -> list[tuple[nn.Module, _LoraRecord, _LoraEntry]]:
    found = [(m, rec, e) for _, m, rec in _records(model) for e in rec.entries if e.name == name]
    if not found:
        raise InputError(f"LoRA {name!r}: expected it to be applied, found only {sorted(applied_loras(model))}")
    return found


def applied_loras(model: nn.Module) -> dict[str, float]:
    """The LoRAs merged into ``model``, name -> strength, in the order they were applied."""
    out: dict[str, float] = {}
    for _, _, rec in _records(model):
        for e in rec.entries:
            out.setdefault(e.name, e.strength)
    return out


def set_lora_strength(model: nn.Module, name: str, strength: float) -> None:
    """Re-weight one merged LoRA: only its columns of ``proj_up`` change, recomputed from the unscaled ``B``."""
    if not math.isfinite(float(strength)):
        raise InputError(f"LoRA {name!r}: expected a finite strength, found {strength}")
    for m, rec, e in _with_lora(model, name):
        start, stop = rec.columns(name)
        up: Tensor = m.proj_up  # type: ignore[assignment]
        new_up = up.clone()
        new_up[:, start:stop] = (e.up * (float(strength) * e.scale)).to(up.dtype)
        _set_branch(m, "proj_up", new_up)
        e.strength = float(strength)


def remove_lora(model: nn.Module, name: str) -> None:
    """Unmerge one LoRA: drop its columns of ``proj_down``/``proj_up``; the other columns keep their exact values."""
    for m, rec, e in _with_lora(model, name):
        start, stop = rec.columns(name)
        down: Tensor = m.proj_down  # type: ignore[assignment]
        up: Tensor = m.proj_up  # type: ignore[assignment]
        _set_branch(m, "proj_down", torch.cat([down[:, :start], down[:, stop:]], dim=1))
        _set_branch(m, "proj_up", torch.cat([up[:, :start], up[:, stop:]], dim=1))
        rec.entries.remove(e)
        if not rec.entries:
            delattr(m, _RECORD_ATTR)


def reset_lora(model: nn.Module) -> None:
    """Unmerge every LoRA: each branch goes back to its base rank, bit-identical to before the first merge."""
    for _, m, rec in list(_records(model)):
        down: Tensor = m.proj_down  # type: ignore[assignment]
        up: Tensor = m.proj_up  # type: ignore[assignment]
        _set_branch(m, "proj_down", down[:, : rec.base_rank].contiguous())
        _set_branch(m, "proj_up", up[:, : rec.base_rank].contiguous())
        delattr(m, _RECORD_ATTR)
