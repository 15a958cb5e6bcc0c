"""Exceptions of tf_awt that callers may want to catch (importing this module does not import TensorFlow)."""

__all__ = ["TrainingCollapsed"]


class TrainingCollapsed(RuntimeError):
    """Adversarial training ended at the uniform prediction and the recipe asked to fail on it
    (``train.fail_on_collapse: true``); raised after summary.json was written."""
