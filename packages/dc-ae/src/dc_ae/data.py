"""Image data for training and evaluating DC-AE: bundled photographs, image folders, image I/O.

The DC-AE paper (Chen et al., 2024, Sec. 4.1) trains on random crops of natural photographs and
evaluates reconstructions of whole images. This module provides the pieces that need no network:

* :func:`sample_photographs` -- the real RGB photographs shipped inside the scikit-image wheel
  (read from the installed package files, never downloaded), split into :data:`TRAIN_PHOTOS`
  and :data:`HELDOUT_PHOTOS`;
* :class:`ImageFolder` -- a seeded, worker-safe dataset of random crops (training) or whole
  images (evaluation) from a directory tree;
* :func:`load_image` / :func:`save_image` (atomic) and the ``uint8`` <-> ``[-1, 1]`` converters
  :func:`to_tensor` / :func:`to_uint8`, following the DC-AE convention that images are float
  tensors in ``[-1, 1]`` (``x = u8 / 127.5 - 1``).
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dc_ae._io import atomic_output
from dc_ae.errors import InputError

__all__ = [
    "HELDOUT_PHOTOS",
    "IMAGE_EXTENSIONS",
    "PHOTO_NAMES",
    "TRAIN_PHOTOS",
    "ImageFolder",
    "export_photographs",
    "load_image",
    "sample_photographs",
    "save_image",
    "to_tensor",
    "to_uint8",
]

# Name -> file inside scikit-image's ``skimage/data`` folder. These are the files the
# ``skimage.data`` loaders (astronaut(), chelsea(), ..., stereo_motorcycle()) read from the
# installed wheel; reading them directly guarantees no fall-back to a network fetch.
_PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "immunohistochemistry": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
}

#: Every bundled photograph, in a fixed order.
PHOTO_NAMES: tuple[str, ...] = tuple(_PHOTO_FILES)
#: Photographs reserved for evaluation; no training code path should read them.
HELDOUT_PHOTOS: tuple[str, ...] = ("chelsea", "coffee")
#: Photographs available for training (every bundled photograph not held out).
TRAIN_PHOTOS: tuple[str, ...] = tuple(n for n in PHOTO_NAMES if n not in HELDOUT_PHOTOS)

#: File suffixes (lower case) that :class:`ImageFolder` picks up.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# --------------------------------------------------------------------------------------------
# conversions and single-image I/O
# --------------------------------------------------------------------------------------------


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """Convert an ``H x W x 3`` ``uint8`` RGB array to a float32 tensor ``[3, H, W]`` in ``[-1, 1]``."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"to_tensor: expected a numpy array, found {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"to_tensor: expected dtype uint8, found {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"to_tensor: expected an H x W x 3 RGB array, found shape {image.shape}")
    # np.require copies only read-only (e.g. PIL-backed) or strided arrays, which torch cannot wrap.
    t = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Convert ``[3, H, W]`` (or a batch ``[B, 3, H, W]``) in ``[-1, 1]`` to ``uint8`` RGB.

    Returns ``H x W x 3`` (or ``B x H x W x 3``). Values are clamped to ``[-1, 1]`` and rounded
    to the nearest level, so ``to_uint8(to_tensor(a))`` equals ``a`` exactly.
    """
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"to_uint8: expected a torch.Tensor, found {type(tensor).__name__}")
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise InputError(f"to_uint8: expected [3, H, W] or [B, 3, H, W], found shape {tuple(tensor.shape)}")
    if not tensor.is_floating_point():
        raise InputError(f"to_uint8: expected a floating-point tensor in [-1, 1], found {tensor.dtype}")
    t = tensor.detach().float().cpu()
    if not bool(torch.isfinite(t).all()):
        raise InputError("to_uint8: the image contains NaN or Inf values")
    u8 = ((t.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.movedim(-3, -1).contiguous().numpy()


def _open_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            # convert() forces a full decode while the file is still open, so a truncated file
            # fails here with its name rather than later inside a worker.
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"no image file at {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    return to_tensor(np.asarray(im, dtype=np.uint8))


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Load an image file as a float32 tensor ``[1, 3, H, W]`` in ``[-1, 1]`` (RGB)."""
    return _pil_to_tensor(_open_rgb(Path(path))).unsqueeze(0)


def save_image(tensor: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write one image ``[3, H, W]`` or ``[1, 3, H, W]`` in ``[-1, 1]`` to ``path`` atomically.

    The format follows the suffix (use ``.png`` for lossless round trips). The pixels go to a
    temporary file in the destination directory, which then replaces ``path`` with
    ``os.replace``, so readers never see a half-written image and a crash leaves no partial file.
    Parent directories are created. Returns the path.
    """
    dest = Path(path)
    if isinstance(tensor, torch.Tensor) and tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise InputError(
                f"save_image: expected one image, found a batch of {tensor.shape[0]} (shape {tuple(tensor.shape)})"
            )
        tensor = tensor[0]
    array = to_uint8(tensor)
    fmt = Image.registered_extensions().get(dest.suffix.lower())
    if fmt is None:
        raise InputError(f"save_image: unknown image format for suffix {dest.suffix!r} of {dest}")
    with atomic_output(dest) as tmp:
        Image.fromarray(array).save(tmp, format=fmt)
    return dest


# --------------------------------------------------------------------------------------------
# bundled photographs
# --------------------------------------------------------------------------------------------


def sample_photographs(names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The real photographs bundled in the installed scikit-image wheel, as ``H x W x 3`` uint8.

    Returns ``{name: array}`` for ``names`` (default: all of :data:`PHOTO_NAMES`, in that order).
    The files are read from the ``skimage/data`` package folder; nothing is downloaded. The
    pixels equal those of the ``skimage.data`` loaders (``skimage.data.astronaut()`` etc.;
    ``motorcycle_left``/``motorcycle_right`` are the two views of ``stereo_motorcycle()``,
    ``immunohistochemistry`` is ``ihc.png``).
    """
    wanted = PHOTO_NAMES if names is None else tuple(names)
    unknown = [n for n in wanted if n not in _PHOTO_FILES]
    if unknown:
        raise InputError(f"unknown photograph name(s) {unknown}; available: {list(PHOTO_NAMES)}")
    root = importlib.resources.files("skimage") / "data"
    out: dict[str, np.ndarray] = {}
    for name in wanted:
        resource = root / _PHOTO_FILES[name]
        if not resource.is_file():
            raise InputError(
                f"photograph {name!r} ({_PHOTO_FILES[name]}) is not bundled with the installed "
                f"scikit-image; reinstall scikit-image from its wheel (no download is attempted)"
            )
        with importlib.resources.as_file(resource) as file:
            out[name] = np.asarray(_open_rgb(file), dtype=np.uint8).copy()
    return out


def export_photographs(dest: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[Path]:
    """Write bundled photographs as ``<dest>/<name>.png`` (lossless) and return the paths.

    ``names`` defaults to :data:`TRAIN_PHOTOS`, so an exported folder is a training set that
    never contains the held-out images; pass :data:`HELDOUT_PHOTOS` for an evaluation folder.
    """
    folder = Path(dest)
    photos = sample_photographs(TRAIN_PHOTOS if names is None else names)
    return [save_image(to_tensor(img), folder / f"{name}.png") for name, img in photos.items()]


# --------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------


def _item_seed(seed: int, epoch: int, index: int) -> int:
    # SeedSequence mixes the triple thoroughly, so neighbouring indices or epochs get unrelated
    # streams (a naive seed + index would make epoch e, item i+1 equal epoch e+1, item i).
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _randint(gen: torch.Generator, high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (), generator=gen))


class ImageFolder(torch.utils.data.Dataset[torch.Tensor]):
    """Images under a directory tree as float tensors ``[3, h, w]`` in ``[-1, 1]``.

    Files with a suffix in :data:`IMAGE_EXTENSIONS` (any case) are found recursively and sorted
    by relative path, so the index -> file mapping is the same on every machine.

    Training (``crop_size`` set): each item is rescaled by a random factor in
    ``[min_scale, 1]`` (so crops of large photographs cover more of the scene), scaled up
    instead when needed so its shorter side is at least ``crop_size`` (aspect ratio kept), cut
    to a random ``crop_size x crop_size`` window and, with ``flip``, mirrored horizontally with
    probability 1/2. The random draws come from a ``torch.Generator`` seeded from
    ``(seed, epoch, index)``, so results do not depend on the DataLoader's worker count or
    order; call :meth:`set_epoch` before each epoch (with ``persistent_workers=True`` the
    workers keep the epoch their copy had, so recreate the loader instead).

    Evaluation (``crop_size=None``): the whole image, no randomness; with ``multiple`` set, it
    is centre-cropped to the largest height and width divisible by ``multiple`` (e.g. the
    autoencoder's spatial compression).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        crop_size: int | None = 256,
        *,
        min_scale: float = 1.0,
        flip: bool = True,
        seed: int = 0,
        multiple: int | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if crop_size is not None and crop_size < 1:
            raise InputError(f"ImageFolder: crop_size must be a positive integer, found {crop_size}")
        if not 0.0 < min_scale <= 1.0:
            raise InputError(f"ImageFolder: min_scale must be in (0, 1], found {min_scale}")
        if multiple is not None and multiple < 1:
            raise InputError(f"ImageFolder: multiple must be a positive integer, found {multiple}")
        if seed < 0:
            raise InputError(f"ImageFolder: seed must be non-negative, found {seed}")
        if not self.root.is_dir():
            what = "is not a directory" if self.root.exists() else "does not exist"
            raise InputError(f"ImageFolder: image folder {self.root} {what}")
        suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        self.paths: list[Path] = sorted(
            (p for p in self.root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not self.paths:
            raise InputError(f"ImageFolder: no images ({', '.join(sorted(suffixes))}) found under {self.root}")
        self.crop_size = crop_size
        self.min_scale = float(min_scale)
        self.flip = flip
        self.seed = seed
        self.multiple = multiple
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops and flips :meth:`__getitem__` draws."""
        if epoch < 0:
            raise InputError(f"ImageFolder: epoch must be non-negative, found {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self.paths) <= index < len(self.paths):
            raise IndexError(f"ImageFolder index {index} out of range for {len(self.paths)} images")
        index %= len(self.paths)
        im = _open_rgb(self.paths[index])
        if self.crop_size is None:
            return self._full(im, self.paths[index])
        gen = torch.Generator().manual_seed(_item_seed(self.seed, self.epoch, index))
        return self._random_crop(im, gen)

    def _full(self, im: Image.Image, path: Path) -> torch.Tensor:
        x = _pil_to_tensor(im)
        if self.multiple is None:
            return x
        h, w = x.shape[-2:]
        th, tw = h - h % self.multiple, w - w % self.multiple
        if th == 0 or tw == 0:
            raise InputError(f"ImageFolder: image {path} is {h}x{w}, smaller than multiple={self.multiple}")
        top, left = (h - th) // 2, (w - tw) // 2
        return x[:, top : top + th, left : left + tw].contiguous()

    def _random_crop(self, im: Image.Image, gen: torch.Generator) -> torch.Tensor:
        c = self.crop_size
        assert c is not None
        w, h = im.size
        scale = _uniform(gen, self.min_scale, 1.0) if self.min_scale < 1.0 else 1.0
        # Never let the scaled image drop below the crop: small images are scaled up instead.
        scale = max(scale, c / min(w, h))
        sw, sh = max(c, round(w * scale)), max(c, round(h * scale))
        left, top = _randint(gen, sw - c), _randint(gen, sh - c)
        if (sw, sh) == (w, h):
            patch = im.crop((left, top, left + c, top + c))
        else:
            # Resample only the crop window (box in source pixels): what resizing the whole
            # photograph and then cropping gives, without paying for the full resize.
            fx, fy = w / sw, h / sh
            box = (left * fx, top * fy, (left + c) * fx, (top + c) * fy)
            patch = im.resize((c, c), Image.Resampling.BICUBIC, box=box)
        x = _pil_to_tensor(patch)
        # Draw the flip coin unconditionally so toggling `flip` does not shift other draws.
        heads = bool(torch.rand((), generator=gen) < 0.5)
        if self.flip and heads:
            x = x.flip(-1)
        return x.contiguous()
