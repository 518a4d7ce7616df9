"""``snapbot doctor``'s report: one line per check, and for each problem the fix."""

from __future__ import annotations

from collections.abc import Mapping

from core.services.doctor import Check, Finding, Problem, Status

# What each problem means, then what to do about it; {name} is one of the finding's facts.
_PROBLEMS: Mapping[Problem, tuple[str, str]] = {
    Problem.LIBVIRT_UNREACHABLE: (
        "cannot reach libvirt at {uri}: {why}",
        "start libvirtd (systemctl enable --now libvirtd, or virtqemud.socket), check "
        "LIBVIRT_URI, and for qemu+ssh:// check that the service user's SSH key is accepted",
    ),
    Problem.LIBVIRT_READ_ONLY: (
        "libvirt at {uri} answers, but only read-only: snapshots and restores would be refused",
        "add the service user to the libvirt group (usermod -aG libvirt snapbot) or grant "
        "org.libvirt.unix.manage in a polkit rule, then restart snapbot",
    ),
    Problem.NO_VMS: (
        "libvirt has no VMs to check",
        "define the VMs on this host, or point LIBVIRT_URI at the host that has them",
    ),
    Problem.DISK_NOT_QCOW2: (
        "writable disks not in qcow2, which internal snapshots need: {disks}",
        "convert each one with the VM shut off (qemu-img convert -O qcow2 DISK DISK.qcow2), "
        "point its <driver type='qcow2'/> and <source> at the copy (virsh edit VM), or mark "
        "the disk read-only",
    ),
    Problem.NOT_CHECKED: (
        "not checked: {why}",
        "fix the libvirt check above and run snapbot doctor again",
    ),
    Problem.SPACE_LOW: (
        "less than {need} free where snapshots write: {places}",
        "free space there or grow the filesystem or pool; a snapshot with memory state needs "
        "about the VM's RAM besides the changed disk blocks",
    ),
    Problem.SPACE_UNKNOWN: (
        "free space not known: {why}",
        "for remote hosts, define a libvirt storage pool for the images' directory "
        "(virsh pool-define-as) so its free space can be read",
    ),
    Problem.DATABASE_UNREACHABLE: (
        "cannot open the catalogue database {url}: {why}",
        "check DATABASE_URL (postgres://USER:PASSWORD@HOST:5432/DB, or sqlite:///PATH), that "
        "the server runs and accepts this user, or that the directory exists and is writable",
    ),
    Problem.DATABASE_NEW: (
        "the catalogue database {url} is new: snapbot creates its tables at the first start",
        "",
    ),
    Problem.DATABASE_NEEDS_UPGRADE: (
        "the catalogue database {url} needs migrations {migrations}",
        "nothing to do: snapbot applies them when it starts (a SQLite file is backed up "
        "first); take a dump of a PostgreSQL database before upgrading",
    ),
    Problem.DATABASE_TOO_NEW: (
        "the catalogue database {url} has migrations this version does not know ({migrations}): "
        "a newer snapbot upgraded it",
        "run the newer snapbot again, or restore the backup taken before the upgrade "
        "(CATALOGUE.bak-TIME-SCHEMA next to a SQLite file, or your PostgreSQL dump)",
    ),
    Problem.SLACK_NOT_CONFIGURED: (
        "Slack is not configured: snapbot run will start the console",
        "set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP) "
        "in /etc/snapbot/snapbot.env",
    ),
    Problem.SLACK_AUTH_FAILED: (
        "Slack refused the bot token: {error}",
        "copy the Bot User OAuth Token (xoxb-...) again from the app's OAuth & Permissions "
        "page; reinstall the app to the workspace if it was revoked",
    ),
    Problem.SLACK_SCOPES_UNKNOWN: (
        "Slack did not say which scopes the bot token has",
        "compare the app's OAuth & Permissions page with manifest.yml's bot scopes",
    ),
    Problem.SLACK_SCOPES_MISSING: (
        "the bot token lacks scopes manifest.yml asks for: {missing}",
        "add them under OAuth & Permissions (or update the app from manifest.yml), reinstall "
        "the app, and put the new bot token in SLACK_BOT_TOKEN",
    ),
    Problem.SOCKET_MODE_FAILED: (
        "Socket Mode cannot connect with the app token: {error}",
        "enable Socket Mode in the app's settings and create an app-level token with the "
        "connections:write scope (xapp-...) for SLACK_APP_TOKEN",
    ),
    Problem.PUBLIC_URL_UNKNOWN: (
        "HTTP mode on port {port}: Slack must reach it at a public HTTPS URL, not checked",
        "put a TLS reverse proxy in front of port {port}, set the app's Request URLs to "
        "https://HOST/slack/events, and set SNAPBOT_PUBLIC_URL to that URL so doctor checks it "
        "(or use Socket Mode: SLACK_APP_TOKEN, no public URL needed)",
    ),
    Problem.PUBLIC_URL_BAD: (
        "the public URL {url} is not an https:// URL ending in /slack/events",
        "Slack only calls HTTPS; set the app's Request URLs and SNAPBOT_PUBLIC_URL to "
        "https://HOST/slack/events, proxied to snapbot's PORT",
    ),
    Problem.TIMEZONE_INVALID: (
        "{zone} is not a time zone",
        "set SNAPBOT_TIMEZONE to a name such as Europe/Paris or UTC (install tzdata if the "
        "name is right)",
    ),
    Problem.BACKUP_STORE_NONE: (
        "no backup store: incremental snapshots, archive and restore of deleted VMs are off",
        "set SNAPBOT_BACKUP_DIR to a directory on another disk or an NFS mount",
    ),
    Problem.BACKUP_STORE_NOT_WRITABLE: (
        "{dir} cannot be written by snapbot's user",
        "give that user write access to it (chown or a group), or mount it read-write",
    ),
    Problem.BACKUP_STORE_SAME_DISK: (
        "{dir} is on the same filesystem as the disks of {disks}: a lost disk takes their "
        "backups with it",
        "point SNAPBOT_BACKUP_DIR at another disk or an NFS mount",
    ),
    Problem.BACKUP_STORE_LOW: (
        "only {free} free in {dir}",
        "free space there or move the store (keep at least {need} free)",
    ),
    Problem.OFFSITE_UNUSABLE: (
        "the offsite copy at {where} cannot be used: {why}",
        "check SNAPBOT_OFFSITE_URL and SNAPBOT_OFFSITE_BUCKET (the bucket must exist), and the "
        "keys in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ),
    Problem.BACKUP_TOOLS_MISSING: (
        "incremental snapshots need {tools}, which this host lacks",
        "install Debian's qemu-utils and python3-libnbd (make deps does)",
    ),
}

_OK: Mapping[Check, str] = {
    Check.LIBVIRT: "libvirt at {uri} answers, {rights}",
    Check.DISKS: "every writable disk of the {vms} VM(s) is qcow2",
    Check.SPACE: "at least {least} free wherever the {vms} VM(s) write snapshots",
    Check.DATABASE: "the catalogue database {url} is reachable and its schema up to date",
    Check.SLACK_TOKEN: "the bot token is valid (workspace {team})",
    Check.SLACK_SCOPES: "the bot token has every scope manifest.yml asks for ({scopes})",
    Check.SLACK_TRANSPORT: "Slack reaches snapbot by {mode}",
    Check.TIMEZONE: "{zone} (now {now})",
    Check.BACKUP_STORE: "{dir} is writable, {free} free, on another filesystem than the VMs",
    Check.OFFSITE: "the bucket {where} answers and takes writes",
}


def finding_line(finding: Finding) -> str:
    """``OK    libvirt: ...``, and for a problem `` — fix: ...``."""
    facts = dict(finding.facts)
    if finding.problem is Problem.NONE:
        text = _OK[finding.check].format_map(facts)
    else:
        what, fix = _PROBLEMS[finding.problem]
        text = what.format_map(facts)
        if fix:
            text += f". Fix: {fix.format_map(facts)}"
    # Several hosts: each host's libvirt, disks and space are a line of their own.
    on = f" on {facts['host']}" if "host" in facts else ""
    return f"{finding.status.value:<4}  {finding.check.value}{on}: {text}"


def doctor_report(findings: list[Finding]) -> str:
    lines = [finding_line(f) for f in findings]
    failures = sum(f.status is Status.FAIL for f in findings)
    warnings = sum(f.status is Status.WARN for f in findings)
    if failures:
        lines.append(
            f"{failures} check(s) failed, {warnings} warning(s): fix the FAIL lines first."
        )
    elif warnings:
        lines.append(f"No check failed; {warnings} warning(s).")
    else:
        lines.append("Every check passed.")
    return "\n".join(lines)
