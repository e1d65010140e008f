"""Time each visualisation method as a ratio to its floor, on EfficientNet-Lite0 at 224 px
(and the ViT attention methods on the shapes ViT).

Floors: the least work a method could do, written in bare PyTorch.
  saliency, guided backprop: one forward + a backward to the input only (no weight grads);
  CAM:                       one forward, no graph;
  Grad-CAM:                  one forward + a backward that stops at the layer;
  Guided Grad-CAM:           the Grad-CAM floor + the guided-backprop floor;
  ViT attention, rollout:    one forward (no graph).
SmoothGrad and Integrated Gradients are timed as multiples of one saliency call, occlusion as
a multiple of one forward pass, beside the number of such passes each makes.
A ratio near 1.0 means the method adds no overhead of its own. Each method is timed
alternately with its floor; the ratio is the median of the per-pair ratios. Thread count fixed.

    python benchmarks/bench_methods.py [--threads 2] [--repeats 7] [--batches 1 8]
                                       [--only saliency "guided bp"]
"""
import argparse
import statistics
import time

import torch

from featviz_helpers import hooks, images, methods, models


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_times(fn, floor, repeats: int) -> tuple[float, float, float]:
    """Median time of ``fn``, of ``floor``, and median of their per-pair ratios.

    The two are timed alternately, so a drift in machine speed (frequency, other load)
    affects both sides of each ratio alike.
    """
    for _ in range(2):  # warm-up: allocator, kernels, caches
        fn(), floor()
    pairs = [(seconds(fn), seconds(floor)) for _ in range(repeats)]
    return (statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs),
            statistics.median(a / b for a, b in pairs))


def forward_input_backward(model, x, target):
    """The floor of a gradient method: forward, then d(scores)/dx only."""
    with hooks.preserved_state(model):
        xr = x.detach().requires_grad_(True)
        scores = model(xr).gather(1, target[:, None]).sum()
        torch.autograd.grad(scores, xr)


def forward_only(model, x):
    with torch.no_grad():
        model(x)


def forward_backward_to_layer(model, x, target, layer):
    """The floor of Grad-CAM: the graph restarts at ``layer``; backward stops there."""
    module = models.get_layer(model, layer)
    leaves = []

    def restart(mod, inputs, output):
        leaves.append(output.detach().requires_grad_(True))
        return leaves[-1]

    handle = module.register_forward_hook(restart)
    try:
        with hooks.preserved_state(model):
            scores = model(x).gather(1, target[:, None]).sum()
            torch.autograd.grad(scores, leaves[0])
    finally:
        handle.remove()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--only", nargs="+", metavar="ROW",
                        help="time only these rows (e.g. saliency \"guided bp\" or "
                             "\"extraction + rollout\"); case-insensitive, all by default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = models.load_model("efficientnet_lite0")
    photo = images.preprocess(images.load_image("chelsea"), model)
    print(f"EfficientNet-Lite0, 224 px, {args.threads} threads, median of {args.repeats}; "
          f"torch {torch.__version__}")
    print("Grad-CAM at _blocks.15; floors as in this script's docstring")
    print(f"{'batch':>5}  {'method':<10} {'time (ms)':>10} {'floor (ms)':>11} {'ratio':>6}")
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        target = torch.arange(b) % 1000
        layer = "_blocks.15"
        to_input = lambda: forward_input_backward(model, x, target)
        to_layer = lambda: forward_backward_to_layer(model, x, target, layer)
        rows = [
            ("saliency", lambda: methods.saliency(model, x, target), to_input),
            ("guided bp", lambda: methods.guided_backprop(model, x, target), to_input),
            ("CAM", lambda: methods.cam(model, x, target), lambda: forward_only(model, x)),
            ("Grad-CAM", lambda: methods.grad_cam(model, x, target, layer), to_layer),
            ("Guided GC", lambda: methods.guided_grad_cam(model, x, target, layer),
             lambda: (to_layer(), to_input())),
        ]
        for name, fn, floor in rows:
            if not wanted(args, name):
                continue
            t, f, ratio = paired_times(fn, floor, args.repeats)
            print(f"{b:>5}  {name:<10} {t * 1e3:>10.1f} {f * 1e3:>11.1f} {ratio:>6.2f}")
    if any(wanted(args, name) for name in BEYOND_ROWS):
        beyond_table(args, model, photo)
    if any(wanted(args, name) for name in VIT_ROWS):
        vit_table(args)


def wanted(args, name: str) -> bool:
    """Whether ``--only`` (if given) names this row."""
    return args.only is None or name.lower() in {o.lower() for o in args.only}


VIT_ROWS = ("attention extraction", "rollout (from attention)", "extraction + rollout")
BEYOND_ROWS = ("SmoothGrad", "IG", "occlusion")


def beyond_table(args, model, photo):
    """The methods that repeat a basic pass: SmoothGrad (n noisy copies) and Integrated
    Gradients (m points on a path) as multiples of one saliency call, whose floor they share,
    and occlusion as a multiple of one forward pass, against the forward passes it makes.
    A multiple near n (or m, or the window count + 1) means nothing is added beyond the
    passes themselves; less means batching the passes made each cheaper."""
    n = 8
    repeats = max(3, args.repeats // 3)        # each call is n passes: fewer repeats suffice
    print(f"\nSmoothGrad and IG with {n} passes, as multiples of one saliency call; occlusion "
          f"(56 px window, stride 28: 49 positions + 1 unoccluded) as a multiple of one forward")
    print(f"{'batch':>5}  {'method':<10} {'time (ms)':>10} {'unit (ms)':>10} {'multiple':>9} "
          f"{'passes':>7}")
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        target = torch.arange(b) % 1000
        one_saliency = lambda: methods.saliency(model, x, target)
        rows = [
            ("SmoothGrad", lambda: methods.smoothgrad(model, x, target, samples=n), one_saliency, n),
            ("IG", lambda: methods.integrated_gradients(model, x, target, steps=n), one_saliency, n),
            ("occlusion", lambda: methods.occlusion(model, x, target, window=56, stride=28),
             lambda: forward_only(model, x), 50),
        ]
        for name, fn, unit, passes in rows:
            if not wanted(args, name):
                continue
            t, u, ratio = paired_times(fn, unit, repeats)
            print(f"{b:>5}  {name:<10} {t * 1e3:>10.1f} {u * 1e3:>10.1f} {ratio:>9.2f} {passes:>7}")


def vit_table(args):
    """Attention extraction and rollout on the shapes ViT, as ratios to one forward pass."""
    from featviz_helpers import shapes

    vit = models.load_model("shapes_vit")
    print("\nshapes_vit (torchvision VisionTransformer, 64 px, patch 8), floor = one forward")
    print(f"{'batch':>5}  {'step':<24} {'time (ms)':>8} {'floor (ms)':>11} {'ratio':>6}")
    for b in args.batches:
        x = images.preprocess(shapes.generate(b, seed=0)[0], vit)
        attn = methods.vit_attention(vit, x)
        forward = lambda: forward_only(vit, x)
        rows = [("attention extraction", lambda: methods.vit_attention(vit, x)),
                ("rollout (from attention)", lambda: methods.attention_rollout(attn)),
                ("extraction + rollout",
                 lambda: methods.attention_rollout(methods.vit_attention(vit, x)))]
        for name, fn in rows:
            if not wanted(args, name):
                continue
            t, f, ratio = paired_times(fn, forward, args.repeats)
            print(f"{b:>5}  {name:<24} {t * 1e3:>8.1f} {f * 1e3:>11.1f} {ratio:>6.2f}")

if __name__ == "__main__":
    main()
