"""Evaluation: the paper's metrics and the training-curve and result previews."""
