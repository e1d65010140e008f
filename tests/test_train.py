"""train: a few real steps save, reload and resume; the bundled models reach their accuracy."""
import json

import pytest
import torch

from featviz_helpers import images, models, shapes, train


@pytest.fixture()
def small_evaluations(monkeypatch):
    monkeypatch.setattr(train, "HELDOUT_SIZE", 64)
    monkeypatch.setattr(train, "CURVE_SIZE", 32)


def run(tmp_path, *extra):
    train.main(["shapes_cnn", "--steps", "4", "--batch", "8", "--eval-every", "2",
                "--threads", "1", "--quiet", "--out", str(tmp_path), *extra])


@pytest.mark.usefixtures("small_evaluations")
def test_training_smoke_saves_and_reloads(tmp_path):
    run(tmp_path)
    record = json.loads((tmp_path / "shapes_cnn.json").read_text())
    assert record["steps"] == 4 and record["seed"] == 0
    assert record["command"].startswith("python -m featviz_helpers.train shapes_cnn")
    assert set(record["heldout_accuracy"]) == {"plain"}
    state = torch.load(tmp_path / "shapes_cnn.pt", map_location="cpu", weights_only=True)
    model = models.build_architecture("shapes_cnn")
    model.load_state_dict(state)                       # strict: every key matches
    assert not (tmp_path / "shapes_cnn.ckpt").exists()


@pytest.mark.usefixtures("small_evaluations")
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    run(tmp_path / "straight")
    run(tmp_path / "resumed", "--stop-after", "2")
    assert (tmp_path / "resumed" / "shapes_cnn.ckpt").exists()
    assert not (tmp_path / "resumed" / "shapes_cnn.pt").exists()
    run(tmp_path / "resumed", "--resume")
    a = torch.load(tmp_path / "straight" / "shapes_cnn.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "shapes_cnn.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


@pytest.mark.usefixtures("small_evaluations")
def test_resume_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no checkpoint"):
        run(tmp_path, "--resume")


def test_learning_rate_schedule():
    assert train.learning_rate(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert train.learning_rate(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert train.learning_rate(100, 1.0, 10, 100) == pytest.approx(0.0)


# ---- the committed models, on the fixed held-out set the training record names ----------

@pytest.fixture(scope="module")
def heldout_accuracy():
    def accuracy(name, variant):
        model = models.load_model(name)
        record = json.loads(open(models.weights_path(name)[:-3] + ".json").read())
        assert record["heldout_seed"] == train.HELDOUT_SEED
        return train.accuracy(model, variant)
    return accuracy


def test_shapes_cnn_accuracy(heldout_accuracy):
    assert heldout_accuracy("shapes_cnn", "plain") >= 0.97


def test_shapes_vit_accuracy(heldout_accuracy):
    assert heldout_accuracy("shapes_vit", "plain") >= 0.85


def test_biased_cnn_learned_the_shortcut(heldout_accuracy):
    biased = heldout_accuracy("shapes_cnn_biased", "biased")
    swapped = heldout_accuracy("shapes_cnn_biased", "swapped")
    assert biased >= 0.95
    assert swapped <= biased - 0.15, (biased, swapped)


def test_bundled_models_load_with_shapes_metadata():
    for name in models.SHAPES_MODELS:
        model = models.load_model(name)
        assert model.class_names == list(shapes.CLASSES) and not model.training
        assert model.input_spec == models.SHAPES_SPEC
    cnn = models.load_model("shapes_cnn")
    assert models.first_conv(cnn).kernel_size == (7, 7)
    with torch.no_grad():
        features = cnn.stage5(cnn.stage4(cnn.stage3(cnn.stage2(cnn.stage1(torch.zeros(1, 3, 64, 64))))))
    assert features.shape[-2:] == (16, 16)


def test_shapes_cnn_grad_cam_points_at_the_objects():
    from featviz_helpers import images, methods, metrics
    cnn = models.load_model("shapes_cnn")
    pictures, labels, masks = shapes.generate(200, seed=123)
    maps = methods.grad_cam(cnn, images.preprocess(pictures, cnn), labels, "stage5")
    hit = metrics.pointing_game(maps, masks).mean().item()
    chance = masks.float().mean().item()
    assert hit > 4 * chance, (hit, chance)


def test_predict_is_the_top_1_class_in_passes_and_restores_the_mode():
    """50 shapes images are more than one pass (24 at 64 px): the answer is still the
    whole batch's argmax, and a model in training mode is left in it."""
    cnn = models.load_model("shapes_cnn")
    pictures, _, _ = shapes.generate(50, seed=3)
    x = images.preprocess(pictures, cnn)
    with torch.no_grad():
        expected = cnn(x).argmax(1)
    cnn.train()
    assert torch.equal(train.predict(cnn, x), expected)
    assert cnn.training and all(m.training for m in cnn.modules())
    assert all(p.requires_grad for p in cnn.parameters())
