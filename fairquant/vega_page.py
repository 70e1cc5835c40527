"""The page `dvc plots show` / `dvc plots diff` fill: DVC's own page loads vega, vega-lite and vega-embed from a CDN;
this one carries them inline, so the HTML DVC writes opens with no network.

DVC reads the page named by ``plots.html_template`` in .dvc/config (a path relative to .dvc/), replaces
``{plot_divs}`` with the plots and ``{scripts}`` with each renderer's script tags -- the CDN tags, which is why this
page has no ``{scripts}``. The scripts are the minified builds of the npm packages (BSD-3-Clause, their licences in
.dvc/html/); to upgrade them, ``npm pack`` the packages and run::

    python -m fairquant.vega_page <folder of the unpacked packages> .dvc/html/offline.html
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from fairquant.errors import FairquantError
from fairquant.io import atomic_path

PACKAGES = (("vega", "build/vega.min.js"), ("vega-lite", "build/vega-lite.min.js"),
            ("vega-embed", "build/vega-embed.min.js"))  # in load order: vega-lite and vega-embed need vega
SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)  # a devtools fetch of a file that is not here

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    {{refresh_tag}}
    <title>DVC Plot (offline)</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def inline_script(name: str, version: str, source: str) -> str:
    """One package's build as an inline script; ``</script`` cannot occur in it (it would end the tag early)."""
    if "</script" in source.lower():
        raise FairquantError(f"{name} {version}'s build holds '</script'; it cannot be inlined as is")
    banner = f"/* {name} {version}, BSD-3-Clause (.dvc/html/LICENSE-{name}) */"
    return f"<script>{banner}\n{SOURCE_MAP.sub('', source)}\n</script>"


def offline_page(packages: dict[str, tuple[str, str]]) -> str:
    """The page, from each package's (version, minified build) by name."""
    scripts = "\n".join(inline_script(name, *packages[name]) for name, _ in PACKAGES)
    page = PAGE.format(scripts=scripts)
    for placeholder in ("{scripts}",):  # would be filled with the CDN tags
        if placeholder in page:
            raise FairquantError(f"a vendored build holds {placeholder!r}; DVC would fill it with CDN script tags")
    return page


def read_packages(folder: Path) -> dict[str, tuple[str, str]]:
    """Each package's version and build from ``folder``/<name>-<version>/package/ (an unpacked ``npm pack``)."""
    out = {}
    for name, build in PACKAGES:
        found = sorted(p for p in folder.glob(f"{name}-[0-9]*/package") if (p / build).is_file())
        if len(found) != 1:
            raise FairquantError(f"{folder} should hold one unpacked {name}-<version>/package with {build}, found "
                                 f"{len(found)}; run npm pack {name}@<version> there and unpack it")
        version = json.loads((found[0] / "package.json").read_text(encoding="utf-8"))["version"]
        out[name] = (version, (found[0] / build).read_text(encoding="utf-8"))
    return out


def main(argv: list[str]) -> None:
    folder, out = map(Path, argv)
    page = offline_page(read_packages(folder))
    with atomic_path(out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    print(f"wrote {out} ({len(page) // 1024} KiB)")


if __name__ == "__main__":
    main(sys.argv[1:])
