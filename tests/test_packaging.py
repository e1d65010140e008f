"""Installable anywhere: a wheel and an sdist carry the photos, SOURCES.md and the shapes
models, and a non-editable install finds them from any working directory."""
import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ["SOURCES.md", "chelsea.png", "coffee.png", "camera.png", "grace_hopper.jpg", "rocket.jpg",
        "astronaut.png", "cat_and_coffee.png", "models/shapes_cnn.pt", "models/shapes_cnn.json",
        "models/shapes_cnn_biased.pt", "models/shapes_vit.pt", "models/shapes_vit.json"]


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """The wheel and the sdist, built offline from the checkout (no build isolation)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
                    "--outdir", str(out), str(ROOT)], check=True, capture_output=True)
    (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
    return wheel, sdist


def test_wheel_and_sdist_carry_the_data(dists):
    wheel, sdist = dists
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    in_sdist = {name.split("/", 1)[1] for name in tarfile.open(sdist).getnames() if "/" in name}
    for name in DATA:
        assert f"featviz_helpers/data/{name}" in in_wheel, f"wheel lacks {name}"
        assert f"data/{name}" in in_sdist, f"sdist lacks data/{name}"


def test_wheel_carries_every_module(dists):
    # pyproject.toml lists the packages explicitly: a new subpackage must be added there.
    wheel, _ = dists
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "featviz_helpers").rglob("*.py")]
    assert modules and not [m for m in modules if m not in in_wheel], \
        f"the wheel lacks {[m for m in modules if m not in in_wheel]}: list the package in pyproject.toml"


def test_wheel_in_a_fresh_environment_loads_photos_and_models_from_anywhere(dists, tmp_path):
    wheel, _ = dists
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    str(wheel)], check=True)
    # The dependencies (torch, torchvision, ...) are borrowed from this environment rather
    # than downloaded again; the borrowed folder holds no copy of featviz_helpers itself.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import featviz_helpers, torch\n"
        "from featviz_helpers import images, models\n"
        "print(featviz_helpers.__file__)\n"
        "lite0 = models.load_model('efficientnet_lite0')\n"
        "x = images.preprocess(images.load_image('chelsea'), lite0)\n"
        "with torch.no_grad():\n"
        "    print(lite0.class_names[lite0(x).argmax().item()])\n"
        "cnn = models.load_model('shapes_cnn')\n"
        "print(sum(p.numel() for p in cnn.parameters()))\n"
    )
    env_vars = {k: v for k, v in os.environ.items() if k != "FEATVIZ_DATA"}
    done = subprocess.run([str(python), "-c", script], cwd=elsewhere, capture_output=True,
                          text=True, env=env_vars)
    assert done.returncode == 0, done.stderr[-3000:]
    location, top1, n_params = done.stdout.split("\n")[:3]
    assert Path(location).resolve().is_relative_to(env.resolve()), location
    assert "cat" in top1, top1
    assert int(n_params) > 100_000
