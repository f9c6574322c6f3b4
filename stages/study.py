"""study: a study's tables, metrics and figures from every variant of its folder.

Reads: params.yaml (`study.<name>` and the variants), variants/*/benchmark.json and the artifacts
they name, data/prepared.
Writes: results.md and results.csv (the study's tables, machine, versions, commit), metrics/study.json,
plots/study.csv (for `dvc plots`), figures/*.png.
"""
import os
import time
from pathlib import Path

# set before torch loads OpenMP: idle worker threads sleep instead of spinning, so the runtimes the
# study times in turn do not steal each other's cores (ONNX Runtime's own pool is set the same way)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from cnn_compress.core import atomic  # noqa: E402
from cnn_compress.core.config import parse_section, read_params  # noqa: E402
from cnn_compress.core.errors import ConfigError, cli  # noqa: E402
from cnn_compress.core.stage import parse_args  # noqa: E402
from cnn_compress.studies.registry import STUDIES, StudyContext, load  # noqa: E402


@cli
def main() -> None:
    name = parse_args(__doc__, variant=False, study=True).study
    params = read_params()
    settings = (params.get("study") or {}).get(name)
    if settings is None:
        raise ConfigError(f"study.{name}: not configured in params.yaml")
    runner = load(name)
    cfg = parse_section(STUDIES.meta(name)["config"], settings)
    start = time.perf_counter()
    metrics = runner(cfg, StudyContext(list(params.get("variants") or {}), Path("."), params))
    atomic.write_json(Path("metrics/study.json"), metrics | {"study_stage_s": round(time.perf_counter() - start, 1)})
    print(f"study {name}: results.md written ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
