"""Hyperparameter search on Optuna (``compkit tune``): search spaces over recipe keys, study storages that one
laptop or many machines share, and a study's report."""
