"""One config and one handler per quantization format; simulated fixed point."""
