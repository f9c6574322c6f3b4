"""Write the page `dvc plots show` / `dvc plots diff` fill, with Vega inlined, so plots render offline.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN: without network every Vega plot
is blank. `.dvc/config` (and `studies/.dvc/config`) set `plots.html_template = plots/offline.html`,
this page: the three minified builds from the npm registry, byte for byte, inside it (a page that
refers to files by relative path breaks when the page is written elsewhere with `-o` or copied).
It leaves out DVC's `{scripts}` placeholder, so the CDN tags are never added. Licenses, versions and
hashes: `.dvc/plots/vendor/`. To update, change VENDORED and run (needs npm and its registry):

    python tools/offline_plots.py                  # npm pack, then writes .dvc/plots/offline.html
    python tools/offline_plots.py --from DIR        # the three .tgz files `npm pack` left in DIR
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / ".dvc/plots/offline.html"
# the majors dvc-render's own page asks for (vega@5, vega-lite@5, vega-embed@6), newest of each
VENDORED = {"vega": "5.33.1", "vega-lite": "5.23.0", "vega-embed": "6.29.0"}

# Every plot drawn as SVG (crisp, searchable text, and what tests/test_plots_offline.py counts), and
# a failed spec shown as its error in place of a blank box.
EMBED_DEFAULTS = """(function (embed) {
  window.vegaEmbed = function (el, spec, opts) {
    return embed(el, spec, Object.assign({renderer: "svg"}, opts)).catch(function (err) {
      var box = typeof el === "string" ? document.querySelector(el) : el;
      var pre = document.createElement("pre");
      pre.className = "vega-error";
      pre.textContent = "this plot failed to render: " + err;
      box.appendChild(pre);
    });
  };
})(window.vegaEmbed);"""

HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Written by tools/offline_plots.py: Vega, Vega-Lite and Vega-Embed inlined (no network needed).
         Licenses: .dvc/plots/vendor/. DVC fills in the plots below. -->
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
        .vega-error {
            color: #b00020;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def script(name: str, version: str, code: bytes) -> str:
    """One inlined build, preceded by where it came from (checked by the tests)."""
    text = code.decode("utf-8")
    if "</script" in text.lower() or any(p in text for p in ("{plot_divs}", "{scripts}", "{refresh_tag}")):
        sys.exit(f"error: {name}@{version}: its build contains </script> or a DVC placeholder; cannot inline it")
    return (f"    <!-- {name}@{version} build/{name}.min.js sha256 {sha256(code)} "
            f"(BSD-3-Clause: vendor/LICENSE-{name}) -->\n    <script>{text}</script>\n")


def build(tarballs: Path) -> str:
    parts = [HEAD]
    for name, version in VENDORED.items():
        with tarfile.open(tarballs / f"{name}-{version}.tgz") as tar:
            member = tar.extractfile(f"package/build/{name}.min.js")
            if member is None:
                sys.exit(f"error: {name}-{version}.tgz has no package/build/{name}.min.js")
            parts.append(script(name, version, member.read()))
    parts.append(f"    <script>\n{EMBED_DEFAULTS}\n    </script>\n")
    parts.append(TAIL)
    return "".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, help="folder with the npm pack .tgz files")
    parser.add_argument("--out", type=Path, default=PAGE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            source = Path(tmp)
            subprocess.run(["npm", "pack", *(f"{n}@{v}" for n, v in VENDORED.items())], cwd=source, check=True,
                           stdout=subprocess.DEVNULL)
        page = build(source)
    args.out.write_text(page, encoding="utf-8")
    print(f"wrote {args.out} ({len(page.encode()) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
