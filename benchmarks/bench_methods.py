"""Time every method of ``methods.CATALOGUE`` as a ratio to its floor, on EfficientNet-Lite0
at 224 px (the ViT methods on the shapes ViT).

Floors: the least work a method could do, written in bare PyTorch.
  saliency, input gradient:  one forward + a backward to the input only (no weight grads);
  guided backprop:           the same, with each ReLU6 module's backward node clamping its
                             gradient at 0 (a hook per module);
  CAM:                       one forward, no graph;
  Grad-CAM, its activations and gradients, and the gradient variants (Grad-CAM++, XGrad-CAM,
  HiResCAM, LayerCAM): one forward + a backward that stops at the layer;
  EigenCAM:                  one forward, no graph;
  Guided Grad-CAM:           the Grad-CAM floor + the guided-backprop floor;
  ViT attention, rollout:    one forward (no graph).
SmoothGrad and Integrated Gradients are timed as multiples of one saliency call; occlusion,
Score-CAM and Ablation-CAM (one masked or ablated copy per channel of the layer) as multiples
of one forward pass, beside the number of such passes each makes (a multiple near that number
means nothing is added beyond the passes themselves).
A ratio near 1.0 means the method adds no overhead of its own. Each method is timed
alternately with its floor; the ratio is the median of the per-pair ratios. Thread count fixed.
A catalogue method with no floor here is still timed: its latency, on the catalogue's cheap
example call, is printed with "–" for the floor, so a new method is never left out.

Anchors: where Captum, pytorch-grad-cam or torch-cam is installed (``pip install -e ".[bench]"``),
a second table times each method against the same work done by that library's API (``anchors.py``),
alternately, as a ratio ours / theirs. Before timing, the two outputs are compared (ours brought
to the library's output form); a row whose outputs differ says by how much and why.

    python benchmarks/bench_methods.py [--threads 2] [--repeats 9] [--batches 1 8]
                                       [--only saliency "guided backprop"] [--no-anchors]
"""
import argparse
import os
import statistics
import time

# pytorch-grad-cam's Score-CAM draws a progress bar per call; tqdm reads this setting when it is
# first imported, and importing torch imports it
os.environ.setdefault("TQDM_DISABLE", "1")
# numpy's own OpenBLAS threads (pytorch-grad-cam's EigenCAM runs its SVD in numpy) keep spinning
# after a call and take the cores from torch's threads: timed alternately with theirs, our
# EigenCAM at batch 1 took 38 ms, against 21 ms alone. One numpy thread keeps the pools apart
# (it made their EigenCAM faster too). Set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

import anchors as anchor_libraries  # noqa: E402
from featviz_helpers import hooks, images, methods, models  # noqa: E402


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


def forward_guided_input_backward(model, x, target):
    """The floor of guided backprop: :func:`forward_input_backward` with each ReLU/ReLU6
    module's backward node clamping its gradient at 0 in place (bare PyTorch, for a network
    whose every ReLU is a module, as in Lite0)."""
    def keep_positive(grad_inputs, grad_outputs):
        grad_inputs[0].clamp_min_(0)

    def guide(module, inputs, output):
        output.grad_fn.register_hook(keep_positive)

    handles = [m.register_forward_hook(guide) for m in model.modules()
               if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6))]
    try:
        forward_input_backward(model, x, target)
    finally:
        for handle in handles:
            handle.remove()


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


# Score-CAM and Ablation-CAM make one forward pass per channel: at _blocks.15's 320 channels a
# batch of 8 takes minutes, so they are timed at a 40-channel block.
SCORE_LAYER = "_blocks.4"


def measured(model, x, target, layer, n):
    """{catalogue name: (call at the benchmark's settings, floor, what the floor is, passes)}
    for the CNN methods that have a floor."""
    to_input = lambda: forward_input_backward(model, x, target)
    guided_to_input = lambda: forward_guided_input_backward(model, x, target)
    to_layer = lambda: forward_backward_to_layer(model, x, target, layer)
    forward = lambda: forward_only(model, x)
    one_saliency = lambda: methods.saliency(model, x, target)
    with hooks.capture(model, SCORE_LAYER) as cap, torch.no_grad():
        model(x[:1])
    channels = cap.activations[SCORE_LAYER].shape[1]     # Score-CAM's and Ablation-CAM's passes
    return {
        "input gradient": (lambda: methods.input_gradient(model, x, target), to_input,
                           "fwd + input bwd", 1),
        "saliency": (one_saliency, to_input, "fwd + input bwd", 1),
        "guided backprop": (lambda: methods.guided_backprop(model, x, target), guided_to_input,
                            "guided fwd + bwd", 1),
        "CAM": (lambda: methods.cam(model, x, target), forward, "one forward", 1),
        "layer activations and gradients": (
            lambda: methods.layer_activations_and_gradients(model, x, target, layer), to_layer,
            "fwd + bwd to layer", 1),
        "Grad-CAM": (lambda: methods.grad_cam(model, x, target, layer), to_layer,
                     "fwd + bwd to layer", 1),
        "Guided Grad-CAM": (lambda: methods.guided_grad_cam(model, x, target, layer),
                            lambda: (to_layer(), guided_to_input()), "both floors", 1),
        "SmoothGrad": (lambda: methods.smoothgrad(model, x, target, samples=n), one_saliency,
                       "one saliency", n),
        "Integrated Gradients": (lambda: methods.integrated_gradients(model, x, target, steps=n),
                                 one_saliency, "one saliency", n),
        "occlusion": (lambda: methods.occlusion(model, x, target, window=56, stride=28),
                      forward, "one forward", 50),
        **{name: (lambda fn=fn: fn(model, x, target, layer), to_layer, "fwd + bwd to layer", 1)
           for name, fn in [("Grad-CAM++", methods.grad_cam_plus_plus),
                            ("XGrad-CAM", methods.xgrad_cam), ("HiResCAM", methods.hires_cam),
                            ("LayerCAM", methods.layer_cam)]},
        "EigenCAM": (lambda: methods.eigen_cam(model, x, target, layer), forward,
                     "one forward", 1),
        "Score-CAM": (lambda: methods.score_cam(model, x, target, SCORE_LAYER), forward,
                      "one forward", channels + 1),
        "Ablation-CAM": (lambda: methods.ablation_cam(model, x, target, SCORE_LAYER), forward,
                         "one forward", channels + 1),
    }


def vit_measured(vit, x):
    """The same for the ViT methods, each against one forward pass."""
    attn = methods.vit_attention(vit, x)
    forward = lambda: forward_only(vit, x)
    return {
        "attention": (lambda: methods.vit_attention(vit, x), forward, "one forward", 1),
        "attention rollout": (lambda: methods.attention_rollout(methods.vit_attention(vit, x)),
                              forward, "one forward", 1),
        "rollout (from attention)": (lambda: methods.attention_rollout(attn), forward,
                                     "one forward", 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--only", nargs="+", metavar="ROW",
                        help="time only these rows, by their catalogue name (e.g. saliency "
                             "\"guided backprop\" \"attention rollout\"); case-insensitive, all "
                             "by default")
    parser.add_argument("--no-anchors", action="store_true",
                        help="skip the table against Captum, pytorch-grad-cam and torch-cam")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from featviz_helpers import shapes

    model = models.load_model("efficientnet_lite0")
    vit = models.load_model("shapes_vit")
    photo = images.preprocess(images.load_image("chelsea"), model)
    layer, n = "_blocks.15", 8
    print(f"EfficientNet-Lite0, 224 px (ViT methods: shapes_vit, 64 px), {args.threads} threads, "
          f"median of {args.repeats}; torch {torch.__version__}")
    print(f"Grad-CAM family at {layer} (Score-CAM and Ablation-CAM at {SCORE_LAYER}); SmoothGrad "
          f"and IG with {n} passes; occlusion with a 56 px window, stride 28 (49 positions + 1 "
          "unoccluded); floors as in the docstring")
    print(f"{'batch':>5}  {'method':<32} {'time (ms)':>10} {'floor (ms)':>11} {'floor':<18} "
          f"{'ratio':>6} {'passes':>6}")
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        target = torch.arange(b) % 1000
        x_vit = images.preprocess(shapes.generate(b, seed=0)[0], vit)
        target_vit = torch.arange(b) % len(shapes.CLASSES)
        rows = {**measured(model, x, target, layer, n), **vit_measured(vit, x_vit)}
        for method in methods.CATALOGUE:
            if not wanted(args, method.name):
                continue
            if method.name in rows:
                fn, floor, what, passes = rows[method.name]
                repeats = args.repeats if passes == 1 else max(3, args.repeats // 3)
                t, f, ratio = paired_times(fn, floor, repeats)
                print(f"{b:>5}  {method.name:<32} {t * 1e3:>10.1f} {f * 1e3:>11.1f} {what:<18} "
                      f"{ratio:>6.2f} {passes:>6}")
            else:       # no floor: the latency of the catalogue's example call
                on_vit = method.architecture == "ViT"
                call = (lambda: method.example(vit, x_vit, target_vit, None)) if on_vit else \
                    (lambda: method.example(model, x, target, layer))
                t = statistics.median(seconds(call) for _ in range(max(3, args.repeats // 3)))
                print(f"{b:>5}  {method.name:<32} {t * 1e3:>10.1f} {'–':>11} {'(example call)':<18} "
                      f"{'–':>6} {'–':>6}")
        if wanted(args, "rollout (from attention)"):
            fn, floor, what, passes = rows["rollout (from attention)"]
            t, f, ratio = paired_times(fn, floor, args.repeats)
            print(f"{b:>5}  {'rollout (from attention)':<32} {t * 1e3:>10.1f} {f * 1e3:>11.1f} "
                  f"{what:<18} {ratio:>6.2f} {passes:>6}")
    if not args.no_anchors:
        against_anchors(args, model, photo, layer, n)


def against_anchors(args, model, photo, layer, n):
    """The second table: each method against the same work in Captum, pytorch-grad-cam and
    torch-cam."""
    found = anchor_libraries.libraries()
    print(f"\nagainst the libraries installed here: {', '.join(found) or 'none'} "
          "(pip install -e \".[bench]\" for Captum, pytorch-grad-cam and torch-cam)")
    if not found:
        return
    print(f"{'batch':>5}  {'method':<22} {'library':<17} {'ours (ms)':>10} {'theirs (ms)':>12} "
          f"{'ours/theirs':>12}  same output?")
    for b in args.batches:
        x = photo.repeat(b, 1, 1, 1)
        target = torch.arange(b) % 1000
        ours_of = {name: fn for name, (fn, *_rest) in measured(model, x, target, layer, n).items()}
        for row, row_anchors in anchor_libraries.anchors(model, x, target, layer, n,
                                                         SCORE_LAYER).items():
            if not wanted(args, row):
                continue
            for anchor in row_anchors:
                gap, same = anchor_libraries.agreement(row, anchor, model, x, target, n)
                why = anchor_libraries.KNOWN_DIFFERENCES.get((row, anchor.library), "")
                verdict = f"yes (max |Δ| {gap:.1e})" if same else \
                    f"NO: max |Δ| {gap:.1e}{'; ' + why if why else ''}"
                heavy = row in ("Score-CAM", "Ablation-CAM", "occlusion")
                repeats = max(3, args.repeats // 3) if heavy else args.repeats
                t, theirs, ratio = paired_times(ours_of[row], anchor.call, repeats)
                print(f"{b:>5}  {row:<22} {anchor.library:<17} {t * 1e3:>10.1f} "
                      f"{theirs * 1e3:>12.1f} {ratio:>12.2f}  {verdict}")


def wanted(args, name: str) -> bool:
    """Whether ``--only`` (if given) names this row."""
    return args.only is None or name.lower() in {o.lower() for o in args.only}


if __name__ == "__main__":
    main()
