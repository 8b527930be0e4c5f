"""Serving engines in production: Triton Inference Server (KServe v2, dynamic batching, duration routing).

- ``protocol``: the ``litefocus_audio`` model's tensors (docs/design.md §6) and their checks (torch-free, no Triton);
- ``router``: engine folders loaded once, a request routed to the smallest profile that covers it, compatible
  requests batched;
- ``triton_model``: the python-backend model (``TritonPythonModel``) that runs the router inside Triton;
- ``repository``: a standalone Triton model repository (``config.pbtxt`` + ``model.py``);
- ``server``: ``litefocus-export serve``: that repository on the ``tritonserver`` nvidia-pytriton bundles;
- ``client``: ``litefocus-export request``: one request with ``tritonclient``, the WAV written.
"""
