"""The Dockerfile's build, step by step, without a Docker engine: copy what its COPY lines copy (minus
.dockerignore), build the package as its `pip install .` does, and run the installed code, not the
checkout. An editable install finds every file in the working tree, so only this shows a migration,
a detector's samples or a module that the image would lack."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile_steps() -> tuple[list[list[str]], list[str]]:
    """The build stage's COPY sources (one list per line) and its RUN commands."""
    copies: list[list[str]] = []
    runs: list[str] = []
    stage = 0
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "FROM":
            stage += 1
        elif stage == 1 and words[0] == "COPY":
            copies.append(words[1:-1])
        elif stage == 1 and words[0] == "RUN":
            runs.append(" ".join(words[1:]))
    return copies, runs


def _ignored(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    for p in patterns:
        bare = p.removeprefix("**/")
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, bare) or any(part == bare for part in rel.split("/")):
            return True
    return False


def _context(dest: Path) -> None:
    """The build stage's /src: every COPY source of the build stage, less what .dockerignore keeps out."""
    patterns = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    copies, _ = _dockerfile_steps()
    for sources in copies:
        for src in sources:
            path = ROOT / src
            if path.is_file():
                shutil.copy2(path, dest / src)
                continue
            for f in path.rglob("*"):
                rel = f.relative_to(ROOT).as_posix()
                if f.is_file() and not _ignored(rel, patterns):
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest / rel)


def test_the_build_stage_copies_every_package_the_project_ships() -> None:
    copies, runs = _dockerfile_steps()
    copied = {src for sources in copies for src in sources}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {"pyproject.toml", project["project"]["readme"]} | packages <= copied
    assert any(r.startswith("pip install") and " . " in f"{r} " for r in runs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("wheel")
    _context(src)
    # pip as the image runs it: in an isolated build environment with the build-system's setuptools
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("mailwarden-*.whl")
    return built


def test_the_wheel_holds_every_module_migration_and_sample_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = [
        f.relative_to(ROOT).as_posix()
        for pkg in ("bot", "actions", "sandbox")
        for f in (ROOT / pkg).rglob("*")
        if f.is_file() and "__pycache__" not in f.parts and f.suffix in {".py", ".json", ".mako", ".typed"}
    ]
    assert any(n.startswith("bot/store/migrations/versions/") for n in wanted)
    assert any(n.endswith(".samples.json") for n in wanted)
    missing = sorted(set(wanted) - names)
    assert not missing, f"the image would lack: {missing}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "mailwarden = bot.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_code_migrates_and_detects_without_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """Migrations, the detectors (found by walking their package) and the sandbox's scenario generator,
    all from the built package: a labelled tenant is written and every attack category is caught."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    db_path, scenario = tmp_path / "m.db", tmp_path / "scenario"
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import bot, actions, sandbox;"
        "assert all(m.__file__.startswith(sys.argv[1]) for m in (bot, actions, sandbox)), bot.__file__;"
        "from bot.cli import main;"
        "assert main(['migrate', '--db', sys.argv[2]]) == 0;"
        "assert main(['scenario', '--users', '30', '--days', '12', '--seed', '1', '--out', sys.argv[3]]) == 0;"
        "raise SystemExit(main(['eval', sys.argv[3], '--json']))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(site), str(db_path), str(scenario)],
        cwd=tmp_path,  # not the checkout: nothing may come from the working tree
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert db_path.stat().st_size > 0
    report = json.loads(done.stdout.splitlines()[-1])
    assert len(report["categories"]) == 18
    assert all(c["recall"] == 1.0 for c in report["categories"].values()), report["categories"]
