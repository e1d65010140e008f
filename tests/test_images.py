"""images: defensive loading (any mode → RGB, clear refusals) and preprocess/deprocess."""
import numpy as np
import pytest
import torch
from PIL import Image

from featviz_helpers import images


@pytest.mark.parametrize("name", sorted(images.PHOTOS))
def test_every_photo_loads_as_rgb(name):
    img = images.load_image(name)
    assert img.mode == "RGB" and min(img.size) >= 224


def test_every_photo_has_a_source_entry():
    sources = (images.DATA_DIR / "SOURCES.md").read_text(encoding="utf-8")
    for filename in images.PHOTOS.values():
        assert f"`{filename}`" in sources, f"{filename} has no licence line in data/SOURCES.md"


def save(tmp_path, img, name):
    path = tmp_path / name
    img.save(path)
    return path


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    gray = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1)), mode="L")
    rgb = np.asarray(images.load_image(save(tmp_path, gray, "g.png")))
    assert rgb.shape == (32, 64, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    assert rgb[0, 10, 0] == 40


def test_rgba_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (255, 0, 0, 0))       # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))                 # one opaque blue pixel
    rgb = images.load_image(save(tmp_path, rgba, "a.png"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((5, 5)) == (255, 255, 255) and rgb.getpixel((0, 0)) == (0, 0, 255)


def test_palette_image(tmp_path):
    pal = Image.new("RGB", (20, 20), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert images.load_image(save(tmp_path, pal, "p.png")).getpixel((3, 3)) == (10, 200, 30)


def test_16_bit_grayscale_is_rescaled_not_clipped(tmp_path):
    a = np.full((16, 16), 65535, dtype=np.uint16)
    a[:, :8] = 32768
    img = Image.fromarray(a)
    path = save(tmp_path, img, "deep.png")
    rgb = np.asarray(images.load_image(path))
    assert rgb[0, 15, 0] == 255 and rgb[0, 0, 0] == 128   # half scale, not clipped to 255


def test_non_image_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture")
    with pytest.raises(ValueError, match="not an image"):
        images.load_image(path)


def test_absurd_sizes_are_refused(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (300, 200)), "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 50_000)
    with pytest.raises(ValueError, match="limit"):
        images.load_image(path)
    tiny = save(tmp_path, Image.new("RGB", (4, 100)), "tiny.png")
    with pytest.raises(ValueError, match="at least"):
        images.load_image(tiny)


def test_unknown_name_lists_photos():
    with pytest.raises(FileNotFoundError, match="chelsea"):
        images.load_image("chelsey")


def test_preprocess_shape_and_normalisation(lite0):
    white = Image.new("RGB", (400, 300), (255, 255, 255))
    x = images.preprocess([white, white], lite0)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, (255 - 127) / 128))   # Lite0: (p − 127)/128


def test_preprocess_then_deprocess_round_trips(lite0):
    img = images.load_image("coffee")
    x = images.preprocess(img, lite0)
    back = images.deprocess(x, lite0)
    assert back.shape == (1, 224, 224, 3)
    assert images.deprocess(x[0], lite0).shape == (224, 224, 3)
    again = images.preprocess(torch.from_numpy(back).permute(0, 3, 1, 2), lite0)
    assert torch.allclose(again, x, atol=1e-5)


def test_preprocess_refuses_bad_input(lite0):
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        images.preprocess(torch.full((1, 3, 8, 8), 200.0), lite0)
    with pytest.raises(ValueError, match="B,3,H,W"):
        images.preprocess(torch.rand(3, 8, 8), lite0)
    with pytest.raises(TypeError):
        images.preprocess("chelsea", lite0)
    with pytest.raises(ValueError, match="input_spec"):
        images.preprocess(Image.new("RGB", (10, 10)), torch.nn.Linear(2, 2))
