"""Data: images and labels on disk, the dataset manifest, label tables, intensity and resampling."""
