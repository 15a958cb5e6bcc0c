"""tf_awt: Adversarial Winning Tickets for tf_keras and tensorflow-model-optimization.

Public API (everything else is private):

* :func:`mixed_tangent_kernel`, :func:`mixed_tangent_kernel_fn`, :class:`KernelImplementation`
* :func:`target_distance`, :func:`kernel_distance`
"""
from tf_awt.distances import kernel_distance, target_distance
from tf_awt.kernel import KernelImplementation, mixed_tangent_kernel, mixed_tangent_kernel_fn

__version__ = "0.1.0"

__all__ = [
    "KernelImplementation",
    "kernel_distance",
    "mixed_tangent_kernel",
    "mixed_tangent_kernel_fn",
    "target_distance",
]
