"""Workload records from real model runs: they validate, round-trip through CSV and count what was pruned."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from accel_sims.errors import AccelSimsError, ModelLoadError
from accel_sims.models import BertConfig, BertModel, GPT2Config, GPT2Model, save_model
from accel_sims.spatten.attention import run
from accel_sims.spatten.emit import prune, records_from_stats, workload_from_stats
from accel_sims.spatten.pruning import PruningConfig, keep_count
from accel_sims.spatten.workload import read_csv, write_csv


def tiny_bert() -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=60,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=64,
    )
    return BertModel(cfg).eval()


def tiny_gpt2() -> GPT2Model:
    torch.manual_seed(1)
    return GPT2Model(GPT2Config(vocab_size=40, n_positions=128, n_embd=16, n_layer=2, n_head=4)).eval()


def test_encoder_records_count_pruning() -> None:
    m = tiny_bert()
    cfg = PruningConfig(
        token_keep_ratios=(1.0, 0.5, 0.25), head_keep_ratios=(1.0, 0.5, 0.5), value_keep_ratio=0.5, quantize=True
    )
    r = run(m, cfg, torch.randint(0, 60, (1, 20)))
    wl = workload_from_stats(r.stats, cfg, model="tiny-bert")
    per_layer = wl.layers()
    assert sorted(per_layer) == [(0, 0), (0, 1), (0, 2)]
    assert [len(v) for v in per_layer.values()] == [4, 2, 2]  # pruned heads get no record
    for (_, layer), recs in per_layer.items():
        kept = keep_count(cfg.token_keep_ratios[layer], 20)
        for rec in recs:
            assert rec.seq_len == 20 and rec.key_fetch_num == kept and rec.num_queries == kept
            assert rec.value_fetch_num == math.ceil(0.5 * kept)
            assert (rec.key_bits, rec.value_bits, rec.requant_extra_bits) == (6, 8, 4)
            assert rec.accumulate_importance
        assert [r_.topk for r_ in recs] == [False] * (len(recs) - 1) + [layer < 2]
    assert per_layer[(0, 0)][-1].topk_k == 10 and per_layer[(0, 1)][-1].topk_k == 5
    again = read_csv(write_csv(wl))
    assert again.records == wl.records


def test_dense_records_and_requant_off() -> None:
    m = tiny_bert()
    r = run(m, PruningConfig(), torch.randint(0, 60, (2, 9)))
    recs = records_from_stats(r.stats, PruningConfig(), row=1)
    assert len(recs) == 12
    assert all(x.key_fetch_num == x.value_fetch_num == 9 and not x.requant and not x.topk for x in recs)
    assert all((x.key_bits, x.value_bits, x.requant_threshold) == (12, 8, 0.0) for x in recs)
    with pytest.raises(AccelSimsError, match="row 2 outside the batch of 2"):
        records_from_stats(r.stats, PruningConfig(), row=2)
    with pytest.raises(AccelSimsError, match="no statistics"):
        records_from_stats([], PruningConfig())


def test_prune_decoder_folder(tmp_path: Path) -> None:
    save_model(tiny_gpt2(), tmp_path / "gpt")
    cfg = PruningConfig(start_size=1, recent_size=2, important_size=3)
    wl, fn = prune(tmp_path / "gpt", cfg, input_ids=list(range(10)), generate=3)
    assert wl.model == "gpt"
    iters = sorted({r.iteration_id for r in wl.records})
    assert iters == [0, 1, 2, 3]
    prompt = [r for r in wl.records if r.iteration_id == 0]
    assert all(r.num_queries == 10 and r.key_fetch_num == 10 for r in prompt)
    assert all(r.topk and r.topk_k == 6 for r in prompt if r.head_id == 3)
    step = [r for r in wl.records if r.iteration_id == 3]
    assert all(r.num_queries == 1 and r.seq_len == 13 and r.key_fetch_num == 7 for r in step)
    assert read_csv(write_csv(wl)).records == wl.records


def test_prune_bad_inputs(tmp_path: Path) -> None:
    save_model(tiny_bert(), tmp_path / "bert")
    with pytest.raises(AccelSimsError, match="exactly one of text or input_ids"):
        prune(tmp_path / "bert", PruningConfig())
    with pytest.raises(AccelSimsError, match="input is empty"):
        prune(tmp_path / "bert", PruningConfig(), input_ids=[])
    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        prune(tmp_path / "bert", PruningConfig(), text="hello")
    with pytest.raises(AccelSimsError, match="holds an encoder"):
        prune(tmp_path / "bert", PruningConfig(), input_ids=[1, 2], generate=2)
    with pytest.raises(AccelSimsError, match="token_keep_ratios has 2 entries but the model has 3 layers"):
        prune(tmp_path / "bert", PruningConfig(token_keep_ratios=(1.0, 0.5)), input_ids=[1, 2, 3])


def test_prune_llama_folder_with_ratio_budget(tmp_path: Path) -> None:
    from accel_sims.models import LlamaConfig, LlamaModel

    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=4,
    )
    save_model(LlamaModel(cfg).eval(), tmp_path / "llama")
    # Budget from the ratio: keep_count(0.5, L) entries, of which 1 start and 2 recent.
    pc = PruningConfig(token_keep_ratios=(0.5,), start_size=1, recent_size=2, quantize=True)
    wl, _ = prune(tmp_path / "llama", pc, input_ids=list(range(3, 23)), generate=2)
    prompt = [r for r in wl.records if r.iteration_id == 0]
    assert all(r.key_fetch_num == 20 for r in prompt) and prompt[-1].topk and prompt[-1].topk_k == 10
    step1 = [r for r in wl.records if r.iteration_id == 1]
    assert all(r.seq_len == 21 and r.key_fetch_num == 11 and r.key_bits == 6 for r in step1)


def test_model_layers_and_parse_ratios(tmp_path: Path) -> None:
    from accel_sims.spatten.emit import model_layers, parse_ratios

    save_model(tiny_bert(), tmp_path / "b")
    assert model_layers(tmp_path / "b") == 3
    assert parse_ratios("0.25", 3) == (1.0, 0.5, 0.25)
    assert parse_ratios("1, 0.8,0.5", 3) == (1.0, 0.8, 0.5)
    with pytest.raises(AccelSimsError, match="token keep: entry 1 = 1.5"):
        parse_ratios("1,1.5,1", 3, "token keep")
    with pytest.raises(AccelSimsError, match="2 ratios given, the model has 3 layers"):
        parse_ratios("1,0.5", 3)
    with pytest.raises(AccelSimsError, match="not a number"):
        parse_ratios("half", 3)
