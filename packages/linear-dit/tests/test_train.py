"""Tests of flow-matching training (linear_dit.train) and the sample-quality measure (linear_dit.quality):
SANA's training recipe (Xie et al., ICLR 2025, Sec. 2.3) on the tiny preset and synthetic latents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import linear_dit
from linear_dit.checkpoint import load
from linear_dit.config import LinearDiTConfig
from linear_dit.data import LatentDataset, make_synthetic_dataset, save_latent_dataset
from linear_dit.errors import InputError, TrainingError
from linear_dit.quality import (
    evaluate_quality,
    frechet_distance,
    generate_for_captions,
    latent_features,
    score_samples,
)
from linear_dit.training import (
    MODEL_FILE,
    RAW_MODEL_FILE,
    STATE_FILE,
    TrainConfig,
    TrainResult,
    _SampleStream,
    _training_batch,
    build_model,
    train,
    validation_loss,
)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("latents")
    return save_latent_dataset(
        make_synthetic_dataset(num_classes=3, samples_per_class=16, seed=0), root / "d.safetensors"
    )


def _cfg(data: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="tiny",
        data=data,
        out_dir=out,
        steps=6,
        batch_size=4,
        lr=2e-3,
        log_every=2,
        val_every=3,
        save_every=100,
        ema_decay=0.9,
        val_timesteps=2,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------


def test_config_is_frozen_and_strict(data_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(data_file, tmp_path)
    with pytest.raises(ValidationError):
        cfg.steps = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainConfig(model="tiny", data=data_file, out_dir=tmp_path, learning_rate=1e-3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown Linear DiT preset 'tiny2'"):
        TrainConfig(model="tiny2", data=data_file, out_dir=tmp_path)
    with pytest.raises(ValidationError, match="give model"):
        TrainConfig(data=data_file, out_dir=tmp_path)
    with pytest.raises(ValidationError, match="timestep_sampling"):
        TrainConfig(model="tiny", data=data_file, out_dir=tmp_path, timestep_sampling="cosine")  # type: ignore[arg-type]
    assert linear_dit.TrainConfig is TrainConfig


# ------------------------------------------------------------------------------------------
# determinism and resumption
# ------------------------------------------------------------------------------------------


def test_same_seed_gives_bit_identical_losses_and_weights(data_file: Path, tmp_path: Path) -> None:
    a = train(_cfg(data_file, tmp_path / "a"), progress=False)
    b = train(_cfg(data_file, tmp_path / "b"), progress=False)
    c = train(_cfg(data_file, tmp_path / "c", seed=1), progress=False)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert a.val_history == b.val_history
    assert _same(_weights(a), _weights(b))
    assert not _same(_weights(a), _weights(c))
    assert a.step == 6 and a.completed and a.precision == "fp32"
    assert all(math.isfinite(h["loss"]) and h["grad_norm"] > 0 for h in a.history)


def test_resumed_run_ends_with_the_uninterrupted_weights(data_file: Path, tmp_path: Path) -> None:
    kw: dict[str, object] = dict(
        lr_schedule="cosine", warmup_steps=2, weight_decay=0.05, cond_dropout=0.5, steps=7, save_every=2
    )
    whole = train(_cfg(data_file, tmp_path / "whole", **kw), progress=False)
    first = train(_cfg(data_file, tmp_path / "cut", stop_at_step=3, **kw), progress=False)
    assert first.step == 3 and not first.completed
    state = torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)
    assert state["step"] == 3 and state["data"]["samples_seen"] == 12
    rest = train(_cfg(data_file, tmp_path / "cut", **kw), progress=False)
    assert rest.step == 7 and rest.completed
    assert _same(_weights(whole), _weights(rest))  # the EMA weights
    assert _same(load(rest.raw_model_path or "").state_dict(), load(whole.raw_model_path or "").state_dict())
    assert rest.initial_val_loss == whole.initial_val_loss
    assert rest.final_val_loss == whole.final_val_loss
    assert not list((tmp_path / "cut").glob("*.tmp"))


def test_resume_checks_the_configuration_and_the_file(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(_cfg(data_file, out, steps=2), progress=False)
    with pytest.raises(TrainingError, match=r"different configuration \(lr: stored 0.002, now 0.001\)"):
        train(_cfg(data_file, out, steps=4, lr=1e-3), progress=False)
    # Settings that do not change the result may differ: more steps, other intervals.
    longer = train(_cfg(data_file, out, steps=3, log_every=1, save_every=1), progress=False)
    assert longer.step == 3
    fresh = train(_cfg(data_file, out, steps=2, lr=1e-3, resume=False), progress=False)
    assert fresh.step == 2 and fresh.history[0]["step"] == 2.0
    with pytest.raises(TrainingError, match="past the configured steps=1"):
        train(_cfg(data_file, out, steps=1, lr=1e-3), progress=False)
    (out / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="cannot read the training state"):
        train(_cfg(data_file, out, steps=3, lr=1e-3), progress=False)


def test_gradient_checkpointing_gives_the_same_weights(data_file: Path, tmp_path: Path) -> None:
    plain = train(_cfg(data_file, tmp_path / "p", steps=2, ema_decay=None), progress=False)
    ckpt = train(_cfg(data_file, tmp_path / "c", steps=2, ema_decay=None, gradient_checkpointing=True), progress=False)
    assert _same(_weights(plain), _weights(ckpt))
    assert plain.raw_model_path is None and plain.final_val_loss_ema is None


# ------------------------------------------------------------------------------------------
# pieces: batches, data order, validation, outputs
# ------------------------------------------------------------------------------------------


def test_caption_dropout_uses_the_null_text(data_file: Path, tmp_path: Path) -> None:
    from linear_dit.data import load_latent_dataset

    data = load_latent_dataset(data_file)
    idx = torch.arange(16)
    cpu = torch.device("cpu")
    _, y, m, _, _ = _training_batch(_cfg(data_file, tmp_path, cond_dropout=1.0), data, idx, 0, 0, 1.0, cpu)
    null_len = int(data.null_text_mask.sum())
    assert m.shape[1] == null_len  # all captions replaced, padding trimmed to the null text's length
    assert torch.equal(y, data.null_text_states[:null_len].expand(16, -1, -1))
    x0, y, m, t, noise = _training_batch(_cfg(data_file, tmp_path, cond_dropout=0.0), data, idx, 0, 0, 1.0, cpu)
    assert torch.equal(y, data.text_states[idx][:, : y.shape[1]]) and torch.equal(x0, data.latents[idx])
    assert torch.equal(m, data.text_mask[idx][:, : m.shape[1]])
    dropped = 0
    for step in range(40):
        _, y, m, _, _ = _training_batch(_cfg(data_file, tmp_path, cond_dropout=0.25), data, idx, step, 0, 1.0, cpu)
        dropped += int((m.shape[1] >= 1) and (y[:, 0] == data.null_text_states[0]).all(1).sum())
    assert 0.15 < dropped / 640 < 0.35
    # Same step and rank: same draws; another rank: other draws.
    a = _training_batch(_cfg(data_file, tmp_path), data, idx, 5, 0, 3.0, cpu)
    b = _training_batch(_cfg(data_file, tmp_path), data, idx, 5, 0, 3.0, cpu)
    c = _training_batch(_cfg(data_file, tmp_path), data, idx, 5, 1, 3.0, cpu)
    assert torch.equal(a[3], b[3]) and torch.equal(a[4], b[4]) and not torch.equal(a[4], c[4])
    assert float(a[3].median()) > 0.5  # shift 3 moves logit-normal times towards noise


def test_data_order_is_a_function_of_the_step() -> None:
    stream = _SampleStream(10, seed=3)
    epoch = torch.cat([stream.indices(s, 0, 1, 5) for s in range(2)])
    assert sorted(epoch.tolist()) == list(range(10))  # each epoch is a permutation
    ranks = [_SampleStream(10, 3).indices(0, r, 2, 5) for r in range(2)]
    assert torch.equal(torch.cat(ranks), epoch)  # two ranks split what one rank reads in two steps
    assert torch.equal(_SampleStream(10, 3).indices(7, 0, 1, 5), stream.indices(7, 0, 1, 5))


def test_validation_loss_is_deterministic_and_batch_independent(data_file: Path) -> None:
    from linear_dit.data import load_latent_dataset

    data = load_latent_dataset(data_file).subset(list(range(0, 48, 4)))
    model = build_model(_cfg(data_file, Path("unused")))
    a = validation_loss(model, data, timesteps=3, batch_size=5)
    b = validation_loss(model, data, timesteps=3, batch_size=12)
    assert a == pytest.approx(b, rel=1e-6)
    assert validation_loss(model, data, timesteps=3, batch_size=5) == a
    assert validation_loss(model, data, timesteps=3, batch_size=5, seed=1) != a
    assert model.training  # put back as it was


def test_training_learns_and_exports_the_model(data_file: Path, tmp_path: Path) -> None:
    result = train(_cfg(data_file, tmp_path, steps=40, log_every=10, val_every=20, ema_decay=0.95), progress=False)
    assert result.initial_val_loss is not None and result.final_val_loss is not None
    assert result.final_val_loss < 0.6 * result.initial_val_loss
    assert [v["step"] for v in result.val_history] == [0.0, 20.0, 40.0]
    assert result.final_val_loss_ema is not None and math.isfinite(result.final_val_loss_ema)
    exported = load(tmp_path / MODEL_FILE)
    assert _same(exported.state_dict(), _weights(result))
    raw = load(tmp_path / RAW_MODEL_FILE)
    assert not _same(raw.state_dict(), _weights(result))  # EMA differs from the last iterate
    summary = json.loads(json.dumps(result.summary()))
    assert "model" not in summary and summary["model_path"] == str(tmp_path / MODEL_FILE)
    assert summary["final_val_loss"] == result.final_val_loss
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [10.0, 20.0, 30.0, 40.0]


def test_init_checkpoint_and_data_checks(data_file: Path, tmp_path: Path) -> None:
    start = build_model(_cfg(data_file, tmp_path, seed=5))
    path = linear_dit.save(start, tmp_path / "init.safetensors")
    from linear_dit.data import load_latent_dataset

    data = load_latent_dataset(data_file)
    _, val = data.split(0.1, seed=0)
    result = train(_cfg(data_file, tmp_path / "ft", model=None, init_checkpoint=path, steps=1), progress=False)
    assert result.initial_val_loss == validation_loss(start, val, timesteps=2, batch_size=4)
    with pytest.raises(TrainingError, match="config differs in"):
        train(_cfg(data_file, tmp_path / "x", model="tiny-1.5", init_checkpoint=path, steps=1), progress=False)
    wide = LinearDiTConfig.from_name("tiny").model_copy(update={"caption_channels": 32})
    with pytest.raises(TrainingError, match="text states are 24-d, the model takes 32-d"):
        train(_cfg(data_file, tmp_path / "y", model=wide, steps=1), progress=False)


def test_video_latents_train_and_are_checked(data_file: Path, tmp_path: Path) -> None:
    video = make_synthetic_dataset(num_classes=2, samples_per_class=4, frames=2, height=4, width=4, seed=0)
    path = save_latent_dataset(video, tmp_path / "v.safetensors")
    result = train(_cfg(path, tmp_path / "v", model="tiny-video", steps=2, val_fraction=0.25), progress=False)
    assert result.step == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    assert latent_features(video.latents).shape == (8, 2 * 4 + 4)  # r = 1 band at 4x4: 4 frequencies
    with pytest.raises(TrainingError, match=r"latents are image \(4, 8, 8\), the model takes \[C,T,H,W\]"):
        train(_cfg(data_file, tmp_path / "w", model="tiny-video", steps=1), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 autocast training runs on CUDA")
def test_bf16_training_on_cuda(data_file: Path, tmp_path: Path) -> None:
    result = train(_cfg(data_file, tmp_path, steps=20, device="cuda", mixed_precision="bf16"), progress=False)
    assert result.precision == "bf16"
    assert result.final_val_loss is not None and result.initial_val_loss is not None
    assert result.final_val_loss < result.initial_val_loss


# ------------------------------------------------------------------------------------------
# sample quality
# ------------------------------------------------------------------------------------------


def test_frechet_distance_matches_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + torch.tensor([1.0, 2.0, 0.0])) == pytest.approx(5.0, rel=1e-9)
    # Scaling by s: (1 - s)^2 |mu|^2 + tr(S) + s^2 tr(S) - 2 s tr(S) = (1 - s)^2 (|mu|^2 + tr(S)).
    s = 3.0
    expected = (1 - s) ** 2 * float(a.mean(0).pow(2).sum() + torch.cov(a.T).trace())
    assert frechet_distance(a, a * s) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(InputError, match="same F"):
        frechet_distance(a, a[:, :2])


def test_features_see_colour_and_grating_amplitude_but_not_phase() -> None:
    h = w = 8
    hh = torch.arange(h)[:, None] / h
    ww = torch.arange(w)[None, :] / w
    wave = torch.cos(2 * torch.pi * (hh + 2 * ww))
    shifted = torch.cos(2 * torch.pi * (hh + 2 * ww) + 1.3)
    x = torch.stack([wave, shifted, 2 * wave + 0.5])[:, None].expand(3, 2, h, w)
    f = latent_features(x)
    assert f.shape == (3, 2 * 2 + 12)
    torch.testing.assert_close(f[0], f[1])  # phase-invariant
    assert f[2, 0] == pytest.approx(0.5) and f[2, 4:].max() == pytest.approx(2 * f[0, 4:].max())


def test_real_latents_score_at_the_floor_and_noise_far_from_it() -> None:
    ref = make_synthetic_dataset(num_classes=4, samples_per_class=24, seed=1, class_seed=0)
    probe = make_synthetic_dataset(num_classes=4, samples_per_class=24, seed=2, class_seed=0)
    assert probe.labels is not None
    real = score_samples(probe.latents, probe.labels, ref)
    noise = score_samples(torch.randn_like(probe.latents), probe.labels, ref)
    assert real.accuracy == 1.0
    assert noise.accuracy < 0.5
    assert noise.fd > 10 * real.fd and noise.class_fd > 10 * real.class_fd
    with pytest.raises(InputError, match="needs labels"):
        score_samples(
            probe.latents,
            probe.labels,
            LatentDataset(ref.latents, ref.text_states, ref.text_mask, ref.null_text_states, ref.null_text_mask),
        )


def test_quality_improves_after_training(tmp_path: Path) -> None:
    common: dict[str, object] = dict(num_classes=3, height=8, width=8, class_seed=0)
    path = save_latent_dataset(
        make_synthetic_dataset(samples_per_class=64, seed=0, **common), tmp_path / "t.safetensors"
    )
    heldout = make_synthetic_dataset(samples_per_class=16, seed=2, **common)
    cfg = _cfg(
        path,
        tmp_path / "run",
        steps=150,
        batch_size=16,
        lr=3e-3,
        warmup_steps=10,
        ema_decay=0.99,
        flow_shift=1.0,
        val_fraction=0.0,
        log_every=50,
    )
    quality: dict[str, object] = dict(guidance_scale=2.0, steps=8, shift=1.0)
    before = evaluate_quality(build_model(cfg), heldout, **quality)  # type: ignore[arg-type]
    after = evaluate_quality(train(cfg, progress=False).model, heldout, **quality)  # type: ignore[arg-type]
    assert before.real_accuracy == after.real_accuracy == 1.0
    assert after.accuracy >= 0.8 > before.accuracy
    assert after.fd < 0.2 * before.fd and after.class_fd < 0.2 * before.class_fd
    assert after.fd > after.real_fd  # not better than real data
    assert after.num_samples == 24 and after.as_dict()["sampler"] == "flow_dpm_solver"


def test_generation_does_not_depend_on_the_batch_size() -> None:
    data = make_synthetic_dataset(num_classes=2, samples_per_class=3, seed=0)
    model = build_model(TrainConfig(model="tiny", data=Path("x"), out_dir=Path("y")))
    a = generate_for_captions(model, data, guidance_scale=1.0, steps=3, batch_size=6)
    b = generate_for_captions(model, data, guidance_scale=1.0, steps=3, batch_size=4)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert a.shape == data.latents.shape and model.training
