"""Plugin tests run Triton kernels on CPU through Triton's interpreter.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before any test
module of this folder imports ``plugins/triton``. Tests that compile for a real GPU target spawn a
subprocess without it.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
