"""Probability stores (one file per image plus an index) and the prediction artifacts read as ensemble members."""
