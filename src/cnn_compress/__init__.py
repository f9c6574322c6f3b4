"""cnn-compress: a reproducible CNN-compression workbench driven by DVC."""

__version__ = "0.1.0"
