"""Planning: dataset fingerprints and a recipe fitted to a dataset, this machine and a time budget."""
