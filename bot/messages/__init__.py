"""Every sentence snapbot shows a person, in one package, so the wording is consistent and tested.

Functions return plain text with light markdown (``*bold*``, backticks) that reads well both in
a terminal and in Slack. Every piece of text that comes from a person or from libvirt (names,
labels, descriptions, error details) goes in through ``literal``, so in Slack it never becomes a
mention, a link or formatting; the console shows messages through ``bot.mrkdwn.plain``.

One module per topic; front ends call them through this package (``messages.error_text(...)``):

- ``format``: sizes, durations, moments and mentions, shared by the others
- ``usage``: usage, help, grammar errors, naming advice
- ``errors``: one sentence per core error, and the internal-error reply
- ``snapshots``: listings, the restore picker, delete and restore prompts, results
- ``backups``: the backup store: incremental snapshots, restores from it, archive, verify
- ``confirmations``: typing the VM's name or pressing Confirm, and cancelling
- ``retention``: prune previews, confirmations and results
- ``operations``: titles, stages, progress, outcomes, crash notices, unlocking
- ``holds``: holds, reminders, verification
- ``schedules``: the schedule table, run reports, the digest
- ``surfaces``: the restore modal, buttons and App Home
- ``storage``: storage usage, its chart and forecasts, what deleting frees
- ``offsite``: the offsite copy of the backup store: status, copy, verify
- ``drills``: restore drills: their report, screenshot caption, Home tab lines, overdue VMs
- ``startup``: the first line a front end prints
- ``doctor``: ``snapbot doctor``'s checks and their fixes
- ``hosts``: several hypervisor hosts: headings, a host that is down, shared VM names
"""

from __future__ import annotations

from bot.messages.backups import (
    archive_prompt,
    archived,
    backup_created,
    backup_restored,
    consistency_text,
    no_backup_store,
    verify_report,
)
from bot.messages.confirmations import (
    CONFIRM_PROMPT,
    NEW_VM_CONFIRM_LABEL,
    cancelled,
    confirmed_by,
    new_vm_confirm_prompt,
    restore_cancelled,
    typed_mismatch,
    typed_name_error,
)
from bot.messages.doctor import doctor_report
from bot.messages.drills import (
    SCREENSHOT_TITLE,
    drill_report,
    drill_status,
    drill_title,
    drills_overdue,
    no_drills,
    screenshot_alt,
    screenshot_caption,
    screenshot_not_posted,
    screenshot_saved,
)
from bot.messages.errors import error_text, internal_error
from bot.messages.format import human_seconds, when
from bot.messages.holds import (
    RESTORE_BUTTON,
    VERIFIED_BUTTON,
    held,
    hold_reminder,
    not_held_after_create,
    released,
    verified,
    verify_prompt,
)
from bot.messages.hosts import (
    host_heading,
    host_unreachable,
    hosts_summary,
    listed_hosts,
    vm_ambiguous,
    vm_on_host,
)
from bot.messages.offsite import (
    no_offsite,
    offsite_brought_back,
    offsite_copied,
    offsite_status,
    offsite_verified,
)
from bot.messages.operations import (
    done_text,
    failed_text,
    operation_title,
    progress_text,
    reconciled_notice,
    reconciled_text,
    slow_operation,
    stage_summary,
    stage_text,
    unlock_confirm_prompt,
    unlock_preview,
    unlocked,
)
from bot.messages.retention import (
    prune_confirm_prompt,
    prune_nothing_confirmed,
    prune_preview,
    prune_result,
)
from bot.messages.schedules import (
    digest_text,
    report_undeliverable,
    run_report,
    run_taken,
    schedule_added,
    schedule_removed,
    schedules_table,
)
from bot.messages.snapshots import (
    created,
    delete_prompt,
    deleted,
    pick_snapshot,
    renamed,
    restore_warning,
    restored,
    snapshots_table,
    vms_table,
)
from bot.messages.startup import (
    connected_banner,
    fallback_banner,
    log_format_unknown,
    slack_banner,
)
from bot.messages.storage import (
    CHART_TITLE,
    chart_alt,
    chart_failed,
    chart_not_posted,
    chart_saved,
    chart_withheld,
    fill_warning,
    forecast_line,
    reclaim_line,
    usage_not_measured,
    usage_report,
    usage_summary,
    weekly_usage_report,
)
from bot.messages.surfaces import (
    CANCEL_BUTTON,
    CONFIRM_BUTTON,
    CONFIRM_LABEL,
    HOME_TITLE,
    LOADING_TEXT,
    LOADING_TITLE,
    MODAL_CLOSE,
    PICK_LABEL,
    PICK_MODAL_SUBMIT,
    PICK_MODAL_TITLE,
    RESTORE_MODAL_SUBMIT,
    RESTORE_MODAL_TITLE,
    SAFETY_CHECKBOX,
    SAFETY_HINT,
    home_header,
    home_not_sampled,
    home_nothing_visible,
    home_storage,
    home_vm,
    modal_failed,
    modal_refusal,
    restore_request_unknown,
)
from bot.messages.usage import help_text, usage, usage_error_text

__all__ = [
    "CANCEL_BUTTON",
    "CHART_TITLE",
    "CONFIRM_BUTTON",
    "CONFIRM_LABEL",
    "CONFIRM_PROMPT",
    "HOME_TITLE",
    "LOADING_TEXT",
    "LOADING_TITLE",
    "MODAL_CLOSE",
    "NEW_VM_CONFIRM_LABEL",
    "PICK_LABEL",
    "PICK_MODAL_SUBMIT",
    "PICK_MODAL_TITLE",
    "RESTORE_BUTTON",
    "RESTORE_MODAL_SUBMIT",
    "RESTORE_MODAL_TITLE",
    "SAFETY_CHECKBOX",
    "SAFETY_HINT",
    "SCREENSHOT_TITLE",
    "VERIFIED_BUTTON",
    "archive_prompt",
    "archived",
    "backup_created",
    "backup_restored",
    "cancelled",
    "chart_alt",
    "chart_failed",
    "chart_not_posted",
    "chart_saved",
    "chart_withheld",
    "confirmed_by",
    "connected_banner",
    "consistency_text",
    "created",
    "delete_prompt",
    "deleted",
    "digest_text",
    "doctor_report",
    "done_text",
    "drill_report",
    "drill_status",
    "drill_title",
    "drills_overdue",
    "error_text",
    "failed_text",
    "fallback_banner",
    "fill_warning",
    "forecast_line",
    "held",
    "help_text",
    "hold_reminder",
    "home_header",
    "home_not_sampled",
    "home_nothing_visible",
    "home_storage",
    "home_vm",
    "host_heading",
    "host_unreachable",
    "hosts_summary",
    "human_seconds",
    "internal_error",
    "listed_hosts",
    "log_format_unknown",
    "modal_failed",
    "modal_refusal",
    "new_vm_confirm_prompt",
    "no_backup_store",
    "no_drills",
    "no_offsite",
    "not_held_after_create",
    "offsite_brought_back",
    "offsite_copied",
    "offsite_status",
    "offsite_verified",
    "operation_title",
    "pick_snapshot",
    "progress_text",
    "prune_confirm_prompt",
    "prune_nothing_confirmed",
    "prune_preview",
    "prune_result",
    "reclaim_line",
    "reconciled_notice",
    "reconciled_text",
    "released",
    "renamed",
    "report_undeliverable",
    "restore_cancelled",
    "restore_request_unknown",
    "restore_warning",
    "restored",
    "run_report",
    "run_taken",
    "schedule_added",
    "schedule_removed",
    "schedules_table",
    "screenshot_alt",
    "screenshot_caption",
    "screenshot_not_posted",
    "screenshot_saved",
    "slack_banner",
    "slow_operation",
    "snapshots_table",
    "stage_summary",
    "stage_text",
    "typed_mismatch",
    "typed_name_error",
    "unlock_confirm_prompt",
    "unlock_preview",
    "unlocked",
    "usage",
    "usage_error_text",
    "usage_not_measured",
    "usage_report",
    "usage_summary",
    "verified",
    "verify_prompt",
    "verify_report",
    "vm_ambiguous",
    "vm_on_host",
    "vms_table",
    "weekly_usage_report",
    "when",
]
