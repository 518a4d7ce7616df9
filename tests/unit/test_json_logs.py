"""``SNAPBOT_LOG_FORMAT=json``: one JSON object a line, secrets masked on every one, and one
line per operation end that names the operation as the catalogue does."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot import cli, redaction
from core.domain.operation import Actor, OperationKind
from core.errors import VmNotFound
from tests.conftest import Services

TOKEN = "xoxb-1234-5678-abcdefSECRET"


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = redaction.log_handler(stream, "json")
    logger = logging.getLogger("snapbot.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_record_is_one_json_object_on_one_line(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.warning('first line\nsecond line with a "quote" and %s', "an arg")
    logger.info("structured", extra={"snapbot": {"operation_id": "abc", "vm": "web-01"}})
    [first, second] = lines(stream)
    assert first["message"] == 'first line\nsecond line with a "quote" and an arg'
    assert first["level"] == "WARNING"
    assert first["logger"] == "snapbot.test.json"
    assert str(first["time"]).endswith("+00:00")
    assert second["operation_id"] == "abc"
    assert second["vm"] == "web-01"


def test_tokens_are_masked_in_messages_fields_and_tracebacks(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    logger.error("calling Slack with %s", TOKEN)
    logger.info("done", extra={"snapbot": {"outcome": f"token {TOKEN} refused"}})
    try:
        raise RuntimeError(f"bad auth {TOKEN}")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert TOKEN not in text
    assert "SECRET" not in text
    records = lines(stream)
    assert len(records) == 3
    assert "xoxb-[redacted]" in str(records[0]["message"])
    assert "xoxb-[redacted]" in str(records[1]["outcome"])
    assert "RuntimeError" in str(records[2]["exception"])


def test_text_remains_the_default_format() -> None:
    stream = io.StringIO()
    handler = redaction.log_handler(stream)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", (TOKEN,), None)
    assert handler.filter(record)
    handler.emit(record)
    assert stream.getvalue().rstrip().endswith("INFO x: hello xoxb-[redacted]")


def test_an_unknown_log_format_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SNAPBOT_LOG_FORMAT", "yaml")
    assert cli.main(["console"]) == 2
    err = capsys.readouterr().err
    assert "SNAPBOT_LOG_FORMAT='yaml'" in err
    assert "text" in err
    assert "json" in err


async def test_an_operation_end_is_one_info_line_with_its_catalogue_id(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="snapbot.operations")
    await services.runner.reject(
        OperationKind.DELETE,
        Actor("U1", "slack"),
        "ghost",
        VmNotFound("ghost"),
    )
    [row] = await services.catalogue.operations()
    [record] = [r for r in caplog.records if r.name == "snapbot.operations"]
    assert record.levelno == logging.INFO
    fields = record.snapbot  # type: ignore[attr-defined]
    assert fields["operation_id"] == row.id
    assert fields["kind"] == "delete"
    assert fields["vm"] == "ghost"
    assert fields["status"] == "rejected"
    assert "ghost" in fields["outcome"]
    line = json.loads(redaction.JsonFormatter().format(record))
    assert line["operation_id"] == row.id
    assert row.id in line["message"]
