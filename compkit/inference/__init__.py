"""Inference engine: test-time augmentation, sliding windows, the predictor protocol and probability writing, and
trained runs loaded as Python objects."""
