"""Hypothesis strategies that build real snapbot commands with hostile values.

Random text almost never forms a command, so it only ever tests the first "unknown command"
branch. These build every verb of the grammar with its options, then put hostile values where
names, numbers and text go: every Unicode category, huge and odd numbers, quotes, repeated
options, very long values and Slack's own markup.
"""

from __future__ import annotations

import os
import shlex

from hypothesis import strategies as st

# Small in `make test` (the whole fuzz suite stays well under 30 s); `make reliability` runs
# the long version with SNAPBOT_FUZZ_LONG_EXAMPLES.
EXAMPLES = int(os.environ.get("SNAPBOT_FUZZ_EXAMPLES", "40"))
LONG_EXAMPLES = int(os.environ.get("SNAPBOT_FUZZ_LONG_EXAMPLES", "3000"))

VMS = ("web-01", "web-02", "db-01")
SLACK_MARKUP = (
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U_ADMIN>",
    "<#C0001|ops>",
    "<!subteam^S_OPS|@ops>",
    "<https://example.invalid|click>",
    "<mailto:a@b.invalid>",
    "&lt;!channel&gt;",
    "&amp;",
    "&amp;lt;",
    "*bold*",
    "_it_",
    "~gone~",
    "`code`",
    "```block```",
    "> quote",
    ":rocket:",
)
ODD_NUMBERS = (
    "0",
    "-1",
    "007",
    "1e9",
    "0x10",
    "²",
    "١٢",
    "٣",
    "Ⅻ",
    "½",
    "１２",
    "nan",
    "inf",
    "9" * 30,
    "9" * 5000,
    "1_000",
    " 7",
    "+3",
)
QUOTES = ('"', "'", "“", "”", "‘", "’", "„", "\\", '"unclosed', "'", "''", '""', "\\'")
OPTION_LIKE = ("--", "-", "---", "--=", "-x", "--desc", "--desc=", "--keep-daily", "--hold=1")

# Every Unicode category, lone surrogates included where the transport can carry them.
_ANY_CHAR = st.characters(exclude_categories=())
_WIRE_CHAR = st.characters(exclude_categories=("Cs",))


def texts(*, wire: bool) -> st.SearchStrategy[str]:
    return st.text(_WIRE_CHAR if wire else _ANY_CHAR, max_size=40)


def hostile(*, wire: bool = True) -> st.SearchStrategy[str]:
    """One hostile value: a name, number or text a careless or malicious person might type."""
    return st.one_of(
        st.sampled_from(VMS),
        st.sampled_from(("before", "all", "nightly", "x", "help", "list", "create", "")),
        texts(wire=wire),
        st.sampled_from(SLACK_MARKUP),
        st.sampled_from(ODD_NUMBERS),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.sampled_from(QUOTES),
        st.sampled_from(OPTION_LIKE),
        st.sampled_from(
            (
                "x" * 4100,
                "y" * 1000,
                "z" * 256,
                "w" * 65,
                "é" * 300,
                "😀" * 70,
                "a b c",
                "\u202egnp",
                "\x00",
                "\n",
            )
        ),
        st.builds(lambda a, b: a + b, st.sampled_from(VMS), texts(wire=wire)),
    )


def word(*, wire: bool = True) -> st.SearchStrategy[str]:
    """A hostile value as one shell word (quoted when it must be), or raw (so quoting breaks)."""
    value = hostile(wire=wire)
    return st.one_of(value.map(shlex.quote), value)


_SNAPSHOT_OPTIONS = (
    "desc",
    "description",
    "hold",
    "until",
    "until-verified",
    "tz",
    "channel",
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
    "dry-run",
    "no-safety-snapshot",
    "no-space-check",
    "include-manual",
    "safety-keep-last",
    "safety-keep-days",
    "unknown",
    "",
)


def option(*, wire: bool = True) -> st.SearchStrategy[str]:
    """``--name value``, ``--name=value``, ``--name`` alone, or with a hostile value."""
    name = st.sampled_from(_SNAPSHOT_OPTIONS)
    return st.one_of(
        st.builds(lambda n, v: f"--{n} {v}", name, word(wire=wire)),
        st.builds(lambda n, v: f"--{n}={v}", name, word(wire=wire)),
        name.map(lambda n: f"--{n}"),
    )


def _line(verb: str, *parts: str) -> str:
    return " ".join(p for p in (verb, *parts) if p)


# Each verb of the grammar with the positional words it takes.
_FORMS: tuple[tuple[str, tuple[str, ...], int], ...] = (
    ("/snapshot", (), 2),  # <vm> <name>
    ("/snapshot", ("create",), 2),
    ("/snapshot", ("list",), 1),
    ("/snapshot", ("vms",), 0),
    ("/snapshot", ("delete",), 2),
    ("/snapshot", ("rename",), 3),
    ("/snapshot", ("hold",), 2),
    ("/snapshot", ("release",), 2),
    ("/snapshot", ("unlock",), 1),
    ("/snapshot", ("help",), 0),
    ("/snapshot", ("schedule", "add"), 4),
    ("/snapshot", ("schedule", "list"), 0),
    ("/snapshot", ("schedule", "remove"), 1),
    ("/snapshot", ("schedule", "run"), 1),
    ("/snapshot", ("schedule",), 1),
    ("/restore", (), 2),
    ("/restore", (), 1),
    ("/prune", (), 1),
    ("/prune", ("all",), 0),
)


@st.composite
def command_line(draw: st.DrawFn, *, wire: bool = True) -> str:
    """A console line: a real verb, about the right number of words (sometimes one too few or
    too many), and zero to four options (repeats included)."""
    verb, fixed, count = draw(st.sampled_from(_FORMS))
    count = max(0, count + draw(st.sampled_from((0, 0, 0, -1, 1))))
    words = [draw(word(wire=wire)) for _ in range(count)]
    if fixed == ("schedule", "add") and draw(st.booleans()):
        when = draw(
            st.sampled_from(
                (
                    "daily 02:00",
                    "weekly sun 03:30",
                    "monthly 1 04:00",
                    "cron '30 2 * * 1-5'",
                    "monthly ² 02:00",
                    "cron '99 99 * * *'",
                    "daily 24:61",
                    "weekly blursday 01:00",
                )
            )
        )
        words = [*words[:2], when]
    options = draw(st.lists(option(wire=wire), max_size=4))
    return _line(verb, *fixed, *words, *options)
