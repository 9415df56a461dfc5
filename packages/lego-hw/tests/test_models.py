"""Evaluation model layer lists: ResNet-50 and a BERT-base-like transformer block."""

from __future__ import annotations

import pytest

from lego_hw.errors import LegoError
from lego_hw.models import model_layers, resnet50, total_macs, transformer_block
from lego_hw.workload import conv2d, gemm


def test_resnet50_layers() -> None:
    layers = resnet50()
    assert sum(lay.count for lay in layers) == 54  # 49 convs in blocks + stem + 4 downsample... + fc
    convs = [lay for lay in layers if lay.name != "fc"]
    assert sum(lay.count for lay in convs) == 53
    assert sum(lay.count for lay in layers if "downsample" in lay.name) == 4
    # 4.09 GMACs is the usual figure for ResNet-50 at 224x224 (convs + fc).
    assert total_macs(layers) == 4_089_184_256
    by = {lay.name: lay for lay in layers}
    assert by["conv1"].workload.bounds == conv2d(64, 3, 112, 112, 7, 7, stride=2).bounds
    assert by["conv1"].workload.shape("I") == (1, 3, 229, 229)  # padded input (pad 3, trailing pad unused)
    assert by["layer2.0.conv2"].workload == conv2d(128, 128, 28, 28, 3, 3, stride=2, name="layer2_0_conv2")
    assert by["layer4.1-2.conv3"].count == 2
    assert by["layer4.1-2.conv3"].workload.bounds == (1, 2048, 512, 7, 7, 1, 1)
    assert by["layer3.0.downsample"].workload.bounds == (1, 1024, 512, 14, 14, 1, 1)
    assert by["fc"].workload == gemm(1, 1000, 2048, name="fc")
    assert total_macs(resnet50(batch=2)) == 2 * total_macs(layers)
    with pytest.raises(LegoError, match="divisible by 32"):
        resnet50(image=100)


def test_transformer_block_layers() -> None:
    layers = transformer_block()
    by = {lay.name: lay for lay in layers}
    assert by["qkv_proj"].count == 3 and by["qkv_proj"].workload.bounds == (512, 768, 768)
    assert by["ffn1"].workload.bounds == (512, 3072, 768) and by["ffn2"].workload.bounds == (512, 768, 3072)
    assert by["attn_qk"].workload.bounds == (12, 512, 512, 64)
    assert by["attn_pv"].workload.bounds == (12, 512, 64, 512)
    seq, d, ff = 512, 768, 3072
    assert total_macs(layers) == 4 * seq * d * d + 2 * seq * d * ff + 2 * seq * seq * d
    short = transformer_block(seq=128, batch=2)
    assert {lay.name: lay.workload.bounds for lay in short}["attn_qk"] == (24, 128, 128, 64)
    with pytest.raises(LegoError, match="divisible"):
        transformer_block(d_model=100, heads=12)


def test_model_registry() -> None:
    assert model_layers("transformer", seq=64) == transformer_block(seq=64)
    with pytest.raises(LegoError, match="choose one of"):
        model_layers("vgg16")
    with pytest.raises(LegoError, match="bad arguments"):
        model_layers("resnet50", depth=18)
