"""Data sources, uint8 tensors and their splits, augmentation, accuracy over a split."""
