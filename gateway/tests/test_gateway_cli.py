"""imagecontains-server's command line: fault injection is offered for tests, apart from the production options."""

from __future__ import annotations

import pytest

from imagecontains_gateway.__main__ import config_from_args, parse_args

FAULT_FLAGS = ["--throttle-rate", "--retry-after", "--error-rate", "--drop-rate", "--latency-ms"]


def help_sections(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    heading, sections = "usage", {"usage": ""}
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            heading = line[:-1]
            sections[heading] = ""
        else:
            sections[heading] += line + "\n"
    return sections


def test_fault_flags_are_only_in_their_own_marked_group_of_the_help(capsys) -> None:
    sections = help_sections(capsys)
    faults = sections.pop("fault injection, for tests")
    assert "never set these in production" in faults
    for flag in FAULT_FLAGS:
        assert f"{flag} " in faults
        assert not [name for name, text in sections.items() if name != "usage" and f"  {flag} " in text], flag
    assert "--workforce" in sections["options"] and "--db" in sections["options"]


def test_fault_flags_still_reach_the_config() -> None:
    args = ["--throttle-rate", "0.25", "--retry-after", "3", "--error-rate", "0.1", "--drop-rate", "0.05"]
    config = config_from_args(parse_args([*args, "--latency-ms", "40"]))
    assert (config.throttle_rate, config.retry_after_seconds, config.error_rate) == (0.25, 3, 0.1)
    assert (config.drop_rate, config.latency_ms) == (0.05, 40.0)
