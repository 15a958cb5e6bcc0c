"""The kernel engine: the Mixed Tangent Kernel and the distances of eq. (13).

``kernel`` (Θ by structured contractions, ``_contract``, or Jacobians), ``kernel_sketch`` (the
matrix-free estimate of the kernel distance), ``distances``, ``layer_rules`` (the registry of what is
prunable and how the kernel sees each layer), ``_layers`` and ``_masks`` (walking and masking
models). May import only the shared top-level modules (``tf_awt._options``, ``_validate``,
``_distribute``, ``paper``, ...): nothing from ``adversarial``, ``tickets`` or ``running``.
"""
