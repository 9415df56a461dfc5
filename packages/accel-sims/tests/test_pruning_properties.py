"""Property tests of the SpAtten selection primitives (hypothesis): top-k picks are exactly the largest entries."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from accel_sims.spatten.head_pruning import select_heads
from accel_sims.spatten.token_pruning import kv_cache_keep, select_top_tokens
from accel_sims.spatten.value_pruning import local_value_prune, value_fetch_count

scores = st.lists(st.integers(0, 20), min_size=1, max_size=24)


@settings(max_examples=60, deadline=None)
@given(scores, st.integers(1, 24))
def test_select_top_tokens_are_the_largest(values: list[int], k: int) -> None:
    imp = torch.tensor([values], dtype=torch.float32)
    n = len(values)
    k = min(k, n)
    index, mask = select_top_tokens(imp, torch.ones(1, n, dtype=torch.bool), torch.tensor([k]))
    picked = index[0][mask[0]].tolist()
    assert len(picked) == k and picked == sorted(picked)
    rest = [values[i] for i in range(n) if i not in picked]
    assert not rest or min(values[i] for i in picked) >= max(rest)


@settings(max_examples=60, deadline=None)
@given(scores, st.floats(0.01, 1.0))
def test_value_pruning_keeps_ceil_ratio_largest(values: list[int], ratio: float) -> None:
    probs = torch.tensor(values, dtype=torch.float32).softmax(0)[None, None, None]
    pruned, kept = local_value_prune(probs, ratio)
    n_kept = int(kept.sum())
    assert n_kept == value_fetch_count(ratio, len(values))
    assert ratio * len(values) - 1e-6 <= n_kept < ratio * len(values) + 1 or n_kept == 1
    kept_p, dropped = probs[kept], probs[~kept]
    assert not dropped.numel() or float(kept_p.min()) >= float(dropped.max())
    assert torch.equal(pruned[~kept], torch.zeros_like(dropped))


@settings(max_examples=60, deadline=None)
@given(scores, st.integers(0, 5), st.integers(0, 8), st.integers(0, 5))
def test_kv_cache_keep_bounds(values: list[int], start: int, important: int, recent: int) -> None:
    n = len(values)
    imp = torch.tensor([values], dtype=torch.float32)
    alive = torch.ones(1, n, dtype=torch.bool)
    keep = kv_cache_keep(imp, alive, start, important, recent)[0]
    protected = {i for i in range(n) if i < start or i >= n - recent}
    assert all(bool(keep[i]) for i in protected)
    assert int(keep.sum()) == min(n, len(protected) + important)
    again = kv_cache_keep(imp, keep[None], start, important, recent)[0]
    assert not (again & ~keep).any()  # a dropped entry never comes back


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=2, max_size=16), st.integers(1, 16))
def test_select_heads_never_revives(values: list[float], k: int) -> None:
    imp = torch.tensor([values])
    alive = torch.tensor([[i % 3 != 0 for i in range(len(values))]])
    out = select_heads(imp, alive, k)
    assert not (out & ~alive).any() and int(out.sum()) == min(k, int(alive.sum()))
