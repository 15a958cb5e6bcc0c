"""Exceptions of tf_awt that callers may want to catch (importing this module does not import TensorFlow)."""

__all__ = ["TrainingCollapsed", "CheckpointError", "DirectoryBusy"]


class TrainingCollapsed(RuntimeError):
    """Adversarial training ended at the uniform prediction and the recipe asked to fail on it
    (``train.fail_on_collapse: true``); raised after summary.json was written."""


class CheckpointError(ValueError):
    """A phase's checkpoint cannot be resumed.

    Attributes:
      directory: the checkpoint directory.
      other_run: True when it was written by another run (another recipe or phase), False when it
        is corrupt.
    """

    def __init__(self, message: str, directory: str, other_run: bool = False):
        super().__init__(message)
        self.directory = directory
        self.other_run = other_run


class DirectoryBusy(ValueError):
    """Another live process holds a directory's lock.

    Attributes:
      directory: the locked directory.
      owner: the owner's process id.
    """

    def __init__(self, message: str, directory: str, owner: int):
        super().__init__(message)
        self.directory = directory
        self.owner = owner
