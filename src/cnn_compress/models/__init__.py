"""The model registry, the CIFAR ResNets and the self-describing checkpoint."""
