"""featviz_helpers: the plumbing and library copies shared by the featviz notebooks.

Modules: ``models`` (load classifiers, find layers), ``images`` (photos in, tensors out),
``hooks`` (plumbing: capture activations and gradients, restore a model), ``relu_rules``
(the ReLU backward rules of guided backprop and the deconvnet), ``methods`` (library copies
of the visualisation methods, a module per family, and their catalogue), ``units`` (what one
unit of a CNN sees), ``viz`` (one plotting convention for every map), ``widgets`` (slider
panels), ``figures`` (the lecture's figures), ``checks`` (exercise checks with precise
messages, a module per notebook), ``shapes`` (a synthetic world with ground-truth masks),
``metrics`` (scoring maps), ``train`` (the training CLI for the shapes models), ``study`` (the
self-study edition), ``notebook_errors`` (a hint under a NameError from cells run out of order).
"""
from . import notebook_errors as _notebook_errors

__version__ = "0.1.0"

_notebook_errors.install()

