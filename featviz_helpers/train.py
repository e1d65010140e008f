"""Train the shapes-world models on CPU and write their weights and training record.

    python -m featviz_helpers.train shapes_cnn
    python -m featviz_helpers.train shapes_cnn_biased
    python -m featviz_helpers.train shapes_vit

Every step draws a fresh batch from ``shapes.generate`` with a seed derived from
(``--seed``, step), so a run is reproducible and a resumed run sees the same data as an
uninterrupted one. Writes ``OUT/NAME.pt`` (the state dict) and ``OUT/NAME.json`` (command,
seed, steps, CPU time, held-out accuracy, learning curve). ``--resume`` continues from
``OUT/NAME.ckpt`` (saved every ``--save-every`` steps), which is deleted when training ends.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import models, shapes
from .hooks import preserved_state
from .images import preprocess
from .methods._inputs import images_per_pass

# Held-out images come from seeds no training step uses (training seeds are < 2**40).
HELDOUT_SEED = 2**40 + 7
HELDOUT_SIZE = 2000   # images in the final score
CURVE_SIZE = 500      # images per point of the learning curve

RECIPES = {
    # name: training variant, steps, batch, peak learning rate, weight decay, warmup steps
    "shapes_cnn": dict(variant="plain", steps=800, batch=64, lr=3e-3, weight_decay=1e-4,
                       warmup=100),
    "shapes_cnn_biased": dict(variant="biased", steps=800, batch=64, lr=3e-3,
                              weight_decay=1e-4, warmup=100),
    "shapes_vit": dict(variant="plain", steps=8000, batch=128, lr=2e-3, weight_decay=0.05,
                       warmup=500),
}
# The variants each model is scored on after training.
EVAL_VARIANTS = {"shapes_cnn": ("plain",), "shapes_vit": ("plain",),
                 "shapes_cnn_biased": ("biased", "swapped", "plain")}


def batch_seed(seed: int, step: int) -> int:
    return seed * 10_000_000 + step


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to ``peak``, then cosine decay to zero."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def predict(model, x: torch.Tensor) -> torch.Tensor:
    """The top-1 class of each image of the preprocessed batch ``x`` (B,3,H,W): (B,) int64.

    The model runs in eval mode without gradients, a few images a pass
    (:func:`~featviz_helpers.methods._inputs.images_per_pass`: on a 2-core CPU a shapes model
    took twice as long per image in one pass of 256 images as in passes of 24); its mode is
    restored. Notebook 05 §8 compares two models' predictions with it.
    """
    with preserved_state(model, freeze=False):
        return torch.cat([model(chunk).argmax(1) for chunk in x.split(images_per_pass(None, x))])


def accuracy(model, variant: str, n: int | None = None, seed: int = HELDOUT_SEED) -> float:
    """Top-1 accuracy on ``n`` (default HELDOUT_SIZE) held-out images of ``variant``
    (:func:`predict`).

    The same images every call: they come from a seed no training step uses.
    """
    n = HELDOUT_SIZE if n is None else n
    images, labels, _ = shapes.generate(n, seed, variant)
    return (predict(model, preprocess(images, model)) == labels).sum().item() / n


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m featviz_helpers.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--steps", type=int, help="override the recipe's number of steps")
    parser.add_argument("--batch", type=int, help="override the recipe's batch size")
    parser.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(models.shapes_weights_file("x")).parent),
                        help="folder for NAME.pt and NAME.json (default: data/models)")
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--resume", action="store_true", help="continue from OUT/NAME.ckpt")
    parser.add_argument("--stop-after", type=int,
                        help="save OUT/NAME.ckpt after this many steps and exit (resume later)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def train(args) -> dict:
    """Train ``args.name`` by its recipe (with ``args``' overrides); return the record."""
    recipe = dict(RECIPES[args.name])
    for key in ("steps", "batch", "lr"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / f"{args.name}.ckpt"

    model = models.build_architecture(args.name)
    model.input_spec = models.SHAPES_SPEC
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"],
                                  weight_decay=recipe["weight_decay"])
    start, curve, seconds = 0, [], 0.0
    if args.resume:
        if not ckpt_path.is_file():
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}")
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start, curve, seconds = ckpt["step"], ckpt["curve"], ckpt["seconds"]

    model.train()
    total = recipe["steps"]
    bar = tqdm(range(start, total), initial=start, total=total, desc=args.name,
               disable=args.quiet, mininterval=2.0)
    running, t0 = None, time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe["lr"], recipe["warmup"], total)
        images, labels, _ = shapes.generate(recipe["batch"], batch_seed(args.seed, step),
                                            recipe["variant"])
        loss = F.cross_entropy(model(preprocess(images, model)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        done = step + 1
        if done % args.eval_every == 0 or done == total:
            acc = accuracy(model, recipe["variant"], n=CURVE_SIZE)
            curve.append([done, round(running, 4), round(acc, 4)])
            bar.set_postfix(loss=f"{running:.3f}", heldout=f"{acc:.3f}")
        stopping = args.stop_after is not None and done >= args.stop_after
        if done < total and (done % args.save_every == 0 or stopping):
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": done, "curve": curve,
                        "seconds": seconds + time.perf_counter() - t0}, ckpt_path)
        if stopping and done < total:
            bar.close()
            print(f"stopped after step {done}; continue with --resume")
            return {}
    seconds += time.perf_counter() - t0
    model.eval()

    record = {
        "model": args.name,
        "command": args.command,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": args.seed,
        "training_variant": recipe["variant"],
        "steps": total,
        "batch": recipe["batch"],
        "peak_lr": recipe["lr"],
        "weight_decay": recipe["weight_decay"],
        "warmup_steps": recipe["warmup"],
        "train_wall_seconds": round(seconds, 1),
        "threads": args.threads,
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
        "heldout_seed": HELDOUT_SEED,
        "heldout_size": HELDOUT_SIZE,
        "heldout_accuracy": {v: accuracy(model, v) for v in EVAL_VARIANTS[args.name]},
        "curve_columns": ["step", "smoothed training loss", f"accuracy on {CURVE_SIZE} held-out"],
        "curve": curve,
    }
    torch.save(model.state_dict(), out / f"{args.name}.pt")
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    if ckpt_path.exists():
        os.remove(ckpt_path)
    return record


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.command = "python -m featviz_helpers.train " + " ".join(argv)
    record = train(args)
    if record:
        print(json.dumps({k: record[k] for k in ("model", "steps", "train_wall_seconds",
                                                 "heldout_accuracy")}, indent=2))


if __name__ == "__main__":
    main()
