"""Photos: opening them defensively, and turning pixels into model inputs and back.

The course's photos live in the repository's ``data/`` (see ``data/SOURCES.md`` for source
and licence of each), which an installed wheel carries as ``featviz_helpers/data``. ``load_image`` accepts one of :data:`PHOTOS`' names or a path.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DATA_DIR",
    "PHOTOS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "load_image",
    "input_spec",
    "normalisation",
    "preprocess",
    "deprocess",
]



def _data_dir() -> Path:
    """Where the photos and the shapes models are.

    A wheel carries the repository's data/ as featviz_helpers/data; an editable install
    (or a checkout on sys.path) reads data/ beside the package. FEATVIZ_DATA overrides both.
    """
    if os.environ.get("FEATVIZ_DATA"):
        return Path(os.environ["FEATVIZ_DATA"])
    package = Path(__file__).resolve().parent
    installed = package / "data"
    return installed if installed.is_dir() else package.parent / "data"


DATA_DIR = _data_dir()

# name -> file in DATA_DIR
PHOTOS = {
    "chelsea": "chelsea.png",              # a tabby cat's face
    "coffee": "coffee.png",                # an espresso cup on a saucer
    "camera": "camera.png",                # a photographer with a camera on a tripod (grey)
    "grace_hopper": "grace_hopper.jpg",    # Rear Admiral Grace Hopper in uniform
    "rocket": "rocket.jpg",                # a Falcon 9 launch
    "astronaut": "astronaut.png",          # astronaut Eileen Collins
    "cat_and_coffee": "cat_and_coffee.png",  # chelsea (left) beside coffee (right)
}

MAX_PIXELS = 40_000_000  # refuse anything larger: no course photo needs it
MIN_SIDE = 8             # a classifier cannot see anything in fewer pixels


def _resolve(name_or_path: str | os.PathLike) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"load_image takes a photo name (one of {sorted(PHOTOS)}) or the path of "
                        f"an image file; got {name_or_path!r}.")
    if isinstance(name_or_path, str) and name_or_path in PHOTOS:
        path = DATA_DIR / PHOTOS[name_or_path]
        if not path.is_file():
            raise FileNotFoundError(
                f"Photo {name_or_path!r} should be at {path}, but it is not there. Reinstall "
                "the package (`pip install .` or `pip install -e .` in the repository) so its "
                "data comes along, or point FEATVIZ_DATA at a folder holding the photos."
            )
        return path
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No photo named {str(name_or_path)!r} and no such file. "
            f"Photo names: {sorted(PHOTOS)}."
        )
    return path


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit RGB (transparency composited onto white).

    High bit depths are scaled by their format's full range, never by the image's own
    values (which would make every pixel's brightness depend on the brightest one): 16-bit
    by 65535; 32-bit integers ("I") must lie in 0..65535 (how Pillow reads 16-bit data in
    some formats) and floats ("F") in [0, 1], else the image is refused, as there is no
    standard range to map them from.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit depth: Pillow's own convert() would clip at 255, so rescale first.
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F":
            top = 1.0
            if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
                raise ValueError(
                    f"This floating-point image has values in [{a.min():g}, {a.max():g}]; "
                    "float images must hold brightness in [0, 1]. Rescale it first, e.g. "
                    "Image.fromarray((a / a.max()).astype('float32'))."
                )
        else:
            top = 65535.0
            if a.min() < 0 or a.max() > top:
                raise ValueError(
                    f"This {img.mode!r}-mode (32-bit integer) image has values in "
                    f"[{a.min():g}, {a.max():g}], beyond the 16-bit range 0..65535 that is "
                    "mapped to black..white; there is no standard brightness scale for it. "
                    "Convert it to 8 or 16 bits first, choosing the range you want to show."
                )
        a = (a / top * 255.0).round().astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(name_or_path: str | os.PathLike) -> Image.Image:
    """Open a course photo by name (see :data:`PHOTOS`) or any image file, as RGB.

    Accepts every mode Pillow reads (L, RGBA, P, CMYK, 16-bit …) and honours EXIF
    orientation. Raises ``ValueError`` for a file that is not an image, or one with more
    than :data:`MAX_PIXELS` pixels or a side under :data:`MIN_SIDE`.
    """
    path = _resolve(name_or_path)
    try:
        img = Image.open(path)  # lazy: reads the header only
    except UnidentifiedImageError as e:
        raise ValueError(f"{path} is not an image file Pillow can read.") from e
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path} is too large to open safely ({e}).") from e
    except (OSError, SyntaxError, ValueError) as e:  # a header cut short or corrupt
        raise ValueError(f"{path} could not be read as an image: its header is truncated or "
                         f"corrupt ({e}). Re-save or re-download the file.") from e
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(
                f"{path} is {w}×{h} = {w * h:,} pixels; the limit is {MAX_PIXELS:,}. "
                "Downscale it first."
            )
        if min(w, h) < MIN_SIDE:
            raise ValueError(f"{path} is only {w}×{h} pixels; need at least {MIN_SIDE} per side.")
        try:
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
        except (OSError, SyntaxError) as e:  # truncated or corrupt pixel data
            raise ValueError(f"{path} could not be decoded as an image ({e}).") from e


def input_spec(model):
    """``model.input_spec`` (or the wrapped network's, inside a DataParallel or compiled
    wrapper); a model without one (not made by ``models.load_model``) is refused, since
    neither its preprocessing nor its valid pixel range is known."""
    from .models import unwrap     # models reads DATA_DIR from here: import when needed

    spec = getattr(model, "input_spec", None) or getattr(unwrap(model)[0], "input_spec", None)
    if spec is None:
        raise ValueError(
            "This model has no `input_spec`, so how to preprocess for it (and its valid pixel "
            "range) is unknown; load it with featviz_helpers.models.load_model(), or set "
            "model.input_spec = models.InputSpec(resize, crop, mean, std) for your own model."
        )
    return spec


def normalisation(model, device="cpu", dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std of ``model``'s :func:`input_spec`, each (1,3,1,1), to
    broadcast over a batch: model input = (pixels − mean) / std."""
    spec = input_spec(model)
    return (torch.tensor(spec.mean, device=device, dtype=dtype).view(1, 3, 1, 1),
            torch.tensor(spec.std, device=device, dtype=dtype).view(1, 3, 1, 1))


def _normalise(x: torch.Tensor, model) -> torch.Tensor:
    mean, std = normalisation(model, x.device)    # on the batch's own device
    return (x - mean) / std


def _pil_to_tensor(img: Image.Image, spec) -> torch.Tensor:
    """Resize the shorter side to ``spec.resize``, centre-crop ``spec.crop``, → (3,H,W) in [0,1]."""
    w, h = img.size
    scale = spec.resize / min(w, h)
    img = img.resize((max(spec.crop, round(w * scale)), max(spec.crop, round(h * scale))),
                     Image.BILINEAR)
    w, h = img.size
    left, top = (w - spec.crop) // 2, (h - spec.crop) // 2
    img = img.crop((left, top, left + spec.crop, top + spec.crop))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def preprocess(images, model) -> torch.Tensor:
    """Model input (B,3,H,W) from photos, for ``model``'s ``input_spec``.

    ``images`` is a PIL image, a list of them (each resized and centre-cropped to
    ``crop``×``crop``), or a float tensor (B,3,H,W) of pixels already in [0,1] at the size
    wanted (only normalised).
    """
    spec = input_spec(model)
    if isinstance(images, Image.Image):
        images = [images]
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            shape = tuple(images.shape)
            if images.dim() in (3, 4) and shape[-1] == 3 and shape[-3] != 3:
                fix = ("It looks channels-last (…,H,W,3): move the colours first with "
                       ".permute(0, 3, 1, 2) (or .permute(2, 0, 1)[None] for one image).")
            elif images.dim() == 3 and shape[0] == 3:
                fix = "For one image (3,H,W), add the batch dimension: x[None]."
            elif not images.is_floating_point():
                fix = "Scale 8-bit pixels to [0,1] first: x.float() / 255."
            else:
                fix = "Pass RGB images: 3 colour channels, channels first."
            raise ValueError(
                f"A tensor batch must be float (B,3,H,W) in [0,1]; got {shape} "
                f"{images.dtype}. {fix}"
            )
        if images.numel() == 0:
            raise ValueError(f"The tensor batch {tuple(images.shape)} is empty; pass at least "
                             "one image of at least one pixel.")
        # NaN first: it passes the range test below (every comparison with NaN is False).
        if not torch.isfinite(images).all():
            raise ValueError("The tensor batch holds NaN or infinite values; pass pixels in "
                             "[0,1] (torch.isnan(batch).nonzero() shows where the NaN are).")
        if images.min() < 0 or images.max() > 1:
            raise ValueError("A tensor batch must hold pixels in [0,1]; normalise nothing first.")
        return _normalise(images.float(), model)
    given = type(images).__name__
    images = list(images) if isinstance(images, Iterable) else None
    if images is None or not all(isinstance(im, Image.Image) for im in images):
        odd = given if images is None or given not in ("list", "tuple") else \
            f"a {given} holding {type(next(im for im in images if not isinstance(im, Image.Image))).__name__}"
        raise TypeError("preprocess() takes a PIL image, a list of PIL images, or a tensor batch "
                        f"(B,3,H,W) of pixels in [0,1]; got {odd}. A numpy array (H,W,3) of "
                        "8-bit pixels becomes an image with PIL.Image.fromarray(array); a float "
                        "one becomes a batch with torch.from_numpy(array).permute(2, 0, 1)[None].")
    if not images:
        raise ValueError("preprocess() got an empty list: pass at least one image.")
    for im in images:
        if min(im.size) < 1:
            raise ValueError(f"An image of {im.size[0]}×{im.size[1]} pixels has nothing to show; "
                             "every image needs at least one pixel per side.")
    batch = torch.stack([_pil_to_tensor(_to_rgb(im), spec) for im in images])
    return _normalise(batch, model)


def deprocess(x: torch.Tensor, model) -> np.ndarray:
    """Undo :func:`preprocess`: (B,3,H,W) → (B,H,W,3), or (3,H,W) → (H,W,3), floats in [0,1]."""
    x = x.detach().float().cpu()
    single = x.dim() == 3
    if single:
        x = x[None]
    mean, std = normalisation(model)
    out = (x * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return out[0] if single else out

