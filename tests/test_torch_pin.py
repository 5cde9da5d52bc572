"""One PyTorch version: requirements-torch.txt pins it, and every place that installs or names it agrees.

The Makefile (so `make test`, CI's command) and the Dockerfile install from the pin file; no other place may
name a different version (a hard-coded `torch==X`, a `pytorch/pytorch:X` base image, or prose's "PyTorch X").
Measurement records (bench/RESULTS.md, research/) say which version measured what, and are not read.
"""
from __future__ import annotations

import re
import tomllib

import pytest

from conftest import ROOT

PIN_FILE = ROOT / "requirements-torch.txt"
PLACES = ["Makefile", "Dockerfile", ".ci/run", "pyproject.toml", "README.md", "docker-compose.yml",
          "containers/build.sh", "containers/smoke.sh", "containers/README.md"]

# every way a version of torch or torchvision is written down: requirement specifiers, base images, prose
MENTIONS = [
    re.compile(r"\b(torch|torchvision)\s*(?:===?|~=|>=|<=|>|<|!=)\s*v?([0-9][0-9a-z.+]*)", re.I),
    re.compile(r"\b(pytorch)/pytorch:v?([0-9][0-9a-z.]*)", re.I),
    re.compile(r"\b(PyTorch|torchvision|torch)\s+v?([0-9]+\.[0-9]+(?:\.[0-9]+)?)\b"),
]


def pins() -> dict[str, str]:
    found = {}
    for line in PIN_FILE.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"(torch|torchvision)==([0-9][0-9a-z.+]*)", line)
            assert m, f"requirements-torch.txt: {line!r} is not an exact pin of torch or torchvision"
            found[m.group(1)] = m.group(2)
    return found


def mentions(text: str) -> list[tuple[str, str]]:
    """(package, version) for every version of torch or torchvision written in ``text``."""
    out = []
    for pattern in MENTIONS:
        for name, version in pattern.findall(text):
            out.append(("torch" if name.lower() == "pytorch" else name.lower(), version.rstrip(".")))
    return out


def test_the_pin_file_pins_both_exactly():
    assert set(pins()) == {"torch", "torchvision"}


@pytest.mark.parametrize("place", PLACES)
def test_no_place_names_another_version(place):
    path = ROOT / place
    assert path.exists(), f"{place} (a place the pin is read or written) is missing"
    pinned = pins()
    wrong = [f"{name} {version}" for name, version in mentions(path.read_text())
             if version != pinned[name] and not pinned[name].startswith(version + ".")]
    assert not wrong, f"{place} names {wrong}, the pin (requirements-torch.txt) is {pinned}"


def test_the_installers_read_the_pin_file():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install .*-r requirements-torch\.txt", makefile)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements-torch\.txt ", dockerfile, re.M)
    assert re.search(r"pip install -r requirements-torch\.txt", dockerfile)
    assert "make test" in (ROOT / ".ci/run").read_text()          # CI installs through the Makefile
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:                                               # unpinned there, or the same pin
        m = re.match(r"(torch|torchvision)\b(.*)", dep)
        if m and m.group(2).strip():
            assert m.group(2).strip() == f"=={pins()[m.group(1)]}", dep


def test_mentions_finds_each_form():
    text = ("pip install torch==2.5.1 torchvision>=0.20\nFROM pytorch/pytorch:2.5.1-cuda12.4\n"
            "PyTorch 2.11 was used\n")
    assert mentions(text) == [("torch", "2.5.1"), ("torchvision", "0.20"), ("torch", "2.5.1"), ("torch", "2.11")]
