"""The simulator on records emitted from a real model run (all-MiniLM-L6-v2, a 6-layer BERT with 32-wide heads)."""

from __future__ import annotations

from pathlib import Path

from accel_sims.spatten.simulator import compare, dense_baseline, layer_report, simulate


def test_emitted_minilm_workload_simulates(minilm_dir: Path) -> None:
    from accel_sims.spatten.emit import prune
    from accel_sims.spatten.pruning import PruningConfig

    cfg = PruningConfig(
        token_keep_ratios=(1.0, 0.9, 0.8, 0.6, 0.5, 0.4),
        head_keep_ratios=(1.0, 1.0, 1.0, 0.9, 0.8, 0.75),
        value_keep_ratio=0.3,
        quantize=True,
    )
    folder = minilm_dir
    text = "Cascade token pruning removes unimportant tokens for all later layers of the transformer. " * 3
    workload, _ = prune(folder, cfg, text=text)
    assert {r.head_dim for r in workload.records} == {32}  # 16 keys per cycle on 512 multipliers
    result, dense = simulate(workload), simulate(dense_baseline(workload))
    assert len(dense.layers) == len(result.layers) == 6
    assert dense.layers[-1].heads == 12 and result.layers[-1].heads < 12
    ratios = compare(result, dense)
    assert ratios["dram_reduction"] > 2.0 and ratios["speedup"] > 1.0
    rows = layer_report(result, dense)
    assert rows[-1]["dram_reduction"] > rows[0]["dram_reduction"]
