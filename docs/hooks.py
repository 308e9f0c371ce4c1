"""mkdocs hook: the committed results (results/: reports, plots, logs, configs) are published with the site, so a
page links to and shows the report's own files rather than copies that could drift from them."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]


def on_files(files, config):
    for path in sorted(p for p in ROOT.glob("results/**/*") if p.is_file()):
        files.append(
            File(path.relative_to(ROOT).as_posix(), str(ROOT), config["site_dir"], config["use_directory_urls"])
        )
    return files
