"""Tests of DC-AE training (dc_ae.train, dc_ae.discriminator, dc_ae.ema): the three phases of
Decoupled High-Resolution Adaptation (Chen et al., ICLR 2025, Sec. 3.3) on tiny presets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn

import dc_ae
from dc_ae.config import DCAEConfig
from dc_ae.discriminator import PatchDiscriminator, adaptive_gan_weight, d_hinge_loss, g_hinge_loss
from dc_ae.ema import EMA
from dc_ae.errors import TrainingError
from dc_ae.metrics import LPIPS, PerceptualFallbackWarning
from dc_ae.train import (
    STATE_FILE,
    TrainConfig,
    _load_state,
    _vgg16_features,
    default_trainable,
    enable_gradient_checkpointing,
    freeze_except,
    train,
)

pytestmark = pytest.mark.filterwarnings("ignore::dc_ae.metrics.PerceptualFallbackWarning")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small smooth-plus-texture RGB images (real photographs are too slow to decode here)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:40] / 40.0
    for i in range(3):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), np.sin(xx * yy * 5 + i)], -1)
        img = (base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)).clip(0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(root / f"img{i}.png")
    return root


def _cfg(photos: Path, out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="tiny-f4",
        data=photos,
        out_dir=out,
        resolution=16,
        batch_size=2,
        steps=4,
        lr=1e-3,
        log_every=1,
        save_every=100,
        ema_decay=None,
        disc_channels=8,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _init_ckpt(path: Path, preset: str = "tiny-f4", seed: int = 3) -> Path:
    torch.manual_seed(seed)
    model = dc_ae.DCAE(DCAEConfig.from_name(preset))
    # Non-trivial BatchNorm statistics, so an accidental update in a frozen stage is visible.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    return dc_ae.save(model, path)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# ------------------------------------------------------------------------------------------
# phases and freezing
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_phase_changes_only_its_modules(photos: Path, tmp_path: Path, phase: int) -> None:
    init = _init_ckpt(tmp_path / "init.safetensors")
    before = _state(dc_ae.load(init))
    kw: dict[str, object] = {"init_checkpoint": init, "phase": phase, "resolution": 16 if phase == 1 else 32}
    result = train(_cfg(photos, tmp_path / "run", **kw), progress=False)
    after = _state(result.model)
    prefixes = default_trainable(phase, DCAEConfig.from_name("tiny-f4"))
    assert result.trainable == prefixes
    params = {k for k, _ in result.model.named_parameters()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = {k for k in before if not _under(k, prefixes)}
    trainable_params = {k for k in params if _under(k, prefixes)}
    assert not (changed & frozen), f"frozen tensors changed: {sorted(changed & frozen)}"
    # Every trainable weight moves (buffers of trainable BN layers may move too).
    assert trainable_params <= changed, sorted(trainable_params - changed)
    assert result.num_trainable_params == sum(
        p.numel() for k, p in result.model.named_parameters() if k in trainable_params
    )
    if phase == 3:
        assert "d" in result.final_losses and "g" in result.final_losses
        assert result.final_losses["gan_weight"] > 0
    if phase == 2:
        # The BatchNorm of decoder stage 0 is frozen in phase 2: its statistics stay bit-identical.
        bn = [k for k in before if "running_mean" in k]
        assert bn and all(torch.equal(before[k], after[k]) for k in bn)


def test_default_trainable_prefixes() -> None:
    tiny = DCAEConfig.from_name("tiny-f8")
    assert default_trainable(1, tiny) == ("encoder", "decoder")
    assert default_trainable(2, tiny) == ("encoder.stages.3", "encoder.conv_out", "decoder.conv_in", "decoder.stages.3")
    assert default_trainable(3, tiny) == ("decoder.stages.0", "decoder.norm_out", "decoder.conv_out")
    # in/mix models fold stage 0 into conv_out: the head is the first stage that has blocks.
    in_cfg = DCAEConfig.from_name("dc-ae-f32c32-in-1.0")
    assert default_trainable(3, in_cfg) == ("decoder.stages.1", "decoder.norm_out", "decoder.conv_out")


def test_freeze_except_sets_modes_and_flags() -> None:
    model = dc_ae.DCAE(DCAEConfig.from_name("tiny-f4"))
    names = freeze_except(model, ("decoder.stages.1",))
    assert names and all(n.startswith("decoder.stages.1.") for n in names)
    assert all(p.requires_grad == n.startswith("decoder.stages.1.") for n, p in model.named_parameters())
    assert model.training and model.decoder.training and model.decoder.stages[1].training
    assert not model.encoder.training and not model.decoder.stages[0].training
    assert not model.decoder.stages[0].blocks[0].training  # holds the BatchNorm
    # "decoder.stages.1" must not match "decoder.stages.10..." style names by string prefix.
    assert not any(n.startswith("decoder.stages.2") for n in names)


def test_loss_decreases_on_tiny_overfit(photos: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        photos,
        tmp_path / "run",
        model="tiny-f4-resblock",
        steps=40,
        lr=3e-3,
        batch_size=3,
        log_every=10,
        lr_schedule="constant",
        perceptual_weight=0.0,
    )
    result = train(cfg, progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses


# ------------------------------------------------------------------------------------------
# determinism, resume, checkpoints
# ------------------------------------------------------------------------------------------


def _weights_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_weights(photos: Path, tmp_path: Path) -> None:
    kw = dict(steps=3, ema_decay=0.9)
    a = train(_cfg(photos, tmp_path / "a", **kw), progress=False)
    b = train(_cfg(photos, tmp_path / "b", num_workers=2, **kw), progress=False)  # workers do not matter
    c = train(_cfg(photos, tmp_path / "c", seed=1, **kw), progress=False)
    assert _weights_equal(a.model, b.model)
    assert a.history == b.history
    assert not _weights_equal(a.model, c.model)


@pytest.mark.parametrize("phase", [1, 3])
def test_resume_equals_uninterrupted(photos: Path, tmp_path: Path, phase: int) -> None:
    init = _init_ckpt(tmp_path / "init.safetensors")
    kw: dict[str, object] = dict(phase=phase, init_checkpoint=init, ema_decay=0.9, warmup_steps=2, resolution=32)
    full = train(_cfg(photos, tmp_path / "full", steps=6, **kw), progress=False)
    half = train(_cfg(photos, tmp_path / "split", steps=3, **kw), progress=False)
    assert half.step == 3 and half.completed
    rest = train(_cfg(photos, tmp_path / "split", steps=6, **kw), progress=False)
    assert rest.step == 6
    assert _weights_equal(full.model, rest.model)
    assert full.history == rest.history
    a, b = _load_state(tmp_path / "full" / STATE_FILE), _load_state(tmp_path / "split" / STATE_FILE)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    if phase == 3:
        for k in a["disc"]:
            assert torch.equal(a["disc"][k], b["disc"][k]), k


def test_resume_refuses_a_different_config(photos: Path, tmp_path: Path) -> None:
    train(_cfg(photos, tmp_path / "run", steps=2), progress=False)
    with pytest.raises(TrainingError, match="lr"):
        train(_cfg(photos, tmp_path / "run", steps=4, lr=5e-4), progress=False)


def test_max_minutes_stops_saves_and_resumes(photos: Path, tmp_path: Path) -> None:
    stopped = train(_cfg(photos, tmp_path / "run", steps=5, max_minutes=1e-6), progress=False)
    assert stopped.step == 1 and not stopped.completed
    assert _load_state(tmp_path / "run" / STATE_FILE)["step"] == 1
    assert (tmp_path / "run" / "model.safetensors").exists()
    done = train(_cfg(photos, tmp_path / "run", steps=5), progress=False)
    assert done.step == 5 and done.completed


def test_checkpoint_is_atomic(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    train(_cfg(photos, out, steps=2), progress=False)
    good = (out / STATE_FILE).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["log.jsonl", "model.safetensors", STATE_FILE]

    real_save = torch.save

    def crashing_save(obj: object, f: object, *a: object, **k: object) -> None:
        real_save({"half": "written"}, f)  # a partial file lands at the temporary path ...
        raise OSError("disk full")  # ... and then the write fails

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        train(_cfg(photos, out, steps=4, save_every=1), progress=False)
    monkeypatch.undo()
    assert (out / STATE_FILE).read_bytes() == good
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert _load_state(out / STATE_FILE)["step"] == 2


# ------------------------------------------------------------------------------------------
# configuration errors
# ------------------------------------------------------------------------------------------


def test_bad_configs_raise_clear_errors(photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown DC-AE preset 'tiny-f5'"):
        _cfg(photos, tmp_path, model="tiny-f5")
    with pytest.raises(ValidationError, match="phase 3 .*init_checkpoint"):
        _cfg(photos, tmp_path, phase=3)
    with pytest.raises(ValidationError, match="lr_typo"):
        _cfg(photos, tmp_path, lr_typo=1.0)
    with pytest.raises(ValidationError, match="model .* or init_checkpoint"):
        _cfg(photos, tmp_path, model=None)
    with pytest.raises(TrainingError, match="'decoder.stage.0' matches no parameter"):
        train(_cfg(photos, tmp_path / "a", trainable=("decoder.stage.0",)), progress=False)
    with pytest.raises(TrainingError, match="data folder .*missing"):
        train(_cfg(tmp_path / "missing", tmp_path / "b"), progress=False)
    with pytest.raises(TrainingError, match="multiple of the model's spatial compression 4"):
        train(_cfg(photos, tmp_path / "c", resolution=18), progress=False)
    init = _init_ckpt(tmp_path / "init.safetensors")
    with pytest.raises(TrainingError, match="not a tiny-f4-resblock model: its config differs in .*block_types"):
        train(_cfg(photos, tmp_path / "e", phase=2, model="tiny-f4-resblock", init_checkpoint=init), progress=False)
    with pytest.raises(TrainingError, match="init_checkpoint .* does not exist"):
        train(_cfg(photos, tmp_path / "d", phase=2, init_checkpoint=tmp_path / "nope.safetensors"), progress=False)


def test_phase_defaults_fill_resolution_and_gan_weight(photos: Path, tmp_path: Path) -> None:
    init = tmp_path / "x.safetensors"
    assert TrainConfig(model="tiny-f4", data=photos, out_dir=tmp_path).resolution == 256
    p2 = TrainConfig(data=photos, out_dir=tmp_path, phase=2, init_checkpoint=init)
    assert (p2.resolution, p2.gan_weight) == (512, 0.0)
    p3 = TrainConfig(data=photos, out_dir=tmp_path, phase=3, init_checkpoint=init)
    assert (p3.resolution, p3.gan_weight) == (256, 0.1)


# ------------------------------------------------------------------------------------------
# perceptual loss
# ------------------------------------------------------------------------------------------


def test_weight_free_fallback_warns(photos: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(_cfg(photos, tmp_path / "run", steps=1), progress=False)
    assert result.perceptual_kind == "weight-free"
    assert any(issubclass(w.category, PerceptualFallbackWarning) for w in caught)


def test_local_perceptual_network_is_used(photos: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    names = ("3", "8", "15", "22", "29")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    lpips = LPIPS(_vgg16_features(), names, lin)
    path = tmp_path / "lpips_vgg.safetensors"
    save_file({k: v.contiguous() for k, v in lpips.state_dict().items()}, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerceptualFallbackWarning)
        result = train(_cfg(photos, tmp_path / "run", steps=1, perceptual_network=path), progress=False)
    assert result.perceptual_kind == "lpips"
    assert result.final_losses["perceptual"] > 0


# ------------------------------------------------------------------------------------------
# gradient checkpointing, discriminator, EMA
# ------------------------------------------------------------------------------------------


def test_gradient_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    plain = dc_ae.DCAE(DCAEConfig.from_name("tiny-f4")).train()
    ckpt = dc_ae.DCAE(DCAEConfig.from_name("tiny-f4")).train()
    ckpt.load_state_dict(plain.state_dict())
    enable_gradient_checkpointing(ckpt)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    for m in (plain, ckpt):
        (m(x) - x).abs().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)
    # The recomputation must not update BatchNorm statistics a second time.
    for (name, a), (_, b) in zip(plain.named_buffers(), ckpt.named_buffers(), strict=True):
        assert torch.equal(a, b), name


def test_gradient_checkpointing_in_training_matches(photos: Path, tmp_path: Path) -> None:
    a = train(_cfg(photos, tmp_path / "a", steps=2), progress=False)
    b = train(_cfg(photos, tmp_path / "b", steps=2, grad_checkpointing=True), progress=False)
    for (k, va), (_, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)


def test_hinge_losses_on_known_logits() -> None:
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([-2.0, 0.5])
    # 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 * (mean(0, 2) + mean(0, 1.5))
    assert d_hinge_loss(real, fake).item() == pytest.approx(0.875)
    assert g_hinge_loss(fake).item() == pytest.approx(0.75)
    assert d_hinge_loss(torch.full((4,), 1.5), torch.full((4,), -3.0)).item() == 0.0


def test_adaptive_gan_weight_is_gradient_norm_ratio() -> None:
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    weight = adaptive_gan_weight((w * a).sum(), (w * b).sum(), w)
    assert weight.item() == pytest.approx(5.0 / (1.0 + 1e-4))
    assert not weight.requires_grad
    with pytest.raises(TrainingError, match="frozen"):
        adaptive_gan_weight((w * a).sum(), (w * b).sum(), torch.ones(3))


def test_patch_discriminator_shapes() -> None:
    d = PatchDiscriminator(channels=8, n_layers=3)
    assert d(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert PatchDiscriminator.output_size(64) == 6 and PatchDiscriminator.output_size(256) == 30
    assert PatchDiscriminator.output_size(16) < 1 <= PatchDiscriminator.output_size(24)
    assert any(isinstance(m, nn.GroupNorm) for m in d.modules())


def test_ema_math_and_state_dict() -> None:
    lin = nn.BatchNorm1d(2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([1.0, 2.0]))
    ema = EMA(lin, decay=0.9, warmup=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([3.0, 6.0]))
        lin.running_mean.copy_(torch.tensor([5.0, 7.0]))
    ema.update(lin)
    torch.testing.assert_close(ema.shadow["weight"], torch.tensor([0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 6]))
    assert torch.equal(ema.shadow["running_mean"], torch.tensor([5.0, 7.0]))  # buffers are copied
    warm = EMA(lin, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    restored = EMA(nn.BatchNorm1d(2), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.9 and restored.num_updates == 1
    assert torch.equal(restored.shadow["weight"], ema.shadow["weight"])
    target = nn.BatchNorm1d(2)
    ema.copy_to(target)
    assert torch.equal(target.weight.detach(), ema.shadow["weight"])
    with pytest.raises(TrainingError, match="decay"):
        EMA(lin, decay=1.0)


def test_exported_model_is_ema_and_loadable(photos: Path, tmp_path: Path) -> None:
    result = train(_cfg(photos, tmp_path / "run", steps=2, ema_decay=0.5), progress=False)
    assert result.model_path == tmp_path / "run" / "model.safetensors"
    loaded = dc_ae.load(result.model_path)
    assert _weights_equal(loaded, result.model)
    raw = _load_state(tmp_path / "run" / STATE_FILE)["model"]
    assert any(not torch.equal(raw[k], v) for k, v in loaded.state_dict().items() if v.is_floating_point())
