"""Wrong implementations a student might hand in, one list per exercise (solution cell).

Each entry is (the mistake, in words; edits). An edit is (old, new): ``old`` must occur
exactly once in the source notebook's solution cell and is replaced by ``new``; ``old=None``
replaces the whole cell with ``new``. ``tests/test_classroom.py`` grades every entry with
nbgrader and asserts that it loses points on its exercise — and nowhere else.
"""

WRONG = {
    # ---------------------------------------------------------------- 01: filters
    "normalize-filters-impl": [
        ("one global min and max for all filters", [
            ("lo = flat.min(dim=1, keepdim=True).values", "lo = flat.min()"),
            ("hi = flat.max(dim=1, keepdim=True).values", "hi = flat.max()")]),
        ("min and max per colour channel instead of per filter", [
            ("flat = w.flatten(1)\n", "flat = w.flatten(2)\n"),
            ("flat.min(dim=1, keepdim=True)", "flat.min(dim=2, keepdim=True)"),
            ("flat.max(dim=1, keepdim=True)", "flat.max(dim=2, keepdim=True)")]),
        ("normalises in place, overwriting the weights it is given", [
            ("return ((flat - lo) / (hi - lo + 1e-8)).view_as(w)",
             "flat.sub_(lo).div_(hi - lo + 1e-8)\n    return w")]),
        ("no epsilon: a dead filter becomes NaN", [
            ("(hi - lo + 1e-8)", "(hi - lo)")]),
        ("divides by the maximum only (no shift by the minimum)", [
            ("return ((flat - lo) / (hi - lo + 1e-8)).view_as(w)",
             "return (flat / (hi + 1e-8)).view_as(w)")]),
        ("symmetric scaling instead of min-max", [
            ("return ((flat - lo) / (hi - lo + 1e-8)).view_as(w)",
             "return (flat / (2 * flat.abs().amax(1, keepdim=True)) + 0.5).view_as(w)")]),
        ("calls the library copy", [
            (None, "def normalize_filters(w):\n    return viz.normalize_filters(w)")]),
        ("the library copy reached through inspect.unwrap", [
            (None, "def normalize_filters(w):\n    import inspect\n"
                   "    return inspect.unwrap(viz.normalize_filters)(w)")]),
    ],
    "filter-response-impl": [
        ("flips the kernel (true convolution)", [
            ("F.conv2d(image[None], filt[None],", "F.conv2d(image[None], filt.flip(-1, -2)[None],")]),
        ("no padding", [("padding=k // 2", "padding=0")]),
        ("padding fixed at 1 pixel", [("padding=k // 2", "padding=1")]),
        ("one colour channel only", [
            ("F.conv2d(image[None], filt[None],", "F.conv2d(image[None, :1], filt[None, :1],")]),
        ("no sum over colour channels", [
            ("return F.conv2d(image[None], filt[None], padding=k // 2)[0, 0]",
             "return F.conv2d(image[:, None], filt[:, None], padding=k // 2)[:, 0]")]),
        ("mirrors the border instead of zero padding", [
            ("return F.conv2d(image[None], filt[None], padding=k // 2)[0, 0]",
             "return F.conv2d(F.pad(image[None], [k // 2] * 4, mode='reflect'), filt[None])[0, 0]")]),
    ],
    # ---------------------------------------------------------------- 02: saliency
    "saliency-impl": [
        ("softmax probability instead of the logit", [
            ("logits = model(x)  ", "logits = model(x).softmax(dim=1)  ")]),
        ("sum of |gradient| over RGB", [
            ("return grad.abs().amax(dim=1)", "return grad.abs().sum(dim=1)")]),
        ("mean of |gradient| over RGB", [
            ("return grad.abs().amax(dim=1)", "return grad.abs().mean(dim=1)")]),
        ("no absolute value", [("return grad.abs().amax(dim=1)", "return grad.amax(dim=1)")]),
        ("the argmax class instead of the target", [
            ("logits.gather(1, target.view(-1, 1))", "logits.gather(1, logits.argmax(1, keepdim=True))")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("does not restore the caller's mode", [
            ("model.train(was_training)", "pass")]),
        ("calls the library copy", [
            (None, "def my_saliency(model, x, target):\n    return methods.saliency(model, x, target)")]),
    ],
    "smoothgrad-impl": [
        ("averages |gradient| instead of the raw gradients", [
            ("total = total + grad\n", "total = total + grad.abs()\n")]),
        ("sums over the samples instead of averaging", [
            ("        return total / samples", "        return total")]),
        ("noise not scaled by the image's range", [
            ("noisy = (x + noise * span * e)", "noisy = (x + noise * e)")]),
        ("the softmax probability instead of the logit", [
            ("scores = model(noisy).gather(", "scores = model(noisy).softmax(1).gather(")]),
        ("draws the noise from the global generator, not the seed", [
            ("generator=torch.Generator().manual_seed(seed))", ")")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("calls the library copy", [
            (None, "def my_smoothgrad(model, x, target, samples, noise, seed):\n"
                   "    return methods.smoothgrad(model, x, target, samples, noise, seed)")]),
        ("the library copy's __wrapped__ (the body behind a wrapper, if it had one)", [
            (None, "def my_smoothgrad(model, x, target, samples, noise, seed):\n"
                   "    body = getattr(methods.smoothgrad, '__wrapped__', methods.smoothgrad)\n"
                   "    return body(model, x, target, samples, noise, seed)")]),
    ],
    "integrated-gradients-impl": [
        ("no factor (x - baseline)", [
            ("return (x - baseline) * total / steps", "return total / steps")]),
        ("left Riemann sum (alpha = 0 .. (m-1)/m)", [
            ("for k in range(1, steps + 1):", "for k in range(steps):")]),
        ("sums the gradients instead of averaging", [
            ("return (x - baseline) * total / steps", "return (x - baseline) * total")]),
        ("walks the path from x towards the baseline", [
            ("point = (baseline + k / steps * (x - baseline))", "point = (x + k / steps * (baseline - x))")]),
        ("the softmax probability instead of the logit", [
            ("scores = model(point).gather(", "scores = model(point).softmax(1).gather(")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("calls the library copy", [
            (None, "def my_integrated_gradients(model, x, target, baseline, steps):\n"
                   "    return methods.integrated_gradients(model, x, target, baseline, steps)")]),
        ("a freshly reloaded copy of the library's module", [
            (None, "def my_integrated_gradients(model, x, target, baseline, steps):\n"
                   "    import importlib\n"
                   "    fresh = importlib.reload(methods.gradients)\n"
                   "    return fresh.integrated_gradients(model, x, target, baseline, steps)")]),
    ],
    "ascent-step-impl": [
        ("gradient descent instead of ascent", [
            ("return (img + lr * (grad - 2 * l2 * img))", "return (img - lr * (grad - 2 * l2 * img))")]),
        ("L2 decay with the wrong sign", [
            ("return (img + lr * (grad - 2 * l2 * img))", "return (img + lr * (grad + 2 * l2 * img))")]),
        ("no L2 decay", [
            ("return (img + lr * (grad - 2 * l2 * img))", "return (img + lr * grad)")]),
        ("decay gradient lambda*I instead of 2*lambda*I", [
            ("return (img + lr * (grad - 2 * l2 * img))", "return (img + lr * (grad - l2 * img))")]),
        ("the softmax probability instead of the logit", [
            ("scores = model(img).gather(", "scores = model(img).softmax(1).gather(")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("calls the library copy", [
            (None, "def my_ascent_step(model, img, target, lr, l2):\n"
                   "    return methods.ascent_step(model, img, target, lr, l2)")]),
        ("switches the library guard off, then calls the copy", [
            (None, "def my_ascent_step(model, img, target, lr, l2):\n"
                   "    from featviz_helpers import library_guard\n"
                   "    library_guard._state.exercise = None\n"
                   "    return methods.ascent_step(model, img, target, lr, l2)")]),
    ],
    "fooling-image-impl": [
        ("unnormalised gradient steps", [
            ("x = (x + lr * grad / grad.norm()).detach()", "x = (x + lr * grad).detach()")]),
        ("steps along the sign of the gradient", [
            ("x = (x + lr * grad / grad.norm()).detach()", "x = (x + lr * grad.sign()).detach()")]),
        ("steps away from the target", [
            ("x = (x + lr * grad / grad.norm()).detach()", "x = (x - lr * grad / grad.norm()).detach()")]),
        ("normalised by the largest entry instead of the L2 norm", [
            ("x = (x + lr * grad / grad.norm()).detach()", "x = (x + lr * grad / grad.abs().max()).detach()")]),
        ("the softmax probability instead of the logit", [
            ("score = model(x)[0, target.item()]", "score = model(x).softmax(1)[0, target.item()]")]),
        ("always takes a step, even when the image is already the target", [
            ("                if model(x).argmax(1).item() == target.item():\n                    return x",
             "                if _ > 0 and model(x).argmax(1).item() == target.item():\n                    return x")]),
        ("calls the library copy", [
            (None, "def my_fooling_image(model, x, target, lr, max_steps):\n"
                   "    return methods.fooling_image(model, x, target, lr, max_steps)")]),
        ("replaces the guard where the library looks it up, then calls the copy", [
            (None, "def my_fooling_image(model, x, target, lr, max_steps):\n"
                   "    methods.optimised.refuse_if_blocked = lambda *args: None\n"
                   "    return methods.fooling_image(model, x, target, lr, max_steps)")]),
    ],
    # ---------------------------------------------------------------- 03: guided backprop
    "relu-rules-impl": [
        ("guided computes the deconvnet rule", [
            ("return g * (x > 0) * (g > 0)", "return g * (g > 0)")]),
        ("deconvnet masks by the forward input", [
            ('if rule == "deconvnet":\n        return g * (g > 0)',
             'if rule == "deconvnet":\n        return g * (x > 0)')]),
        ("standard rule passes gradient where x == 0", [
            ('if rule == "standard":\n        return g * (x > 0)',
             'if rule == "standard":\n        return g * (x >= 0)')]),
        ("guided passes |g| instead of the positive part", [
            ("return g * (x > 0) * (g > 0)", "return g.abs() * (x > 0)")]),
        ("standard rule zeroes the upstream gradient in place", [
            ('if rule == "standard":\n        return g * (x > 0)',
             'if rule == "standard":\n        g[x <= 0] = 0\n        return g')]),
        ("standard rule forgets the upstream gradient", [
            ('if rule == "standard":\n        return g * (x > 0)',
             'if rule == "standard":\n        return (x > 0).float()')]),
        ("the library's ReLU rule, differentiated by autograd", [
            (None, "def relu_backward(x, g, rule):\n"
                   "    x = x.clone().requires_grad_(True)\n"
                   "    y = relu_rules._RuleReLU.apply(x, rule, None)\n"
                   "    (grad,) = torch.autograd.grad(y, x, g)\n"
                   "    return grad")]),
    ],
    "guided-backprop-impl": [
        ("deconvnet instead of guided", [
            ('with relu_rule(model, "guided")', 'with relu_rule(model, "deconvnet")')]),
        ("ReLU6's flat top ignored", [
            ("        if ctx.top is not None and ctx.rule != \"deconvnet\":\n"
             "            grad = grad * (x < ctx.top)\n", "")]),
        ("only nn.ReLU replaced, not nn.ReLU6: the plain gradient on Lite0", [
            ("type(m) in (nn.ReLU, nn.ReLU6)", "type(m) is nn.ReLU")]),
        ("replaced forwards never restored", [
            ('m.__dict__.pop("forward", None)', "pass")]),
        ("forwards not restored when the forward pass raises (no finally)", [
            ("    try:\n        for m in relus:\n            top = 6.0 if isinstance(m, nn.ReLU6) else None\n"
             "            m.forward = lambda x, top=top: RuleReLU.apply(x, rule, top)\n"
             "        yield\n    finally:\n        for m in relus:",
             "    for m in relus:\n        top = 6.0 if isinstance(m, nn.ReLU6) else None\n"
             "        m.forward = lambda x, top=top: RuleReLU.apply(x, rule, top)\n"
             "    yield\n    if True:\n        for m in relus:")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("the argmax class instead of the target", [
            ("scores = model(x).gather(1, torch.as_tensor(target).view(-1, 1))",
             "out = model(x)\n            scores = out.gather(1, out.argmax(1, keepdim=True))")]),
        ("calls the library copy", [
            ("    was_training = model.training\n", "    return methods.guided_backprop(model, x, target)\n")]),
    ],
    "fourier-image-impl": [
        ("no colour decorrelation", [
            ('return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, decorrelated))',
             "return torch.sigmoid(decorrelated)")]),
        ("no sigmoid", [
            ('return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, decorrelated))',
             'return torch.einsum("ij,bjhw->bihw", c, decorrelated)')]),
        ("colour matrix applied transposed", [('"ij,bjhw->bihw"', '"ji,bjhw->bihw"')]),
        ("the default (1/(hw)) inverse FFT instead of the orthonormal one", [
            ('s=(h, w), norm="ortho")', "s=(h, w))")]),
        ("no 1/f scaling of the spectrum", [
            ("scaled = spectrum * methods.fourier_scale(h, w)", "scaled = spectrum")]),
        ("colour matrix not normalised", [("    c = c / c.norm(dim=0).max()\n", "")]),
        ("output size left to irfft2 (wrong for odd widths)", [('s=(h, w), norm="ortho"', 'norm="ortho"')]),
        ("calls the library copy", [
            (None, "def my_fourier_image(spectrum, h, w):\n    return methods.fourier_image(spectrum, h, w)")]),
    ],
    # ---------------------------------------------------------------- 04: CAM
    "cam-impl": [
        ("the predicted class's weights instead of the target's", [
            ("weights = head.fc.weight.detach()[torch.as_tensor(target)]",
             "weights = head.fc.weight.detach()[model(x).argmax(1)]")]),
        ("without the head's activation (DenseNet's ReLU)", [
            ("    if head.activation is not None:\n        features = head.activation(features)\n", "")]),
        ("adds the bias to every position", [
            ("return cam_from_features(features, weights)",
             "return cam_from_features(features, weights) + "
             "head.fc.bias.detach()[torch.as_tensor(target)].view(-1, 1, 1)")]),
        ("divides by Z", [
            ("return (class_weights[:, :, None, None] * features).sum(dim=1)",
             "return (class_weights[:, :, None, None] * features).mean(dim=(1,)) * "
             "features.shape[1] / (features.shape[2] * features.shape[3])")]),
        ("applies a ReLU", [
            ("return (class_weights[:, :, None, None] * features).sum(dim=1)",
             "return (class_weights[:, :, None, None] * features).sum(dim=1).clamp_min(0)")]),
        ("own hook, never switches to eval mode", [
            ("    with hooks.capture(model, head.layer) as cap, torch.no_grad():\n        model(x)\n"
             "    features = cap.activations[head.layer]\n",
             "    store = {}\n    layer = models.get_layer(model, head.layer)\n"
             "    handle = layer.register_forward_hook(lambda m, i, o: store.update(f=o.detach()))\n"
             "    try:\n        with torch.no_grad():\n            model(x)\n    finally:\n"
             "        handle.remove()\n    features = store['f']\n")]),
        ("calls the library copy", [
            ("    head = models.gap_fc_head(model)\n", "    return methods.cam(model, x, target)\n")]),
        ("the library copy reached through its module", [
            ("    head = models.gap_fc_head(model)\n",
             "    import sys\n"
             "    return sys.modules['featviz_helpers.methods.cam'].cam(model, x, target)\n")]),
    ],
    # ---------------------------------------------------------------- 05: Grad-CAM
    "grad-cam-impl": [
        ("no ReLU", [("return (alpha * A).sum(dim=1).clamp_min(0)", "return (alpha * A).sum(dim=1)")]),
        ("summed gradients instead of their mean", [
            ("alpha = G.mean(dim=(2, 3), keepdim=True)", "alpha = G.sum(dim=(2, 3), keepdim=True)")]),
        ("gradients averaged over the batch too", [
            ("alpha = G.mean(dim=(2, 3), keepdim=True)", "alpha = G.mean(dim=(0, 2, 3), keepdim=True)")]),
        ("gradient times activation position by position", [
            ("alpha = G.mean(dim=(2, 3), keepdim=True)", "alpha = G")]),
        ("the argmax class instead of the target", [
            ("logits.gather(1, torch.as_tensor(target).view(-1, 1))",
             "logits.gather(1, logits.argmax(1, keepdim=True))")]),
        ("the softmax probability instead of the logit", [
            ("logits = model(x)\n", "logits = model(x).softmax(dim=1)\n")]),
        ("calls the library copy", [
            (None, "def my_grad_cam(model, x, target, layer):\n"
                   "    return methods.grad_cam(model, x, target, layer)")]),
        ("Grad-CAM assembled from the library's seam and weights", [
            (None, "def my_grad_cam(model, x, target, layer):\n"
                   "    a, g = methods.layer_activations_and_gradients(model, x, target, layer)\n"
                   "    return methods.cam_from_features(a, methods.grad_cam_weights(g)).clamp_min(0)")]),
    ],
    "occlusion-impl": [
        ("the logit instead of the probability", [
            ("p = model(x).softmax(1).gather(", "p = model(x).gather("),
            ("q = model(hidden).softmax(1).gather(", "q = model(hidden).gather(")]),
        ("sums the drops of the covering windows instead of averaging", [
            ("        return total / cover", "        return total")]),
        ("sign flipped (occluded minus original)", [
            ("+= (p - q).view(B, 1, 1)", "+= (q - p).view(B, 1, 1)")]),
        ("no window flush with the far edge", [
            ("return s if s[-1] == n - window else s + [n - window]", "return s")]),
        ("fills the window with white instead of the mean colour", [
            ("hidden[:, :, i:i + window, j:j + window] = 0", "hidden[:, :, i:i + window, j:j + window] = 1")]),
        ("never switches to eval mode", [("    model.eval()\n", "")]),
        ("calls the library copy", [
            (None, "def my_occlusion(model, x, target, window, stride):\n"
                   "    return methods.occlusion(model, x, target, window, stride)")]),
        ("occlusion assembled from the library's masks and masked forward passes", [
            (None, "def my_occlusion(model, x, target, window, stride):\n"
                   "    masks = methods.occlusion_masks(x.shape[-2], x.shape[-1], window, stride)\n"
                   "    with torch.no_grad():\n"
                   "        p = model(x).softmax(1).gather(1, target[:, None])[:, 0]\n"
                   "    drops = p[None] - methods.masked_probabilities(model, x, masks, target)\n"
                   "    credit = torch.einsum('pb,phw->bhw', drops, masks.float())\n"
                   "    return credit / masks.sum(0)")]),
    ],
    "grad-cam-plus-plus-impl": [
        ("g² instead of 2g² in α's denominator", [
            ("denominator = 2 * G ** 2 + sum_A * G ** 3", "denominator = G ** 2 + sum_A * G ** 3")]),
        ("the activation at each position instead of the channel's sum", [
            ("denominator = 2 * G ** 2 + sum_A * G ** 3", "denominator = 2 * G ** 2 + A * G ** 3")]),
        ("all gradients instead of the positive ones", [
            ("weights = (alpha * G.clamp_min(0))", "weights = (alpha * G)")]),
        ("no final ReLU", [
            ("return (weights * A).sum(dim=1).clamp_min(0)", "return (weights * A).sum(dim=1)")]),
        ("plain division: NaN where the gradient is 0", [
            ("alpha = torch.where(denominator != 0, G ** 2 / denominator, torch.zeros_like(G))",
             "alpha = G ** 2 / denominator")]),
        ("Grad-CAM's weights", [
            ("weights = (alpha * G.clamp_min(0)).sum(dim=(2, 3), keepdim=True)",
             "weights = G.mean(dim=(2, 3), keepdim=True)")]),
        ("the argmax class instead of the target", [
            ("logits.gather(1, torch.as_tensor(target).view(-1, 1))",
             "logits.gather(1, logits.argmax(1, keepdim=True))")]),
        ("calls the library copy", [
            (None, "def my_grad_cam_plus_plus(model, x, target, layer):\n"
                   "    return methods.grad_cam_plus_plus(model, x, target, layer)")]),
        ("Grad-CAM++ assembled from the library's seam", [
            (None, "def my_grad_cam_plus_plus(model, x, target, layer):\n"
                   "    A, G = methods.layer_activations_and_gradients(model, x, target, layer)\n"
                   "    d = 2 * G ** 2 + A.sum((2, 3), keepdim=True) * G ** 3\n"
                   "    alpha = torch.where(d != 0, G ** 2 / d, torch.zeros_like(G))\n"
                   "    w = (alpha * G.clamp_min(0)).sum((2, 3))\n"
                   "    return methods.cam_from_features(A, w).clamp_min(0)")]),
    ],
    # ---------------------------------------------------------------- 06: ViT attention
    "vit-attention-impl": [
        ("no 1/sqrt(d) scale", [(" / d ** 0.5", "")]),
        ("heads split wrongly", [
            ("qkv.view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)", "qkv.view(B, N, h, 3, d).permute(3, 0, 2, 1, 4)")]),
        ("softmax over queries instead of keys", [(".softmax(dim=-1)", ".softmax(dim=-2)")]),
        ("the MLP's LayerNorm (ln_2) instead of ln_1", [('.ln_1"', '.ln_2"')]),
        ("number of heads hard-coded to the shapes ViT's 4", [("h = mha.num_heads", "h = 4")]),
        ("in-projection bias left out", [(" + mha.in_proj_bias.detach()", "")]),
        ("calls the library copy", [
            (None, "def my_vit_attention(model, x):\n    return methods.vit_attention(model, x)")]),
        ("the checks' own reference answer", [
            (None, "def my_vit_attention(model, x):\n"
                   "    from featviz_helpers.checks import vit_attention\n"
                   "    return vit_attention._mha_reference(model, x)")]),
    ],
    "rollout-impl": [
        ("no identity for the residual path", [("a = a + eye", "a = a")]),
        ("normalises columns instead of rows", [
            ("a = a / a.sum(dim=-1, keepdim=True)", "a = a / a.sum(dim=-2, keepdim=True)")]),
        ("row sums without keepdim", [
            ("a = a / a.sum(dim=-1, keepdim=True)", "a = a / a.sum(dim=-1)")]),
        ("layers multiplied in the wrong order", [
            ("rollout = a if rollout is None else a @ rollout", "rollout = a if rollout is None else rollout @ a")]),
        ("head fusion ignored (always the mean)", [
            ('fused = {"mean": attn.mean(2), "max": attn.amax(2), "min": attn.amin(2)}[head_fusion]',
             "fused = attn.mean(2)")]),
        ("identity added with half weight", [("a = a + eye", "a = a + 0.5 * eye")]),
        ("calls the library copy", [
            (None, 'def my_rollout(attn, head_fusion="mean"):\n'
                   "    return methods.attention_rollout(attn, head_fusion)")]),
        ("the library copy reached through inspect.unwrap", [
            (None, 'def my_rollout(attn, head_fusion="mean"):\n'
                   "    import inspect\n"
                   "    return inspect.unwrap(methods.attention_rollout)(attn, head_fusion)")]),
    ],
}


def apply_edits(source: str, edits) -> str:
    """The solution cell ``source`` with ``edits`` applied (see the module docstring)."""
    for old, new in edits:
        if old is None:
            source = new
            continue
        count = source.count(old)
        if count != 1:
            raise ValueError(f"{old!r} occurs {count} times in the solution cell, not once")
        source = source.replace(old, new)
    return source
