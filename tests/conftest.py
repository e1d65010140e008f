"""Shared fixtures: the real Lite0 model and a few preprocessed photos (loaded once)."""
import pytest
import torch

from featviz_helpers import images, models


@pytest.fixture(scope="session")
def lite0():
    return models.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def cnn():
    """The course's shapes_cnn (trained here, loaded offline)."""
    return models.load_model("shapes_cnn")


@pytest.fixture(scope="session")
def photo_batch(lite0):
    """chelsea, coffee, camera as one (3,3,224,224) batch."""
    return images.preprocess([images.load_image(n) for n in ("chelsea", "coffee", "camera")],
                             lite0)


@pytest.fixture()
def small_cnn():
    """A tiny random CNN with in-place ReLU and a GAP→FC head (fast to differentiate)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(inplace=True),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    )
    return net.eval()


@pytest.fixture()
def torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache in a temporary TORCH_HOME.

    Any download attempt goes to a closed local port and fails at once, network or not.
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path
