"""Optimised images: pictures made by gradient ascent on the input — a class model
(Simonyan et al. 2014), an adversarial example (Szegedy et al. 2014), and a channel's
feature visualisation in a Fourier parametrisation (Olah, Mordvintsev & Schubert 2017)."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from ..hooks import capture, preserved_state
from ..library_guard import library_copy, refuse_if_blocked
from ..images import normalisation
from ..models import layer_name, unwrap
from ._inputs import (as_targets, autograd_on, channel_index, check_ran, checked_input,
                      logits_of, model_device_dtype, model_targets, positive_int,
                      unit_responses)
from .gradients import input_gradient


def _pixel_range(model: nn.Module, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of pixels 0 and 1 for ``model``'s input, each (1,3,1,1)."""
    mean, std = normalisation(model, device, dtype)
    return -mean / std, (1 - mean) / std


@library_copy
def ascent_step(model: nn.Module, img: torch.Tensor, target, lr: float,
                l2: float) -> torch.Tensor:
    """One step of gradient ascent on S_c(I) − λ‖I‖² (Simonyan et al. 2014, §2; notebook 02
    §11): I ← I + lr · (∂S_c/∂I − 2λ I), for each image's own target class. (B,3,H,W) → same."""
    refuse_if_blocked()
    with autograd_on():      # an input made under inference_mode becomes an ordinary one
        img = checked_input(model, img)
        grad = input_gradient(model, img, target)
    return img + lr * (grad - 2 * l2 * img)


@library_copy
def class_visualisation(model: nn.Module, target, size: int = 128, steps: int = 60,
                        lr: float = 1.0, l2: float = 1e-2, jitter: int = 8,
                        blur_every: int = 10, blur_sigma: float = 0.5, seed: int = 0,
                        callback=None) -> torch.Tensor:
    """Class model visualisation (Simonyan et al. 2014, §2; notebook 02 §11): an image
    (B,3,size,size), normalised like the model's input, that each target class's logit rates
    highly. ``target`` has one class per image to make.

    Regularisers: the L2 decay of the ascent step (Simonyan et al.), random jitter and the
    clamp to valid pixel values (Mordvintsev, Olah & Tyka's DeepDream, 2015), and a periodic
    Gaussian blur (Yosinski et al. 2015; their clipping of small-norm or small-contribution
    pixels is not used).

    From a blank image (zeros after normalisation: the colour the model's preprocessing
    subtracts, ``model.input_spec.mean``, mid-grey 127/255 for Lite0), ``steps`` times: shift
    the image by a random offset of up to ``jitter`` pixels, take an :func:`ascent_step`, shift
    back; clamp to valid pixels; every ``blur_every`` steps blur with σ = ``blur_sigma``
    pixels. The offsets come from ``torch.Generator().manual_seed(seed)``.
    ``callback(step, image)``, if given, is called after every step (step 1..steps) with the
    current image, e.g. to keep frames.
    """
    refuse_if_blocked()
    size = positive_int(size, "size (pixels)")
    steps = positive_int(steps, "steps", minimum=0)
    jitter = positive_int(jitter, "jitter (pixels)", minimum=0)
    blur_every = positive_int(blur_every, "blur_every (steps; 0 = never)", minimum=0)
    device, dtype = model_device_dtype(model)
    low, high = _pixel_range(model, device, dtype)
    with preserved_state(model), torch.no_grad():
        blank = torch.zeros(1, 3, size, size, device=device, dtype=dtype)
        num_classes = logits_of(model, blank).shape[1]
    count = 1 if isinstance(target, int) else torch.as_tensor(target).reshape(-1).shape[0]
    t = as_targets(target, count, num_classes)
    img = torch.zeros(len(t), 3, size, size, device=device, dtype=dtype)
    rng = torch.Generator(device="cpu").manual_seed(seed)
    kernel = 2 * math.ceil(3 * blur_sigma) + 1 if blur_sigma > 0 else 0
    for step in range(1, steps + 1):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=rng, device="cpu").tolist()
                  if jitter else (0, 0))
        shifted = img.roll((dy, dx), dims=(2, 3))
        img = ascent_step(model, shifted, t, lr, l2).roll((-dy, -dx), dims=(2, 3))
        img = torch.maximum(torch.minimum(img, high), low)
        if blur_every and kernel and step % blur_every == 0:
            img = TF.gaussian_blur(img, [kernel, kernel], [blur_sigma, blur_sigma])
        if callback is not None:
            callback(step, img.detach().clone())
    return img.detach()


@library_copy
def fooling_image(model: nn.Module, x: torch.Tensor, target, lr: float = 0.5,
                  max_steps: int = 100) -> torch.Tensor:
    """An adversarial example (Szegedy et al. 2014; notebook 02 §12): (B,3,H,W) → (B,3,H,W),
    each image changed by the fewest normalised gradient steps after which the model's top-1
    class is its target. Not Szegedy et al.'s search (box-constrained L-BFGS), a simpler one.
    The name follows the lecture's slides; in the literature "fooling images" are Nguyen,
    Yosinski & Clune's (2015) unrecognisable images that a network classifies with high
    confidence.

    Step: x ← x + lr · g / ‖g‖₂ with g = ∂S_target/∂x (the whole image's L2 norm). An image
    stops changing as soon as its top-1 is the target (an image already there is returned
    unchanged). Raises if some image is not fooled within ``max_steps``.
    """
    refuse_if_blocked()
    max_steps = positive_int(max_steps, "max_steps", minimum=0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr is the L2 length of each step, a number > 0; got {lr!r}.")
    with preserved_state(model), autograd_on():
        x = checked_input(model, x)
        t = model_targets(model, x, target)
        for _ in range(max_steps + 1):
            with torch.no_grad():
                todo = logits_of(model, x).argmax(1) != t
            if not todo.any():
                return x.detach()
            if _ == max_steps:
                break
            g = input_gradient(model, x[todo], t[todo])
            step = lr * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x = x.detach().clone()
            x[todo] += step
    raise ValueError(f"{int(todo.sum())} image(s) still not classified as their target after "
                     f"{max_steps} steps of length {lr}; raise max_steps or lr.")


# ----------------------------------------------------- beyond the lecture: activation maximisation

# Olah et al.'s (2017, Lucid) square root of ImageNet's colour covariance, from an SVD: a
# picture is optimised in these decorrelated colour coordinates, then mapped to RGB.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])


def fourier_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """1 / max(|f|, 1/max(h,w))^decay for the rfft2 frequencies of an h×w image: (h, w//2+1).

    Scaling a white spectrum by it gives natural-image-like 1/f noise; optimising the
    spectrum then moves each frequency at a speed proportional to a natural image's
    amplitude there — the same speed *relative to natural images*, not in absolute terms
    (Olah et al. 2017; notebook 03 §4)."""
    fy = torch.fft.fftfreq(h, device="cpu")[:, None]      # on the CPU whatever the default
    fx = torch.fft.rfftfreq(w, device="cpu")[None, :]
    freqs = (fy ** 2 + fx ** 2).sqrt()
    return 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay


@library_copy
def fourier_image(spectrum: torch.Tensor, h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """A picture from its parameters in Fourier space (Olah et al. 2017; notebook 03 §4):
    (B,3,h,w//2+1) complex → (B,3,h,w) pixels in [0,1].

    image = sigmoid(C · irfft2(spectrum · fourier_scale(h, w, decay)) / 4), with the
    orthonormal inverse FFT (``norm="ortho"``), the 1/4 of Lucid, and C the colour
    decorrelation matrix :data:`COLOR_CORRELATION_SQRT` scaled so its largest column has
    norm 1 (C mixes the three channels at every pixel).
    """
    refuse_if_blocked()
    if not torch.is_complex(spectrum) or spectrum.dim() != 4 or spectrum.shape[1] != 3:
        raise ValueError(f"spectrum must be complex (B,3,h,w//2+1); got {spectrum.dtype} "
                         f"{tuple(spectrum.shape)}.")
    if spectrum.shape[-2:] != (h, w // 2 + 1):
        raise ValueError(f"spectrum of {tuple(spectrum.shape[-2:])} does not describe an "
                         f"{h}×{w} image: expected ({h}, {w // 2 + 1}).")
    scale = fourier_scale(h, w, decay).to(spectrum.device)
    decorrelated = torch.fft.irfft2(spectrum * scale, s=(h, w), norm="ortho") / 4  # (B,3,h,w)
    c = COLOR_CORRELATION_SQRT.to(decorrelated.device, decorrelated.dtype)
    c = c / c.norm(dim=0).max()
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, decorrelated))


def _robust_transform(img: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Transformation robustness as Lucid applies it (older than Olah et al. 2017, who
    combined it with the Fourier parametrisation; jitter goes back to DeepDream), one random
    draw for the whole batch: pad, jitter, scale, rotate, jitter. (B,3,H,W) → (B,3,H',W').

    The pad and the jitters scale with the picture: Lucid's 12 px pad and 8 px then 4 px
    jitters at 128 px, half of each at 64 px (a bigger pad only makes every step dearer).
    """
    pad = max(1, round(img.shape[-1] * 12 / 128))
    img = F.pad(img, (pad, pad, pad, pad), mode="constant", value=0.5)
    big, small = max(1, 2 * pad // 3), max(1, pad // 3)
    dy, dx = torch.randint(-big, big + 1, (2,), generator=rng, device="cpu").tolist()
    img = img.roll((dy, dx), dims=(2, 3))
    scale = 1 + (int(torch.randint(0, 11, (1,), generator=rng, device="cpu")) - 5) / 50
    angle = float(torch.randint(-10, 11, (1,), generator=rng, device="cpu"))
    img = TF.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[0.0],
                    interpolation=TF.InterpolationMode.BILINEAR)
    dy, dx = torch.randint(-small, small + 1, (2,), generator=rng, device="cpu").tolist()
    return img.roll((dy, dx), dims=(2, 3))


class _LayerReached(Exception):
    """Raised by :func:`_stop_at` once the layer has run: nothing after it is needed."""


@contextlib.contextmanager
def _stop_at(module: nn.Module):
    """Inside, a forward pass of the model ends (with :class:`_LayerReached`) as soon as
    ``module`` has run; hooks registered before this one (a capture) still see its output."""
    def stop(module, inputs, output):
        raise _LayerReached
    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


@library_copy
def activation_maximisation(model: nn.Module, layer, channel, size: int = 64,
                            steps: int = 16, lr: float = 0.4, seed: int = 0,
                            callback=None) -> torch.Tensor:
    """What a channel wants to see (Olah, Mordvintsev & Schubert 2017, *Feature
    Visualization*; notebook 03 §4): a picture (3,size,size) in [0,1] maximising the mean
    activation of ``channel`` at ``layer``. For a list of K channels: K pictures (K,3,size,size), one per
    channel, optimised together in one batch, each its own single-channel call (to round-off).

    The picture is :func:`fourier_image` of a spectrum (seeded from ``seed``) that Adam
    optimises, and each step the model sees it through a random :func:`_robust_transform`
    (pad, jitter, scale, rotate), so that the picture cannot exploit exact pixels. The first
    step runs the whole model (to check the layer runs once); later steps stop at the layer,
    as nothing after it changes its activation. ``callback(step, picture)`` is called after
    every step (1..steps) with the picture(s) as that step left them.
    """
    refuse_if_blocked()
    single = not isinstance(channel, (list, tuple))
    channels = [channel_index(c) for c in ([channel] if single else channel)]
    if not channels:
        raise ValueError("activation_maximisation got an empty list of channels; pass one "
                         "channel index or a non-empty list of them.")
    size = positive_int(size, "size (pixels)")
    steps = positive_int(steps, "steps", minimum=0)
    name = layer_name(model, layer)
    fixed = getattr(unwrap(model)[0], "image_size", None)      # torchvision's ViTs
    if isinstance(fixed, int):
        raise ValueError(f"{type(unwrap(model)[0]).__name__} takes only {fixed}×{fixed} images, "
                         "but activation maximisation pads, rescales and rotates the picture "
                         "every step (transformation robustness), which changes its size. Use "
                         "a model that takes any size (a CNN); for a ViT's tokens look at "
                         "attention and rollout instead.")
    device, dtype = model_device_dtype(model)
    rng = torch.Generator(device="cpu").manual_seed(seed)
    # Every channel starts from the same seeded spectrum and sees the same transformations;
    # Adam works element by element and each picture's loss is its own, so batching changes
    # no picture.
    start = torch.randn((1, 3, size, size // 2 + 1, 2), generator=rng, device="cpu") * 0.01
    spectrum = start.repeat(len(channels), 1, 1, 1, 1).to(device, dtype).requires_grad_(True)
    optimiser = torch.optim.Adam([spectrum], lr=lr)
    mean, std = normalisation(model, device)
    rows = torch.arange(len(channels), device=device)
    index = torch.tensor(channels, device=device)
    with capture(model, name) as cap, autograd_on():
        picture = fourier_image(torch.view_as_complex(spectrum), size, size)
        for step in range(1, steps + 1):
            x = (_robust_transform(picture, rng) - mean) / std
            if step == 1:
                model(x)
                check_ran(cap, name, model)
                unit_responses(cap.outputs[name], name, channels)   # refuses a bad channel
            else:
                with _stop_at(cap.layers[name]):      # the module capture already found
                    try:
                        model(x)
                    except _LayerReached:
                        pass
            optimiser.zero_grad()
            response = cap.outputs[name][rows, index]        # (K,h,w), or (K,) for units
            if response.dim() == 3:
                response = response.mean((1, 2))
            (-response.sum()).backward()
            optimiser.step()
            picture = fourier_image(torch.view_as_complex(spectrum), size, size)
            if callback is not None:
                done = picture.detach().clone()
                callback(step, done[0] if single else done)
    return picture.detach()[0] if single else picture.detach()

