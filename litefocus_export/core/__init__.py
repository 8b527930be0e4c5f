"""The torch-free core every other layer builds on: errors, choices, the ONNX/UNet contract, latent geometry,
durations and profiles, requests, seeded random streams, the vocoder's receptive field.

Nothing here imports torch, onnx or an engine runtime; ``import litefocus_export.runtime`` stays light because of it.
"""
