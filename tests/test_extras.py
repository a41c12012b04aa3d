"""Install hints: commands a user can run (issue 21: `midisynth` on PyPI is another project)."""

from __future__ import annotations

import re
from pathlib import Path

from midisynth import extras

REPO = Path(__file__).resolve().parents[1]


def test_the_distribution_name_is_ours_and_the_import_name_stays():
    toml = (REPO / "pyproject.toml").read_text()  # (tomllib is Python ≥ 3.11)
    assert re.findall(r'^name = "(.*)"$', toml, re.M) == [extras.DIST_NAME] != ["midisynth"]
    assert '\n[project.scripts]\nmidisynth = "midisynth.cli:main"\n' in toml


def test_a_clone_install_is_told_its_own_folder(monkeypatch, tmp_path):
    assert extras.pip_install("web") == f"pip install -e '{REPO}[web]'"
    monkeypatch.setattr(extras, "CLONE", tmp_path)  # e.g. site-packages: no pyproject.toml
    assert extras.pip_install("ray") == "pip install 'midisynth-diffusion[ray]'"
    monkeypatch.setattr(extras, "CLONE", tmp_path / "it's here")
    (tmp_path / "it's here" / "midisynth").mkdir(parents=True)
    (tmp_path / "it's here" / "pyproject.toml").write_text("")
    assert (
        extras.pip_install("plot") == "pip install -e '" + str(tmp_path) + "/it'\"'\"'s here[plot]'"
    )


def test_no_hint_names_the_other_projects_package():
    # `pip install 'midisynth[...]'` installs the unrelated PyPI project midiSynth.
    files = [
        REPO / "README.md",
        REPO / "pyproject.toml",
        *sorted((REPO / "midisynth").rglob("*.py")),
    ]
    bad = re.compile(r"""pip install\s+(?:-e\s+)?['"]?midisynth\[""")
    found = [f"{f.name}: {m.group(0)}" for f in files for m in bad.finditer(f.read_text())]
    assert not found
