"""Rule validation, the condition, and URL redaction: pure functions."""

from __future__ import annotations

import math

import pytest

from keel.alerts.rules import (
    Channel,
    Rule,
    RuleError,
    check_channels,
    check_filters,
    check_rule,
    holds,
    redact_url,
)

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


def _rule(**changes: object) -> Rule:
    fields: dict[str, object] = {
        "id": "r1",
        "name": "errors-high",
        "metric": "error_rate",
        "filters": {},
        "window_s": 60,
        "comparator": ">",
        "threshold": 0.5,
        "for_s": 0,
        "channels": (),
        "enabled": True,
    }
    return Rule(**{**fields, **changes})  # type: ignore[arg-type]


def test_redaction_keeps_scheme_and_host_only() -> None:
    assert redact_url(SLACK) == "https://hooks.slack.com/…"
    assert redact_url("http://user:pw@127.0.0.1:8080/hook?token=abc") == "http://127.0.0.1:8080/…"
    assert redact_url("not a url/secret") == "(invalid URL)"
    channel = Channel("slack", SLACK)
    assert SLACK not in repr(channel)
    assert channel.to_dict() == {"type": "slack", "url": "https://hooks.slack.com/…"}
    assert SLACK not in str(_rule(channels=(channel,)).to_dict())


@pytest.mark.parametrize(
    ("comparator", "value", "expected"),
    [
        (">", 0.6, True),
        (">", 0.5, False),
        (">=", 0.5, True),
        ("<", 0.4, True),
        ("<", 0.5, False),
        ("<=", 0.5, True),
        (">", None, False),
        ("<", None, False),
        ("<", math.nan, False),
    ],
)
def test_holds(comparator: str, value: float | None, expected: bool) -> None:
    assert holds(value, comparator, 0.5) is expected


def test_valid_rule_and_condition_text() -> None:
    rule = check_rule(_rule(filters={"model": "gpt-4o", "customer": "acme"}, for_s=30))
    assert rule.condition() == "error_rate > 0.5 over 60 s (customer=acme, model=gpt-4o)"
    assert rule.query_filters().model == "gpt-4o"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": ""}, "name is 1 to 128"),
        ({"name": "has space"}, "name is 1 to 128"),
        ({"metric": "nope"}, "unknown metric 'nope': use one of requests, errors, error_rate"),
        ({"comparator": "=="}, "comparator must be one of > >= < <="),
        ({"window_s": 0}, "window_s must be between 1 and 2678400, got 0"),
        ({"for_s": -1}, "for_s must be between 0 and 604800, got -1"),
        ({"threshold": math.inf}, "threshold must be a finite number"),
        ({"window_s": 1.5}, "window_s and for_s are whole seconds"),
        ({"filters": {"colour": "red"}}, "unknown filter 'colour': use model, provider"),
    ],
)
def test_invalid_rules_name_the_field(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError) as caught:
        check_rule(_rule(**changes))
    assert str(caught.value).startswith(message)


def test_filters_drop_empty_values_and_check_source() -> None:
    assert check_filters({"model": "m", "customer": "", "tag": None}) == {"model": "m"}
    assert check_filters({"source": "otlp"}) == {"source": "otlp"}
    with pytest.raises(RuleError, match="filter source is gateway or otlp"):
        check_filters({"source": "elsewhere"})


def test_channels_http_only_and_errors_never_show_the_url() -> None:
    assert check_channels([{"type": "slack", "url": SLACK}]) == (Channel("slack", SLACK),)
    bad = [
        ([{"type": "email", "url": SLACK}], "channels[0].type must be webhook or slack"),
        ([{"type": "webhook", "url": "ftp://h/x?secret=1"}], "channels[0].url must be an http"),
        ([{"type": "webhook", "url": "file:///etc/passwd"}], "channels[0].url must be an http"),
        ([{"type": "webhook"}], "channels[0].url must be an http or https URL"),
        ([{"type": "webhook", "url": SLACK, "x": 1}], "channels[0] is {type"),
        ([{"type": "webhook", "url": SLACK}] * 11, "a rule has at most 10 channels"),
    ]
    for channels, message in bad:
        with pytest.raises(RuleError) as caught:
            check_channels(channels)
        assert str(caught.value).startswith(message)
        assert "secret" not in str(caught.value)
