"""One-file safetensors checkpoints of QoQ-quantized models (format ``qserve/1``).

Lin et al., "QServe" (arXiv 2405.04532), Sec. 5. The tensors are the model's ``state_dict`` under the Hugging
Face names, with every decoder linear stored in the QServe layout (``qweight``, ``s1_scales``, ``s2_scales``/
``s2_zeros`` or ``s1_szeros``, ``bias``). The safetensors metadata holds ``format`` = ``qserve/1``,
``quantization_config`` (the :class:`~qserve.qoq.QoQConfig` as JSON) and ``model_config`` (the
:class:`~qserve.config.LlamaConfig` as JSON), which is all :func:`load_quantized` needs to rebuild the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import save_file

from qserve.config import LlamaConfig
from qserve.errors import CheckpointError
from qserve.model import LlamaForCausalLM
from qserve.qoq import DECODER_LINEARS, QoQConfig
from qserve.quant.formats import weight_from_tensors
from qserve.quant.kv import KVQuantizer
from qserve.quant.w4a8_linear import QuantLinear, quant_linear_from_state

__all__ = ["FORMAT", "load_quantized", "save_quantized"]

FORMAT = "qserve/1"


def save_quantized(model: LlamaForCausalLM, path: str | Path) -> None:
    """Write a model quantized by :func:`~qserve.qoq.quantize_` to one ``.safetensors`` file."""
    config = getattr(model, "quantization_config", None)
    if not isinstance(config, QoQConfig):
        raise CheckpointError("save_quantized expects a model quantized by qserve.quantize_, found no QoQConfig")
    state = model.state_dict()
    if model.embeddings_tied:
        state.pop("lm_head.weight", None)  # one storage; the config's tie flag restores it
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {
        "format": FORMAT,
        "quantization_config": config.model_dump_json(),
        "model_config": model.config.model_dump_json(),
    }
    save_file(tensors, str(path), metadata=metadata)


def load_quantized(path: str | Path, device: str | torch.device = "cpu") -> LlamaForCausalLM:
    """Rebuild the quantized model saved by :func:`save_quantized` (exact: same codes, scales and floats)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"quantized checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: expected metadata format {FORMAT!r}, found {metadata.get('format')!r}")
    try:
        qconfig = QoQConfig.model_validate(json.loads(metadata["quantization_config"]))
        mconfig = LlamaConfig.model_validate(json.loads(metadata["model_config"]))
    except (KeyError, ValueError, ValidationError) as e:
        raise CheckpointError(f"{path}: invalid quantization_config/model_config metadata: {e}") from e
    model = LlamaForCausalLM(mconfig)
    emb = tensors.get("model.embed_tokens.weight")
    if emb is None:
        raise CheckpointError(f"{path}: missing tensor model.embed_tokens.weight")
    model.to(emb.dtype)
    if model.embeddings_tied and "lm_head.weight" not in tensors:
        tensors["lm_head.weight"] = emb  # the tied head is the embedding Parameter; saved once
    for i, layer in enumerate(model.model.layers):
        for name in DECODER_LINEARS:
            prefix = f"model.layers.{i}.{name}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            weight_from_tensors(part, prefix[:-1])  # names, dtypes and shapes
            parent_name, _, attr = name.rpartition(".")
            parent = layer.get_submodule(parent_name)
            old = getattr(parent, attr)
            new: QuantLinear = quant_linear_from_state(part, old.in_features, old.out_features)
            setattr(parent, attr, new)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: tensors do not match the model: {e}") from e
    model.kv_quant = KVQuantizer(qconfig.kv_bits) if qconfig.kv_bits != 16 else None
    model.quantization_config = qconfig  # type: ignore[assignment]
    return model.to(device).eval()
