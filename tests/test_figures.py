"""The lecture figures command: every figure as PNG and PDF with a manifest, deterministic,
zoo and ViT-B/16 figures made from cached weights and listed as skipped without them."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torchvision

from featviz_helpers import figures, models


def run_command(out, *args, env=None):
    done = subprocess.run([sys.executable, "-m", "featviz_helpers.figures", "--out", str(out),
                           *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture()
def offline_env(tmp_path):
    """An environment with an empty torch cache; any download goes to a closed local port."""
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        env[var] = "http://127.0.0.1:9"
    for var in ("no_proxy", "NO_PROXY"):
        env.pop(var, None)
    return env


def test_every_figure_made_or_skipped_with_a_reason(tmp_path, offline_env):
    out = tmp_path / "figures"
    done = run_command(out, env=offline_env)
    assert "figures:" in done.stderr                      # the tqdm progress bar
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    made = {entry["name"]: entry for entry in manifest["figures"]}
    skipped = {entry["name"]: entry for entry in manifest["skipped"]}
    assert set(made) | set(skipped) == {f.name for f in figures.FIGURES}
    assert set(skipped) == {"zoo_first_layers", "vit_b16_rollout"}
    assert all("not cached" in e["reason"] and "load_model" in e["reason"] for e in skipped.values())
    draws = {f.name: f"featviz_helpers.figures.{f.draw.__name__}" for f in figures.FIGURES}
    for entry in made.values():
        assert entry["caption"] and entry["lecture_figure"] and entry["model"]
        assert entry["drawing_function"] == draws[entry["name"]]
        assert entry["notebook_section"][:2] in {"01", "02", "03", "04", "05", "06"}
        assert entry["files"] == [f"{entry['name']}.png", f"{entry['name']}.pdf"]
        for name in entry["files"]:
            assert (out / name).stat().st_size > 1000


def test_figures_are_deterministic(tmp_path):
    chosen = ["relu_backward_example", "saliency_maps", "vit_rollout"]
    first, second = tmp_path / "a", tmp_path / "b"
    run_command(first, "--only", *chosen)
    run_command(second, "--only", *chosen)
    for name in chosen:
        for ext in ("png", "pdf"):
            a, b = (first / f"{name}.{ext}").read_bytes(), (second / f"{name}.{ext}").read_bytes()
            assert a == b, f"{name}.{ext} differs between two runs"


def test_zoo_and_vit_b16_figures_from_cached_weights(tmp_path, offline_env):
    torch.manual_seed(0)
    for name in ("resnet18", "densenet121", "vit_b_16"):
        path = os.path.join(offline_env["TORCH_HOME"], "hub", "checkpoints",
                            os.path.basename(models.weights_path(name)))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    out = tmp_path / "figures"
    run_command(out, "--only", "zoo_first_layers", "vit_b16_rollout", env=offline_env)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    made = {entry["name"]: entry for entry in manifest["figures"]}
    assert set(made) == {"zoo_first_layers", "vit_b16_rollout"} and not manifest["skipped"]
    assert made["zoo_first_layers"]["note"] == "not cached, so not drawn: alexnet, resnet101"


def test_unknown_figure_name_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "-m", "featviz_helpers.figures", "--out",
                           str(tmp_path), "--only", "salency_maps"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown figure(s) ['salency_maps']" in done.stderr


def test_only_merges_into_an_existing_manifest(tmp_path):
    """--only into a folder keeps the manifest's entries for the figures not remade (while their
    files are there) and replaces the remade ones."""
    read = lambda: json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    figures.make_all(tmp_path, ["relu_backward_example", "vit_rollout"], progress=False)
    first = {e["name"]: e for e in read()["figures"]}
    figures.make_all(tmp_path, ["relu_backward_example"], progress=False)
    second = read()
    assert [e["name"] for e in second["figures"]] == ["relu_backward_example", "vit_rollout"]
    assert second["figures"][1] == first["vit_rollout"] and not second["skipped"]
    assert len([e for e in second["figures"] if e["name"] == "relu_backward_example"]) == 1
    (tmp_path / "vit_rollout.png").unlink()                 # a figure whose file is gone
    figures.make_all(tmp_path, ["relu_backward_example"], progress=False)
    assert [e["name"] for e in read()["figures"]] == ["relu_backward_example"]


def test_deconvnet_map_does_not_depend_on_the_image():
    """relu_rules' caption: Lite0 has no max-pooling and the deconvnet rule reads only the sign
    of the upstream gradient, so for one class its input gradient is the same for any image."""
    from featviz_helpers import images, methods
    lite0 = models.load_model("efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in lite0.modules())
    x = images.preprocess([images.load_image("chelsea"), images.load_image("camera")], lite0)
    torch.manual_seed(0)
    x = torch.cat([x, torch.randn(1, *x.shape[1:])])
    maps = methods.input_gradient(lite0, x, torch.tensor([282, 282, 282]), rule="deconvnet")
    scale = maps.abs().max()
    assert scale > 0
    for other in maps[1:]:
        assert ((other - maps[0]).abs().max() / scale) < 1e-4
    standard = methods.input_gradient(lite0, x[:2], torch.tensor([282, 282]))
    assert ((standard[1] - standard[0]).abs().max() / standard.abs().max()) > 0.1


def test_a_box_on_the_image_border_is_drawn_inside_the_image():
    """draw_box insets the outline by half its stroke, so a whole-image box (as CAM gives when
    the thresholded map touches every border) stays inside the axes instead of half outside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(3.3, 3.3))
    ax.imshow(np.zeros((224, 224, 3)))
    figures.draw_box(ax, (0, 0, 223, 223))
    (patch,) = ax.patches
    x, y = patch.get_xy()
    assert -0.5 < x and -0.5 < y
    assert x + patch.get_width() < 223.5 and y + patch.get_height() < 223.5
    assert patch.get_width() > 200
    plt.close(fig)
