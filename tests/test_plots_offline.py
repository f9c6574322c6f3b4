"""`dvc plots show` / `dvc plots diff` render every Vega plot without network, checked in headless
Chromium, and the plots say what the issue asked: log latency, zoomed accuracy, labels, tooltips."""
import csv
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, copy_project, dvc

PLOTS = ROOT / ".dvc/plots"
PAGE = PLOTS / "offline.html"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell")


def inlined_scripts(page: str) -> list[tuple[str, str, str]]:
    """(package@version, recorded sha256, the script's sha256) of each build inlined in the page."""
    return [(name, recorded, hashlib.sha256(code.encode()).hexdigest())
            for name, recorded, code in re.findall(r"<!-- (\S+) build/\S+ sha256 (\w+) [^>]*-->\s*<script>(.*?)</script>",
                                                   page, re.S)]


def test_page_inlines_the_vendored_vega_builds_and_loads_nothing_remote():
    page = PAGE.read_text(encoding="utf-8")
    scripts = inlined_scripts(page)
    assert [name.rsplit("@", 1)[0] for name, _, _ in scripts] == ["vega", "vega-lite", "vega-embed"]
    vendor = (PLOTS / "vendor/README.md").read_text()
    for name, recorded, actual in scripts:
        assert recorded == actual, f"{name}: inlined build changed (rebuild with tools/offline_plots.py)"
        package, version = name.rsplit("@", 1)
        assert f"| {package} | {version} |" in vendor and actual in vendor, name
        assert (PLOTS / f"vendor/LICENSE-{package}").is_file(), package
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN tags never land in the page
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)


def test_both_dvc_projects_use_the_page_and_find_every_custom_template():
    for project in (ROOT, ROOT / "studies"):
        config = (project / ".dvc/config").read_text()
        assert re.search(r"^\s*html_template = plots/offline.html$", config, re.M), project
        assert (project / ".dvc/plots/offline.html").resolve() == PAGE.resolve(), project  # studies links it
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    named = {p["template"] for entry in pipeline["plots"] if isinstance(entry, dict) for p in entry.values()}
    for stage in pipeline["stages"].values():
        for plot in (stage.get("do", stage).get("plots") or []):
            named |= {props.get("template", "linear") for props in plot.values()}
    custom = {n for n in named if (PLOTS / f"{n}.json").is_file()}
    assert {"dots_zoomed", "dots_log", "scatter_labelled_logx"} <= custom
    from dvc_render.vega_templates import TEMPLATES
    assert named - custom <= {t.DEFAULT_NAME for t in TEMPLATES}, named - custom


def offline_project(reproduced, tmp_path: Path) -> Path:
    """A copy of the reproduced project with this repository's plot templates and page (tests/conftest's
    make_project may not carry them: .dvc/ is made by `dvc init`)."""
    repo = copy_project(reproduced[0], tmp_path / "repo")
    if not (repo / ".dvc/plots/offline.html").is_file():
        shutil.copytree(PLOTS, repo / ".dvc/plots", dirs_exist_ok=True)
        dvc("config", "plots.html_template", "plots/offline.html", cwd=repo)
    return repo


@pytest.mark.slow
def test_plot_specs_use_log_latency_zoomed_accuracy_labels_and_tooltips(reproduced, tmp_path):
    repo = offline_project(reproduced, tmp_path)
    shown = dvc("plots", "show", "--json", cwd=repo)
    plots = json.loads(shown.stdout)["data"]
    assert not json.loads(shown.stdout).get("errors")
    specs = {name: p[0]["content"] for name, p in plots.items() if p[0].get("type") == "vega"}
    accuracy, latency = specs["Accuracy per artifact (top-1 %)"], specs["Latency per artifact (batch 1, ms, log scale)"]
    assert accuracy["encoding"]["x"]["scale"]["zero"] is False
    assert latency["encoding"]["x"]["scale"]["type"] == "log"
    for name in ("Accuracy vs true compressed size (KiB, log scale)", "Accuracy vs latency (batch 1, ms, log scale)"):
        spec = specs[name]
        assert spec["encoding"]["y"]["scale"]["zero"] is False and spec["encoding"]["x"]["scale"]["type"] == "log"
        point, text = spec["layer"]
        assert point["mark"]["tooltip"] == {"content": "data"} and text["encoding"]["text"]["field"] == "label"
    # the sensitivity table and fine-tune curve stay stage plots: as plain cache:false outputs DVC would keep
    # their stages out of the run-cache (dvc/stage/__init__.py); off, the sensitivity plot is one labelled row
    assert {"plots/sensitivity.csv", "variants/main/finetune_curve.csv"} <= set(plots)
    heatmap = repo / "sensitivity/heatmap.png"
    assert int.from_bytes(heatmap.read_bytes()[16:20], "big") >= 600  # the "off" note is wide enough to read


def browser() -> str:
    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip("no Chromium / Chrome binary (Debian: apt-get install chromium)")
    return found


def render(page: Path, chrome: str) -> str:
    """The page's DOM after its scripts ran, from headless Chromium with no network access needed."""
    proc = subprocess.run([chrome, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=30000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def sections(dom: str, ids: list[str]) -> dict[str, str]:
    """Each plot's part of the DOM: from its div to the next plot's."""
    starts = sorted((dom.index(f'<div id="{i}"'), i) for i in ids)
    ends = [s for s, _ in starts[1:]] + [len(dom)]
    return {i: dom[s:e] for (s, i), e in zip(starts, ends, strict=True)}


def symbols(section: str) -> int:
    """Points drawn by the plot's symbol layer (legend symbols are another role)."""
    group = re.search(r'<g class="mark-symbol role-mark layer_0_marks"[^>]*>(.*?)</g>', section, re.S)
    return group.group(1).count("<path") if group else 0


@pytest.mark.slow
@pytest.mark.parametrize("command", [["show"], ["diff", "HEAD"]], ids=["show", "diff"])
def test_every_vega_plot_renders_offline_in_headless_chromium(reproduced, tmp_path, command):
    chrome = browser()
    repo = offline_project(reproduced, tmp_path)
    listed = json.loads(dvc("plots", *command, "--json", cwd=repo).stdout)["data"]
    vega = [name for name, p in listed.items() if p[0].get("type") == "vega"]
    assert len(vega) >= 6, vega
    out = dvc("plots", *command, "-o", "page", cwd=repo)
    assert "failed to load" not in (out.stdout + out.stderr).lower()
    html = (repo / "page/index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and not re.search(r"<script[^>]+src=", html)
    ids = re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*var spec', html)
    assert len(ids) == len(vega)  # one embedded Vega spec per plot DVC lists
    dom = render(repo / "page/index.html", chrome)
    assert '<pre class="vega-error">' not in dom  # the page's wrapper shows a failed spec's error
    parts = sections(dom, ids)
    for plot_id, part in parts.items():
        assert '<svg' in part and 'class="marks"' in part, f"{plot_id}: not rendered"
        assert re.search(r'role-mark[^"]*"[^>]*>\s*<(path|line|rect|text)', part), f"{plot_id}: no marks drawn"
    rows = list(csv.DictReader((repo / "plots/artifacts.csv").open()))
    revs = 2 if command[0] == "diff" else 1  # the diff shows HEAD beside the workspace
    dots = [i for i in ids if i.startswith(("Accuracy_", "Latency_"))]
    assert len(dots) == 4 and all(symbols(parts[i]) == revs * len(rows) for i in dots), \
        {i: symbols(parts[i]) for i in dots}
