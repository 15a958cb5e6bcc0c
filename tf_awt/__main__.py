"""``python -m tf_awt ...`` is the ``tf-awt`` command."""
import sys

from tf_awt.running.cli import main

sys.exit(main())
