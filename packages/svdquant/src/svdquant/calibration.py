"""Calibration data for :func:`svdquant.quantize_`: bounded input captures, shared-input detection, block streaming.

Li et al., "SVDQuant: Absorbing Outliers by Low-Rank Components for 4-Bit Diffusion Models" (ICLR 2025),
Sec. 4.2 (the smoothing search and the low-rank branch are scored on each layer's own calibration inputs) and
Sec. 5.1 (calibration on a few prompts' activations).

Each targeted layer gets a :class:`_Capture`: a bounded, uniform random subsample of its input rows (at most
``max_calibration_tokens``, by keeping the rows with the smallest random keys, so every row seen has the same
chance whatever batch it came in) plus exact per-channel minima and maxima over every row, which set the smoothing
spans and the unsigned shift. A 1x1 convolution's ``[B, C, H, W]`` input is captured as ``[B H W, C]`` rows.

Each capture also records which input tensor *object* the layer received in every call (:class:`InputTokens`):
layers that received the very same object in every call (q/k/v fed one normalised hidden state) read one input
and can share a smoothing and a low-rank down-projection.

Block streaming (``calibration_mode="blocks"``, :func:`stream_blocks`): the calibration set runs once through the
float model, which calibrates the targeted layers outside the blocks and caches the ``(args, kwargs)`` of every
call of block 0 (on the CPU by default). Then for each block ``i``: block ``i`` runs on the cached inputs with
capture hooks on its layers, its layers are quantized and swapped in, and the *quantized* block ``i`` runs on the
cached inputs to produce block ``i + 1``'s, which replace them. Memory therefore holds one block's inputs for the
calibration set at a time (two during the hand-over), and every block is calibrated on what the quantized blocks
before it actually produce.

The rule for a block's output: a Tensor replaces the block's hidden-state argument (its first positional
argument, else the keyword ``hidden_states``, ``hidden_state``, ``x`` or ``input``); the other arguments of every
call are those block 0 received (the conditioning is the same for every block of a DiT). Blocks returning tuples
(e.g. FLUX's double-stream blocks return two states) are refused with an error: their outputs cannot be mapped
onto their arguments without knowing the architecture; use ``calibration_mode="whole"`` for them.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from svdquant.config import SVDQuantConfig
from svdquant.errors import InputError, QuantizationError, SVDQuantError

__all__ = ["Calibration", "InputTokens", "find_blocks", "layer_rows", "run_calibration", "stream_blocks"]

Calibration = Callable[[nn.Module], Any] | Iterable[Any]

logger = logging.getLogger("svdquant.calibration")

_HIDDEN_KEYWORDS = ("hidden_states", "hidden_state", "x", "input")


class _Capture:
    """A bounded uniform subsample of one layer's input rows, with exact per-channel min/max over all rows, and
    the token of the input object of every call (see :class:`InputTokens`)."""

    def __init__(self, cap: int, generator: torch.Generator) -> None:
        self.cap, self.gen = cap, generator
        self.rows: Tensor | None = None
        self.keys: Tensor | None = None
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self.nonfinite = 0
        self.seen = 0
        self.tokens: list[int] = []

    def add(self, x: Tensor) -> None:
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        finite = torch.isfinite(x2)
        if not bool(finite.all()):
            # Counted here and reported when the layer is built, so a NaN in any batch is caught.
            self.nonfinite += int((~finite).sum())
            x2 = torch.nan_to_num(x2, nan=0.0, posinf=0.0, neginf=0.0)
        self.seen += x2.shape[0]
        lo, hi = x2.amin(0), x2.amax(0)
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        keys = torch.rand(x2.shape[0], generator=self.gen).to(x2.device)
        rows = x2 if self.rows is None else torch.cat([self.rows, x2])
        keys = keys if self.keys is None else torch.cat([self.keys, keys])
        if rows.shape[0] > self.cap:
            keep = torch.topk(keys, self.cap, largest=False).indices.sort().values
            rows, keys = rows[keep], keys[keep]
        self.rows, self.keys = rows, keys


class InputTokens:
    """Gives each distinct live input tensor object a number, so that layers fed the same object get the same one.

    Objects are told apart by identity through weak references: a new tensor that reuses a dead one's ``id``
    gets a new number.
    """

    def __init__(self) -> None:
        self._live: dict[int, tuple[weakref.ref[Tensor], int]] = {}
        self._next = 0

    def token(self, x: Tensor) -> int:
        entry = self._live.get(id(x))
        if entry is not None and entry[0]() is x:
            return entry[1]
        t = self._next
        self._next += 1
        if len(self._live) > 4096:
            self._live = {k: v for k, v in self._live.items() if v[0]() is not None}
        self._live[id(x)] = (weakref.ref(x), t)
        return t


def layer_rows(module: nn.Module, x: Tensor) -> Tensor:
    """The input of ``module`` with its feature dimension last: a convolution's channels (dim -3) move last."""
    if isinstance(module, nn.Conv2d):
        if x.ndim not in (3, 4):
            raise InputError(f"a Conv2d input must be [B, C, H, W] or [C, H, W], found shape {tuple(x.shape)}")
        return x.movedim(-3, -1)
    return x


def install_captures(
    modules: dict[str, nn.Module], config: SVDQuantConfig, generator: torch.Generator, tokens: InputTokens
) -> tuple[dict[str, _Capture], list[RemovableHandle]]:
    """Forward hooks that feed each module's inputs to a new :class:`_Capture`; remove the handles when done."""
    captures: dict[str, _Capture] = {}
    handles: list[RemovableHandle] = []
    for name, m in modules.items():
        captures[name] = _Capture(config.max_calibration_tokens, generator)

        def hook(
            mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any, cap: _Capture = captures[name]
        ) -> None:
            x = args[0] if args else kwargs["input"]
            cap.tokens.append(tokens.token(x))
            cap.add(layer_rows(mod, x))

        handles.append(m.register_forward_hook(hook, with_kwargs=True))
    return captures, handles


def run_calibration(model: nn.Module, calibration: Calibration) -> None:
    """Feed ``calibration`` through ``model`` under ``torch.no_grad()``: a callable ``run(model)``, or batches
    (a tensor, or a tuple of positional arguments, per batch)."""
    with torch.no_grad():
        if callable(calibration):
            calibration(model)
            return
        for batch in calibration:
            if isinstance(batch, Tensor):
                model(batch)
            elif isinstance(batch, tuple | list):
                model(*batch)
            else:
                found = type(batch).__name__
                raise InputError(
                    f"calibration batches must be tensors or tuples of positional arguments, found {found}"
                )


def run_hooked(model: nn.Module, calibration: Calibration, handles: Sequence[Any]) -> None:
    """Run the calibration data through ``model``, then remove the hook ``handles`` whatever happens; an error
    of the model's own code becomes a :class:`QuantizationError` (the package's errors pass through)."""
    try:
        run_calibration(model, calibration)
    except SVDQuantError:
        raise
    except Exception as e:
        raise QuantizationError(f"quantize_: running the calibration data through the model failed: {e}") from e
    finally:
        for h in handles:
            h.remove()


def find_blocks(model: nn.Module, config: SVDQuantConfig, targets: Sequence[str]) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` streamed in blocks mode: ``config.blocks``, or the one holding the most targets."""
    lists = {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and name}
    if config.blocks is not None:
        try:
            found = model.get_submodule(config.blocks)
        except AttributeError as e:
            raise InputError(
                f"blocks={config.blocks!r} is not a submodule of {type(model).__name__}; "
                f"its ModuleLists are {sorted(lists)}"
            ) from e
        if not isinstance(found, nn.ModuleList):
            raise InputError(
                f"blocks={config.blocks!r} must name an nn.ModuleList of blocks, found {type(found).__name__}; "
                f"the model's ModuleLists are {sorted(lists)}"
            )
        if len(found) == 0:
            raise InputError(f"blocks={config.blocks!r} is an empty ModuleList")
        return config.blocks, found
    counts = {name: sum(t.startswith(f"{name}.") for t in targets) for name in lists}
    best = max(counts, key=counts.__getitem__, default=None)
    if best is None or counts[best] == 0:
        raise InputError(
            f"calibration_mode='blocks': {type(model).__name__} has no nn.ModuleList holding targeted layers; "
            "name one with `blocks=` or use calibration_mode='whole'"
        )
    return best, lists[best]


@dataclass
class _Stored:
    """A cached tensor, with the device it came from (the cache may live on the CPU)."""

    tensor: Tensor
    device: torch.device


def _map(obj: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(obj, Tensor | _Stored):
        return fn(obj)
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_map(o, fn) for o in obj)
    if isinstance(obj, list):
        return [_map(o, fn) for o in obj]
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    return obj


class _BlockCache:
    """The ``(args, kwargs)`` of every calibration call of one block; tensors stored detached (on the CPU if
    ``offload``). The hidden-state argument is at ``self.where`` (an int position or a keyword)."""

    def __init__(self, offload: bool) -> None:
        self.offload = offload
        self.entries: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.where: list[int | str] = []

    def _store(self, obj: Any) -> Any:
        def one(t: Any) -> Any:
            if isinstance(t, _Stored):
                return t
            d = t.detach()
            # A copy also protects the cache from a model that later changes the tensor in place.
            return _Stored(d.to("cpu", copy=True) if self.offload else d, t.device)

        return _map(obj, one)

    def store(self, t: Tensor) -> Any:
        return self._store(t)

    def add(self, args: tuple[Any, ...], kwargs: dict[str, Any], block: str) -> None:
        if args:
            where: int | str = 0
        else:
            key = next((k for k in _HIDDEN_KEYWORDS if isinstance(kwargs.get(k), Tensor)), None)
            if key is None:
                raise InputError(
                    f"block {block!r} was called without a positional argument or a hidden-state keyword "
                    f"({', '.join(_HIDDEN_KEYWORDS)}); found keywords {sorted(kwargs)}: blocks mode cannot tell "
                    "which argument carries the hidden state; use calibration_mode='whole'"
                )
            where = key
        if not isinstance(args[where] if isinstance(where, int) else kwargs[where], Tensor):
            raise InputError(f"block {block!r}: the hidden-state argument {where!r} must be a Tensor")
        self.entries.append((self._store(args), self._store(kwargs)))
        self.where.append(where)

    def replay(self, i: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args, kwargs = self.entries[i]
        return _map(args, lambda s: s.tensor.to(s.device)), _map(kwargs, lambda s: s.tensor.to(s.device))

    def with_hidden(self, outputs: list[Any]) -> _BlockCache:
        """The next block's cache: each entry's hidden state replaced by ``outputs[i]`` (as returned by
        :meth:`store`), the other arguments shared with this cache."""
        new = _BlockCache(self.offload)
        for (args, kwargs), where, stored in zip(self.entries, self.where, outputs, strict=True):
            if isinstance(where, int):
                args = (*args[:where], stored, *args[where + 1 :])
            else:
                kwargs = {**kwargs, where: stored}
            new.entries.append((args, kwargs))
            new.where.append(where)
        return new

    def tensors(self) -> list[Tensor]:
        found: list[Tensor] = []
        for entry in self.entries:
            _map(entry, lambda s: found.append(s.tensor))
        return found


def cached_bytes(*caches: _BlockCache) -> int:
    """Bytes of the distinct tensor storages held by ``caches`` (shared arguments counted once)."""
    seen: dict[tuple[str, int], int] = {}
    for c in caches:
        for t in c.tensors():
            st = t.untyped_storage()
            seen[(str(t.device), st.data_ptr())] = st.nbytes()
    return sum(seen.values())


Build = Callable[[list[str], dict[str, _Capture] | None], None]


def _run_block(name: str, block: nn.Module, cache: _BlockCache, keep: bool) -> list[Any]:
    # Each output is stored (offloaded) as soon as it exists, so the device holds one call's output at a time.
    outs: list[Any] = []
    with torch.no_grad():
        for i in range(len(cache.entries)):
            args, kwargs = cache.replay(i)
            try:
                out = block(*args, **kwargs)
            except SVDQuantError:
                raise
            except Exception as e:
                raise QuantizationError(f"running block {name!r} on its cached calibration inputs failed: {e}") from e
            if not keep:
                continue
            if not isinstance(out, Tensor):
                raise InputError(
                    f"block {name!r} returned {type(out).__name__}; blocks mode needs each block to return its hidden "
                    "state as one Tensor (it replaces the next block's first positional argument, or its "
                    "hidden_states/x keyword); use calibration_mode='whole' for this model"
                )
            outs.append(cache.store(out))
    return outs


def stream_blocks(
    model: nn.Module,
    config: SVDQuantConfig,
    calibration: Calibration,
    modules: dict[str, nn.Module],
    build: Build,
) -> None:
    """Calibrate ``modules`` block by block (see the module docstring), calling ``build(names, captures)`` for
    the layers outside the blocks and then for each block's layers, in order. ``build`` quantizes those layers
    and swaps them into the model (the next block's inputs are computed with them in place); undoing the swaps
    on failure is the caller's job."""
    blocks_name, blocks = find_blocks(model, config, list(modules))
    prefixes = [f"{blocks_name}.{i}." for i in range(len(blocks))]
    inside = [[n for n in modules if n.startswith(p)] for p in prefixes]
    outside = [n for n in modules if not n.startswith(f"{blocks_name}.")]
    gen = torch.Generator().manual_seed(config.seed)
    tokens = InputTokens()
    block0 = f"{blocks_name}.0"

    cache = _BlockCache(config.offload_block_inputs)
    captures, handles = install_captures({n: modules[n] for n in outside}, config, gen, tokens)

    def cache_inputs(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        cache.add(args, kwargs, block0)

    handles.append(blocks[0].register_forward_pre_hook(cache_inputs, with_kwargs=True))
    run_hooked(model, calibration, handles)
    if not cache.entries:
        raise InputError(f"the calibration run never called block {block0!r}; blocks mode has nothing to stream")
    if outside:
        build(outside, captures)
    del captures
    for i, block in enumerate(blocks):
        name = f"{blocks_name}.{i}"
        if inside[i]:
            caps, handles = install_captures({n: modules[n] for n in inside[i]}, config, gen, tokens)
            try:
                _run_block(name, block, cache, keep=False)
            finally:
                for h in handles:
                    h.remove()
            build(inside[i], caps)
            del caps
        if i + 1 < len(blocks):
            nxt = cache.with_hidden(_run_block(name, block, cache, keep=True))
            held = cached_bytes(cache, nxt)
            logger.debug(
                "block %s: %d cached calibration call(s), %d bytes held during the hand-over",
                name,
                len(nxt.entries),
                held,
                extra={"block": i, "cached_bytes": held},
            )
            cache = nxt
