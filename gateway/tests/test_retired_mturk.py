"""Amazon Mechanical Turk closed on 2026-09-30: asking for it stops the server at start, on one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagecontains_gateway.__main__ import main


@pytest.mark.parametrize(
    "settings",
    [{"workforce": "mturk"}, {"workforce": "human", "mturk_production": True}],
    ids=["workforce", "mturk-settings"],
)
def test_mturk_in_a_config_file_refuses_to_start(tmp_path: Path, settings: dict[str, object]) -> None:
    config = tmp_path / "server.json"
    config.write_text(json.dumps(settings))
    config.chmod(0o600)
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(config), "--db", str(tmp_path / "crowd.db")])
    assert_one_line_naming_prolific(str(refused.value))


@pytest.mark.parametrize("flags", [["--workforce", "mturk"], ["--mturk-production"], ["--mturk-region=us-east-1"]])
def test_mturk_flags_refuse_to_start(tmp_path: Path, flags: list[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main([*flags, "--db", str(tmp_path / "crowd.db")])
    assert_one_line_naming_prolific(str(refused.value))
    assert not (tmp_path / "crowd.db").exists()


def assert_one_line_naming_prolific(message: str) -> None:
    assert message.startswith("imagecontains-server: ") and "\n" not in message
    assert "Mechanical Turk closed for good on 2026-09-30" in message and "--workforce prolific" in message
