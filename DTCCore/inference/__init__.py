"""Inference: predicting a volume with a sliding window, test-time augmentation, post-processing."""
