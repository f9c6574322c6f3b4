"""Per-layer sensitivity: each layer pruned or quantized alone, and the allocations built on it."""
