"""Restore, delete and prune need a confirmation that runs once, and only for its requester."""

from __future__ import annotations

import asyncio

from bot.slack import blocks
from core.domain.operation import OperationKind, OperationStatus
from core.domain.snapshot import Origin
from tests.conftest import ALICE, Services
from tests.slack.harness import ADMIN, CHANNEL, OPERATOR, RESTORER, SlackBot

TYPED = blocks.CONFIRM_BLOCK, blocks.CONFIRM_INPUT


def typed(name: str, *, safety: bool = True) -> dict[str, dict[str, dict[str, object]]]:
    option = {"text": {"type": "plain_text", "text": "x"}, "value": blocks.SAFETY_VALUE}
    return {
        blocks.CONFIRM_BLOCK: {blocks.CONFIRM_INPUT: {"value": name}},
        blocks.SAFETY_BLOCK: {
            blocks.SAFETY_INPUT: {"selected_options": [option] if safety else []}
        },
    }


async def open_restore_modal(bot: SlackBot, line: str, user: str) -> dict[str, object]:
    answer = await bot.command(line, user=user)
    assert answer.status == 200
    assert answer.seconds < 1.0
    opened = await bot.slack.wait_for(lambda c: c.method == "views.open")
    assert opened.ok, opened.error
    return await bot.slack.wait_until(
        lambda: next(
            (
                v
                for v in bot.slack.views.values()
                if v.get("callback_id") == blocks.RESTORE_CALLBACK
            ),
            None,
        ),
        what="the restore modal",
    )


async def test_restore_modal_refuses_a_wrong_name_then_restores_once(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "before-upgrade", actor=ALICE)
    await services.service.create_snapshot("web-01", "later", actor=ALICE)
    view = await open_restore_modal(bot, "/restore web-01 before-upgrade", RESTORER)
    shown = str(view["blocks"])
    assert "This will restore web-01 to snapshot state" in shown
    assert "Current data will be lost. This cannot be undone." in shown
    assert "Newer snapshots" in shown
    assert "later" in shown

    answer = await bot.submit(view, typed("WEB-01"), user=RESTORER)
    assert answer["response_action"] == "errors"
    assert "web-01" in answer["errors"][blocks.CONFIRM_BLOCK]
    assert not any(method == "revert_snapshot" for method, _ in services.hv.calls)

    # the right name, submitted twice (a double click): one restore
    first, second = await asyncio.gather(
        bot.submit(view, typed("web-01"), user=RESTORER),
        bot.submit(view, typed("web-01"), user=RESTORER),
    )
    assert first is None
    assert second is None
    final = await bot.slack.wait_for_message(lambda m: m.text.startswith(("✅", "❌")), timeout=15)
    assert "web-01 restored to `before-upgrade`" in final.text
    assert "Safety snapshot of the state before" in final.text
    await bot.idle()
    restores = [
        op
        for op in await services.catalogue.operations()
        if op.kind is OperationKind.RESTORE and op.status is OperationStatus.SUCCEEDED
    ]
    assert len(restores) == 1
    assert sum(method == "revert_snapshot" for method, _ in services.hv.calls) == 1
    told = [e.text for e in bot.slack.ephemerals] + [
        p.text or "" for h in bot.slack.hooks for p in bot.slack.responses(h)
    ]
    assert any("was already confirmed" in t for t in told), told


async def test_restore_is_refused_in_the_modal_without_the_role(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("db-01", "base", actor=ALICE)
    await bot.command("/restore db-01 base", user=RESTORER)  # restorer only on web-*
    view = await bot.slack.wait_until(
        lambda: next(
            (v for v in bot.slack.views.values() if "needs the *restorer* role" in str(v)), None
        ),
        what="a refusal in the modal",
    )
    assert "callback_id" not in view or view.get("callback_id") != blocks.RESTORE_CALLBACK


async def test_restore_without_a_name_lets_the_user_pick(bot: SlackBot, services: Services) -> None:
    await services.service.create_snapshot("web-01", "one", actor=ALICE)
    await services.service.create_snapshot("web-01", "two", actor=ALICE)
    await bot.command("/restore web-01", user=ADMIN)
    picker = await bot.slack.wait_until(
        lambda: next(
            (v for v in bot.slack.views.values() if v.get("callback_id") == blocks.PICK_CALLBACK),
            None,
        )
    )
    answer = await bot.submit(
        picker,
        {blocks.PICK_BLOCK: {blocks.PICK_INPUT: {"selected_option": {"value": "one"}}}},
        user=ADMIN,
    )
    assert answer["response_action"] == "update"
    confirm = await bot.slack.wait_until(
        lambda: next(
            (
                v
                for v in bot.slack.views.values()
                if v.get("callback_id") == blocks.RESTORE_CALLBACK
            ),
            None,
        )
    )
    assert "Snapshot: one" in str(confirm["blocks"])


async def test_prune_preview_then_confirm_deletes_and_a_second_click_does_nothing(
    bot: SlackBot, services: Services
) -> None:
    for n in range(5):
        services.hv._clock += 86_400
        await services.service.create_snapshot(
            "web-02", f"nightly-{n}", actor=ALICE, origin=Origin.SCHEDULED
        )
    answer = await bot.command("/prune web-02 --keep-last 2", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    text = preview[0].text or ""
    assert "DELETE nightly-0" in text
    assert "keep   nightly-4" in text
    assert "last #1" in text
    assert len(await services.catalogue.snapshots()) == 5, "nothing deleted before Confirm"
    buttons = [e for b in preview[0].blocks or [] if b["type"] == "actions" for e in b["elements"]]
    confirm = next(b for b in buttons if b["action_id"] == blocks.CONFIRM_ACTION)

    await bot.click(
        blocks.CONFIRM_ACTION, confirm["value"], user=OPERATOR, response_url=answer.response_url
    )
    await bot.idle()
    assert len(await services.catalogue.snapshots()) == 5, "another user's click deletes nothing"

    await bot.click(
        blocks.CONFIRM_ACTION, confirm["value"], user=ADMIN, response_url=answer.response_url
    )
    final = await bot.slack.wait_for_message(lambda m: m.text.startswith("✅"), timeout=15)
    assert "Prune finished" in final.text
    assert "deleted 3" in final.text
    await bot.idle()
    assert sorted(s.label for s in await services.catalogue.snapshots()) == [
        "nightly-3",
        "nightly-4",
    ]

    await bot.click(
        blocks.CONFIRM_ACTION, confirm["value"], user=ADMIN, response_url=answer.response_url
    )
    await bot.idle()
    assert len([m for m in bot.slack.messages(CHANNEL) if m.text.startswith("✅")]) == 1


async def test_delete_asks_for_confirm_and_cancel_spends_it(
    bot: SlackBot, services: Services
) -> None:
    await services.service.create_snapshot("web-01", "old", actor=ALICE)
    answer = await bot.command("/snapshot delete web-01 old", user=ADMIN)
    preview = await bot.slack.wait_until(lambda: bot.slack.responses(answer.response_url))
    assert "Delete snapshot `old` of web-01?" in (preview[0].text or "")
    value = next(
        e["value"] for b in preview[0].blocks or [] if b["type"] == "actions" for e in b["elements"]
    )
    await bot.click(blocks.CANCEL_ACTION, value, user=ADMIN, response_url=answer.response_url)
    await bot.idle()
    await bot.click(blocks.CONFIRM_ACTION, value, user=ADMIN, response_url=answer.response_url)
    await bot.idle()
    assert [s.label for s in await services.catalogue.snapshots()] == ["old"]
    texts = [p.text or "" for p in bot.slack.responses(answer.response_url)]
    assert any("Delete of web-01 cancelled" in t for t in texts), texts
