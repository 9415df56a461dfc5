"""Load and save Llama-family models in the Hugging Face folder layout, with strict key checks.

Lin et al., "QServe: W4A8KV4 Quantization and System Co-design for Efficient LLM Serving" (arXiv 2405.04532),
Sec. 6: QServe starts from the released HF checkpoints of the models it serves. A folder holds ``config.json``
and either ``model.safetensors`` or shards ``model-0000i-of-0000n.safetensors`` listed by
``model.safetensors.index.json``. Loading is all or nothing: a missing file, a missing, unexpected or misshaped
tensor is a :class:`CheckpointError` naming it, never a half-loaded model. Saving writes a temporary folder and
renames it into place, so an interrupted save never leaves a half-written folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from qserve.config import LlamaConfig
from qserve.errors import CheckpointError, ConfigError
from qserve.model import LlamaForCausalLM

__all__ = ["INDEX_NAME", "WEIGHTS_NAME", "expected_keys", "load_config", "load_model", "save_model"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# Buffers some older HF Llama checkpoints saved; they are recomputed from the config.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def load_config(folder: str | Path) -> LlamaConfig:
    """The :class:`LlamaConfig` of ``folder/config.json``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"model folder {folder} has no {CONFIG_NAME}")
    try:
        hf = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(hf, dict):
        raise CheckpointError(f"{path} must hold a JSON object, found {type(hf).__name__}")
    try:
        return LlamaConfig.from_hf(hf)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def expected_keys(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape of a model of ``config`` (no ``lm_head.weight`` when embeddings are tied)."""
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        del shapes["lm_head.weight"]
    return shapes


def _weight_files(folder: Path) -> dict[str, Path]:
    """Tensor key -> the file holding it, from the index (sharded) or the single weights file."""
    index = folder / INDEX_NAME
    single = folder / WEIGHTS_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index with a 'weight_map': {e}") from e
        files = {k: folder / str(f) for k, f in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise CheckpointError(f"{index} lists shard {f.name}, which is missing from {folder}")
        return files
    if single.is_file():
        try:
            with safe_open(str(single), framework="pt") as sf:
                return dict.fromkeys(sf.keys(), single)
        except Exception as e:  # safetensors raises its own error types for truncated or foreign files
            raise CheckpointError(f"{single} is not a readable safetensors file: {e}") from e
    raise CheckpointError(f"model folder {folder} has neither {WEIGHTS_NAME} nor {INDEX_NAME}")


def load_model(
    folder: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> LlamaForCausalLM:
    """Load the HF-layout model in ``folder`` (float tensors cast to ``dtype``), in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"model folder {folder} does not exist")
    config = load_config(folder)
    files = _weight_files(folder)
    want = expected_keys(config)
    have = {k for k in files if not k.endswith(_IGNORED_SUFFIXES)}
    tied = config.tie_word_embeddings
    if tied:
        have.discard("lm_head.weight")  # some exporters save the tied head too; it is checked below
    missing, unexpected = sorted(set(want) - have), sorted(have - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint in {folder} does not match its {config.architecture} config: missing keys "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}), unexpected keys "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} ({len(unexpected)})"
        )
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for k in want:
        by_file.setdefault(files[k], []).append(k)
    for path, keys in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as sf:
                for k in keys:
                    t = sf.get_tensor(k)
                    if tuple(t.shape) != want[k]:
                        raise CheckpointError(f"{path.name}: tensor {k} has shape {tuple(t.shape)}, expected {want[k]}")
                    state[k] = t.to(dtype) if t.is_floating_point() else t
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"cannot read {path}: {e}") from e
    if tied and "lm_head.weight" in files:
        with safe_open(str(files["lm_head.weight"]), framework="pt", device=str(device)) as sf:
            head = sf.get_tensor("lm_head.weight").to(dtype)
        if head.shape != state["model.embed_tokens.weight"].shape or not torch.equal(
            head, state["model.embed_tokens.weight"]
        ):
            raise CheckpointError(
                f"config of {folder} ties the embeddings but lm_head.weight differs from model.embed_tokens.weight"
            )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


def _checkpoint_state(model: LlamaForCausalLM) -> dict[str, torch.Tensor]:
    want = expected_keys(model.config)
    state = dict(model.state_dict())
    if model.config.tie_word_embeddings:
        if not model.embeddings_tied:
            raise CheckpointError("config says tie_word_embeddings but lm_head has its own weight; untie the config")
        state.pop("lm_head.weight")
    if set(state) != set(want):
        extra, lost = sorted(set(state) - set(want)), sorted(set(want) - set(state))
        raise CheckpointError(
            f"save_model writes plain (unquantized) models only; unexpected tensors {extra[:8]}, missing {lost[:8]}"
        )
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_model(
    model: LlamaForCausalLM,
    folder: str | Path,
    max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
) -> Path:
    """Write ``model`` to ``folder`` in the HF layout (shards when its tensors exceed ``max_shard_bytes``).

    ``extra_files`` (name -> content, e.g. ``tokenizer.json``) are written into the same atomic folder. An
    existing ``folder`` is replaced as a whole.
    """
    folder = Path(folder)
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise CheckpointError(f"max_shard_bytes must be positive, found {max_shard_bytes}")
    state = _checkpoint_state(model)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        nbytes = state[k].numel() * state[k].element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += nbytes
    hf_config: dict[str, Any] = model.config.to_hf()
    hf_config["torch_dtype"] = str(next(iter(state.values())).dtype).removeprefix("torch.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2) + "\n")
        if len(shards) == 1:
            save_file(shards[0], str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        else:
            n = len(shards)
            weight_map: dict[str, str] = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{n:05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(v.numel() * v.element_size() for v in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for name, content in (extra_files or {}).items():
            if Path(name).name != name:
                raise CheckpointError(f"extra file names must be plain file names, found {name!r}")
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            old.rename(folder)  # the swap failed half-way: put the previous folder back
        raise
    return folder
