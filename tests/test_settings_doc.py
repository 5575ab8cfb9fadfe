"""docs/settings.md documents every setting, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.settings import Settings


def test_every_setting_is_in_the_settings_table() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `DISTILLGATE_([A-Z_]+)` \|", page, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}
