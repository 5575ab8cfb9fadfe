"""The README's settings table documents every setting, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import Settings


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `DISTILLGATE_([A-Z_]+)` \|", readme, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}
