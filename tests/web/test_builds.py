"""The web builds shipped in the package (``src/roomsync/web/{demo,inspect}``) are those
of the current sources: ``build.json`` records a SHA-256 over the files the build was made
from (``clients/stamp.mjs``), recomputed here. A failure means: rebuild with
``npm ci && npm run build`` in ``clients/demo`` or ``clients/inspector`` and commit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "src" / "roomsync" / "web"


def _files(root: str) -> list[str]:
    path = ROOT / root
    if path.is_file():
        return [root]
    out: list[str] = []
    for child in sorted(path.iterdir()):
        if child.name != "node_modules":
            out.extend(_files(child.relative_to(ROOT).as_posix()))
    return out


def source_digest(roots: list[str]) -> tuple[str, int]:
    """What ``clients/stamp.mjs`` computes: sha256 over "<path>\\n<sha256 hex>\\n" per file."""
    files = sorted(f for root in roots for f in _files(root))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f}\n{hashlib.sha256((ROOT / f).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest(), len(files)


@pytest.mark.parametrize("app", ["demo", "inspect"])
def test_shipped_build_matches_its_sources(app: str) -> None:
    manifest = json.loads((WEB / app / "build.json").read_text("utf-8"))
    assert manifest["app"] == app
    for root in manifest["sources"]:
        assert (ROOT / root).exists(), f"{root} (a source of the {app} build) is missing"
    digest, count = source_digest(manifest["sources"])
    assert (digest, count) == (manifest["source_sha256"], manifest["source_files"]), (
        f"src/roomsync/web/{app} is older than its sources: rebuild it "
        f"(cd clients/{'demo' if app == 'demo' else 'inspector'} && npm ci && npm run build)"
    )


@pytest.mark.parametrize("app", ["demo", "inspect"])
def test_shipped_build_references_only_shipped_assets(app: str) -> None:
    index = (WEB / app / "index.html").read_text("utf-8")
    assert "<script>" not in index  # no inline script: the CSP forbids it
    assets = sorted(p.name for p in (WEB / app / "assets").iterdir())
    assert any(a.endswith(".js") for a in assets)
    for asset in assets:
        assert f"/{'demo' if app == 'demo' else 'inspect'}/assets/{asset}" in index


def test_package_data_ships_the_builds() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    shipped = data["tool"]["setuptools"]["package-data"]["roomsync"]
    for app in ("demo", "inspect"):
        assert f"web/{app}/*" in shipped and f"web/{app}/assets/*" in shipped
