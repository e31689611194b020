"""Pretrained weights: what a model starts from, the libraries' caches, pulling, offline use."""
