"""The model: the dual-task network, the level-set transform, the losses, checkpoints, BatchNorm tools."""
