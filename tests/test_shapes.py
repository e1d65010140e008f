"""shapes: a seeded synthetic world with exact object masks, and its biased variants."""
import pytest
import torch

from featviz_helpers import shapes


def test_shapes_and_types():
    images, labels, masks = shapes.generate(50, seed=0)
    assert images.shape == (50, 3, 64, 64) and images.dtype == torch.float32
    assert labels.shape == (50,) and labels.dtype == torch.long
    assert masks.shape == (50, 64, 64) and masks.dtype == torch.bool
    assert images.min() >= 0 and images.max() <= 1
    assert len(shapes.CLASSES) >= 6 and labels.max() < len(shapes.CLASSES)


@pytest.mark.parametrize("variant", shapes.VARIANTS)
def test_same_seed_same_images_other_seed_other_images(variant):
    a = shapes.generate(20, seed=5, variant=variant)
    b = shapes.generate(20, seed=5, variant=variant)
    c = shapes.generate(20, seed=6, variant=variant)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_masks_cover_exactly_the_drawn_object():
    images, labels, masks = shapes.generate(300, seed=1)
    for img, mask in zip(images, masks):
        inside = img[:, mask]                                 # (3, pixels)
        colour = inside[:, :1]
        assert torch.equal(inside, colour.expand_as(inside)), "object is one flat colour"
        outside = img[:, ~mask]
        same = (outside == colour).all(0).float().mean()
        assert same < 0.01, "background pixels look like the object"
        area = mask.float().mean()
        assert 0.01 < area < 0.4


def test_every_class_drawn_and_distinct_areas():
    _, labels, masks = shapes.generate(600, seed=2)
    assert set(labels.tolist()) == set(range(len(shapes.CLASSES)))
    area = lambda k: masks[labels == k].float().mean()
    ring, disk = shapes.CLASSES.index("ring"), shapes.CLASSES.index("disk")
    assert area(ring) < area(disk)  # a ring is a disk with a hole


def test_biased_split_statistics():
    n = 6000
    _, labels, _, kinds = shapes.generate(n, seed=3, variant="biased", return_backgrounds=True)
    own = (kinds == labels).float().mean().item()
    assert abs(own - shapes.BIAS) < 0.015
    _, labels, _, kinds = shapes.generate(n, seed=3, variant="swapped", return_backgrounds=True)
    assert not (kinds == labels).any()
    assert set(kinds.tolist()) == set(range(len(shapes.BACKGROUNDS)))
    _, labels, _, kinds = shapes.generate(n, seed=3, variant="plain", return_backgrounds=True)
    assert abs((kinds == labels).float().mean().item() - 1 / len(shapes.BACKGROUNDS)) < 0.02
    counts = torch.bincount(labels, minlength=len(shapes.CLASSES)).float() / n
    assert (counts - 1 / len(shapes.CLASSES)).abs().max() < 0.02


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        shapes.generate(4, 0, variant="wolves")
    with pytest.raises(ValueError):
        shapes.generate(0, 0)
