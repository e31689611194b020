"""Training engine: recipes, models, losses, optimizers and schedules, augmentation pipelines, the trainer,
checkpoints, per-epoch results, trackers, devices, DDP and run folders."""
