"""Not the package: the tf_awt repository folder, redirecting to the package inside it.

Python imports this file only when it is started in the folder *above* a clone named ``tf_awt``:
the clone then shadows the package inside it, and without this file ``import tf_awt`` silently
gives an empty namespace package (``module 'tf_awt' has no attribute 'data'``). This file makes
that import the real package: its ``__path__`` is the package folder and its body the package's
``__init__.py``, so ``tf_awt.data``, ``tf_awt.find_ticket``, ... resolve as from an installation.
"""
import os as _os

__path__ = [_os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "tf_awt")]
__file__ = _os.path.join(__path__[0], "__init__.py")
with open(__file__, encoding="utf-8") as _fh:
    exec(compile(_fh.read(), __file__, "exec"))
del _fh, _os
