"""Training: the trainer, its batches and augmentation, the schedule, the run log, several processes."""
