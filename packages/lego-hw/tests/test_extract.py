"""Workload extraction from PyTorch models via forward hooks."""

from __future__ import annotations

import pytest
import torch  # the [test] extra installs it (extraction is the one torch feature of lego-hw)

from lego_hw.errors import LegoError
from lego_hw.extract import extract_layers, extract_workloads
from lego_hw.models import resnet50
from lego_hw.workload import Workload, conv2d, depthwise_conv2d, gemm

nn = torch.nn


def same(a: Workload, b: Workload) -> bool:
    """Equal loop nests (names of the workloads aside)."""
    return (a.loops, a.bounds, a.tensors) == (b.loops, b.bounds, b.tensors)


def test_small_model() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
        nn.Conv2d(8, 6, (1, 3), stride=(1, 2), dilation=(1, 2), padding=(0, 1)),
        nn.Flatten(),
        nn.Linear(6 * 4 * 1, 10),
    )
    wls = extract_workloads(model, torch.zeros(2, 3, 8, 8))
    assert len(wls) == 4
    assert same(wls[0], conv2d(8, 3, 8, 8, 3, 3, stride=1, batch=2))
    assert same(wls[1], depthwise_conv2d(8, 4, 4, 3, 3, stride=2, batch=2))
    assert wls[2].bounds == (2, 6, 8, 4, 1, 1, 3)
    assert wls[2].tensor("I").matrix[3] == (0, 0, 0, 0, 2, 0, 2)  # 2*x + 2*s: stride 2, dilation 2
    assert same(wls[3], gemm(2, 10, 24))
    assert [w.name for w in wls] == ["0", "2", "3", "5"]
    # MACs equal the layers' own: kernel volume x output channels x output pixels x batch.
    assert [w.macs for w in wls] == [3 * 9 * 8 * 2 * 64, 9 * 8 * 2 * 16, 8 * 3 * 6 * 2 * 4, 24 * 10 * 2]


def test_linear_tokens_and_repeated_calls() -> None:
    lin = nn.Linear(16, 32)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(self.lin(x)[..., :16])

    wls = extract_workloads(Twice(), torch.zeros(3, 5, 16))
    assert [w.bounds for w in wls] == [(15, 32, 16), (15, 32, 16)]
    assert extract_workloads(lin, torch.zeros(16))[0].bounds == (1, 32, 16)


def test_grouped_conv_is_rejected_and_hooks_removed() -> None:
    conv = nn.Conv2d(4, 8, 3, groups=2)
    with pytest.raises(LegoError, match="grouped conv"):
        extract_workloads(conv, torch.zeros(1, 4, 6, 6))
    assert not conv._forward_hooks
    with pytest.raises(LegoError, match="channel multiplier"):
        extract_workloads(nn.Conv2d(4, 8, 3, groups=4), torch.zeros(1, 4, 6, 6))


class Bottleneck(nn.Module):
    """torchvision-style ResNet-50 v1.5 bottleneck (stride on the 3x3), defined here: nothing downloaded."""

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.downsample = None
        if stride != 1 or c_in != 4 * width:
            self.downsample = nn.Conv2d(c_in, 4 * width, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))) + idt)


def test_resnet50_stage_matches_models() -> None:
    """layer2 of ResNet-50 (4 bottlenecks, 56x56x256 in) extracts to the same workloads as models.py."""
    stage = nn.Sequential(Bottleneck(256, 128, 2), *[Bottleneck(512, 128, 1) for _ in range(3)])
    layers = extract_layers(stage, torch.zeros(1, 256, 56, 56))
    assert len(layers) == 4 + 3 * 3
    ref = {lay.name: lay for lay in resnet50() if lay.name.startswith("layer2.")}
    first = {"0.conv1", "0.conv2", "0.conv3", "0.downsample"}
    for lay in layers:
        key = f"layer2.{lay.name}" if lay.name in first else f"layer2.1-3.{lay.name.split('.', 1)[1]}"
        assert same(lay.workload, ref[key].workload), lay.name
    counts = {}
    for lay in layers:
        counts[lay.name.split(".", 1)[1]] = counts.get(lay.name.split(".", 1)[1], 0) + 1
    assert counts == {"conv1": 4, "conv2": 4, "conv3": 4, "downsample": 1}
    assert sum(ref[k].count for k in ref) == 13
