"""Training engine: recipes, models, losses, optimizers and schedules, augmentation pipelines, checkpoints, per-epoch results, trackers, devices, DDP and run folders."""
