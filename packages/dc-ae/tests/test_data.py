"""Tests for dc_ae.data: bundled photographs, ImageFolder and image I/O."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from dc_ae.data import (
    HELDOUT_PHOTOS,
    PHOTO_NAMES,
    TRAIN_PHOTOS,
    ImageFolder,
    export_photographs,
    load_image,
    sample_photographs,
    save_image,
    to_tensor,
    to_uint8,
)
from dc_ae.errors import InputError


def _write(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _write(root / "b.png", 80, 120, 0)
    _write(root / "a.png", 64, 64, 1)
    _write(root / "nested" / "deeper" / "c.BMP", 50, 70, 2)
    _write(root / "small.png", 20, 40, 3)  # smaller than the 32-px crop on one side
    (root / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------------------------
# bundled photographs
# ---------------------------------------------------------------------------------------------


def test_sample_photographs_are_rgb_uint8(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("sample_photographs tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    photos = sample_photographs()
    assert tuple(photos) == PHOTO_NAMES
    for name, img in photos.items():
        assert img.dtype == np.uint8, name
        assert img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 256, name
    assert photos["astronaut"].shape == (512, 512, 3)
    assert photos["chelsea"].shape == (300, 451, 3)


def test_sample_photographs_equal_skimage_loaders() -> None:
    photos = sample_photographs(["astronaut", "coffee", "rocket", "motorcycle_left", "motorcycle_right"])
    np.testing.assert_array_equal(photos["astronaut"], skimage.data.astronaut())
    np.testing.assert_array_equal(photos["coffee"], skimage.data.coffee())
    np.testing.assert_array_equal(photos["rocket"], skimage.data.rocket())
    left, right, _ = skimage.data.stereo_motorcycle()
    np.testing.assert_array_equal(photos["motorcycle_left"], left)
    np.testing.assert_array_equal(photos["motorcycle_right"], right)


def test_train_and_heldout_split() -> None:
    assert HELDOUT_PHOTOS == ("chelsea", "coffee")
    assert not set(TRAIN_PHOTOS) & set(HELDOUT_PHOTOS)
    assert set(TRAIN_PHOTOS) | set(HELDOUT_PHOTOS) == set(PHOTO_NAMES)
    assert len(TRAIN_PHOTOS) == len(PHOTO_NAMES) - 2


def test_unknown_photograph_name() -> None:
    with pytest.raises(InputError, match="unknown photograph name"):
        sample_photographs(["lena"])


def test_export_photographs_defaults_to_training_set(tmp_path: Path) -> None:
    paths = export_photographs(tmp_path / "train", ["astronaut", "rocket"])
    assert [p.name for p in paths] == ["astronaut.png", "rocket.png"]
    np.testing.assert_array_equal(to_uint8(load_image(paths[0])[0]), skimage.data.astronaut())

    all_train = export_photographs(tmp_path / "all")
    assert sorted(p.stem for p in all_train) == sorted(TRAIN_PHOTOS)
    assert not any(p.stem in HELDOUT_PHOTOS for p in all_train)
    assert len(ImageFolder(tmp_path / "all", 64)) == len(TRAIN_PHOTOS)


# ---------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------


def test_image_folder_lists_recursively_and_sorted(folder: Path) -> None:
    ds = ImageFolder(folder, 32)
    rel = [p.relative_to(folder).as_posix() for p in ds.paths]
    assert rel == ["a.png", "b.png", "nested/deeper/c.BMP", "small.png"]
    assert len(ds) == 4


def test_image_folder_crops_have_right_size_and_range(folder: Path) -> None:
    for min_scale in (1.0, 0.3):
        ds = ImageFolder(folder, 32, min_scale=min_scale, seed=1)
        for epoch in range(3):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                x = ds[i]
                assert x.shape == (3, 32, 32) and x.dtype == torch.float32
                assert x.min() >= -1 and x.max() <= 1


def test_image_folder_upscales_images_smaller_than_crop(tmp_path: Path) -> None:
    _write(tmp_path / "tiny.png", 10, 24, 0)
    ds = ImageFolder(tmp_path, 48, seed=0)
    assert ds[0].shape == (3, 48, 48)


def test_image_folder_is_deterministic_given_seed_epoch_index(folder: Path) -> None:
    a = ImageFolder(folder, 32, min_scale=0.5, seed=7)
    b = ImageFolder(folder, 32, min_scale=0.5, seed=7)
    c = ImageFolder(folder, 32, min_scale=0.5, seed=8)
    first = [a[i] for i in range(len(a))]
    for i in range(len(a)):
        assert torch.equal(first[i], b[i])
    assert any(not torch.equal(first[i], c[i]) for i in range(len(a)))
    a.set_epoch(1)
    assert any(not torch.equal(first[i], a[i]) for i in range(len(a)))
    a.set_epoch(0)
    assert all(torch.equal(first[i], a[i]) for i in range(len(a)))


def test_image_folder_dataloader_workers_are_reproducible(folder: Path) -> None:
    ds = ImageFolder(folder, 32, min_scale=0.5, seed=3)
    ds.set_epoch(2)
    serial = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=2)))
    parallel = torch.cat(list(torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)))
    assert torch.equal(serial, parallel)


def test_image_folder_flip_only_mirrors(folder: Path) -> None:
    flipped_any = False
    for epoch in range(4):
        on = ImageFolder(folder, 32, seed=5, flip=True)
        off = ImageFolder(folder, 32, seed=5, flip=False)
        on.set_epoch(epoch)
        off.set_epoch(epoch)
        for i in range(len(on)):
            x, y = on[i], off[i]
            assert torch.equal(x, y) or torch.equal(x, y.flip(-1))
            flipped_any |= not torch.equal(x, y)
    assert flipped_any


def test_image_folder_eval_mode_full_and_multiple(folder: Path) -> None:
    full = ImageFolder(folder, None)
    x = full[1]  # b.png, 80x120
    assert x.shape == (3, 80, 120)
    torch.testing.assert_close(x, load_image(folder / "b.png")[0])
    cropped = ImageFolder(folder, None, multiple=32)
    y = cropped[1]
    assert y.shape == (3, 64, 96)
    # Centre crop: 8 rows and 12 columns trimmed from each side.
    assert torch.equal(y, x[:, 8:72, 12:108])
    with pytest.raises(InputError, match="smaller than multiple=32"):
        cropped[3]  # small.png is 20x40


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no images"):
        ImageFolder(tmp_path / "text")
    (tmp_path / "ok").mkdir()
    _write(tmp_path / "ok" / "a.png", 8, 8, 0)
    with pytest.raises(InputError, match="min_scale"):
        ImageFolder(tmp_path / "ok", 8, min_scale=0.0)
    (tmp_path / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match="broken.png"):
        ImageFolder(tmp_path / "ok", 8)[1]


# ---------------------------------------------------------------------------------------------
# image I/O
# ---------------------------------------------------------------------------------------------


def test_to_tensor_to_uint8_round_trip_is_exact() -> None:
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    t = to_tensor(arr)
    assert t.shape == (3, 16, 16) and t.min() == -1 and t.max() == 1
    np.testing.assert_array_equal(to_uint8(t), arr)
    np.testing.assert_array_equal(to_uint8(t[None])[0], arr)
    # Out-of-range values clamp instead of wrapping around.
    assert to_uint8(torch.full((3, 1, 1), 3.0)).max() == 255


def test_conversion_errors() -> None:
    with pytest.raises(InputError, match="uint8"):
        to_tensor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(InputError, match="H x W x 3"):
        to_tensor(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(InputError, match="NaN"):
        to_uint8(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(InputError, match=r"\[3, H, W\]"):
        to_uint8(torch.zeros(4, 2, 2))


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (33, 47, 3), dtype=np.uint8)
    dest = save_image(to_tensor(arr)[None], tmp_path / "sub" / "img.png")
    assert dest == tmp_path / "sub" / "img.png"
    back = load_image(dest)
    assert back.shape == (1, 3, 33, 47) and back.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(back[0]), arr)
    assert [p.name for p in dest.parent.iterdir()] == ["img.png"]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "img.png"
    original = np.full((8, 8, 3), 10, dtype=np.uint8)
    save_image(to_tensor(original), dest)
    save_image(to_tensor(np.full((8, 8, 3), 20, dtype=np.uint8)), dest)  # overwrite in place
    assert to_uint8(load_image(dest)[0])[0, 0, 0] == 20
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(to_tensor(original), dest)
    # The failed write neither left a temporary file nor touched the existing image.
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]
    assert to_uint8(load_image(dest)[0])[0, 0, 0] == 20


def test_save_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="batch of 2"):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "x.png")
    with pytest.raises(InputError, match="unknown image format"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "x.unknown")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="no image file"):
        load_image(tmp_path / "missing.png")
