"""featviz_helpers: the plumbing and library copies shared by the featviz notebooks.

Modules: ``models`` (load classifiers, find layers), ``images`` (photos in, tensors out),
``hooks`` (capture activations and gradients; ReLU backward rules), ``methods`` (library
copies of the visualisation methods), ``viz`` (one plotting convention for every map),
``widgets`` (slider panels), ``checks`` (exercise checks with precise messages), ``shapes``
(a synthetic world with ground-truth masks), ``metrics`` (scoring maps), ``train`` (the
training CLI for the shapes models).
"""
__version__ = "0.1.0"
