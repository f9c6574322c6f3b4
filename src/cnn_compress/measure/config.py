"""The ``benchmark`` section: how every artifact is measured."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cnn_compress.core.config import require


@dataclass(frozen=True)
class BenchmarkConfig:
    SECTION: ClassVar[str] = "benchmark"
    batch_sizes: tuple[int, ...] = (1, 64)  # smallest gives latency, largest gives throughput
    warmup: int = 5  # untimed runs first: allocators, caches and lazy init settle
    repeats: int = 30  # timed runs per batch size; we report median and p90
    max_seconds: float = 2.0  # stop timing a (variant, batch) early: CPU fp16 is ~20x slower than fp32
    threads: int = 1  # one thread: least noisy on shared machines, comparable across runtimes
    eval_batch_size: int = 256
    # also timed under torch.compile (rows '<name>+compile'); names a variant does not build are skipped
    compile: tuple[str, ...] = ("fp32", "int8_static")
    control: bool = True  # time the first artifact twice, interleaved: records whether timings are trustworthy

    def __post_init__(self) -> None:
        require(len(self.batch_sizes) > 0, "benchmark.batch_sizes", "must not be empty")
        require(all(b >= 1 for b in self.batch_sizes), "benchmark.batch_sizes", "must all be >= 1")
        require(self.warmup >= 0, "benchmark.warmup", "must be >= 0")
        require(self.repeats >= 1, "benchmark.repeats", "must be >= 1")
        require(self.threads >= 1, "benchmark.threads", "must be >= 1")
        require(self.max_seconds > 0, "benchmark.max_seconds", "must be > 0")
        require(self.eval_batch_size >= 1, "benchmark.eval_batch_size", "must be >= 1")

