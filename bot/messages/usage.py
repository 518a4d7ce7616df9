"""How to call the commands: usage, help, grammar errors and the advice on snapshot names."""

from __future__ import annotations

from bot.grammar import PRUNE, RESTORE, SNAPSHOT, UsageError
from bot.mrkdwn import literal
from core.domain.snapshot import LABEL_MAX_LENGTH

USAGE = {
    SNAPSHOT: (
        "Usage:\n"
        '  /snapshot <vm> <name> [--desc "text"]   take a snapshot (memory too if running)\n'
        "  /snapshot list [<vm>]                     list snapshots of one VM or of all\n"
        "  /snapshot vms                             list VMs and their state\n"
        "  /snapshot delete <vm> <name>              delete a snapshot\n"
        "  /snapshot rename <vm> <old> <new>         change a snapshot's name\n"
        "  /snapshot <vm> <name> --hold              keep it until you say the change is verified\n"
        "  /snapshot hold <vm> <name> [--until YYYY-MM-DD | --until-verified]\n"
        "  /snapshot release <vm> <name>             end a hold (retention may then prune it)\n"
        "  /snapshot <vm> <name> --no-space-check    go ahead where free space cannot be known\n"
        "  /snapshot <vm> <name> --incremental       disks + configuration into the backup store\n"
        "        (outside the VM: survives a lost disk or a deleted VM; only new data is stored)\n"
        "  /snapshot archive <vm> <name>             move a full snapshot into the backup store\n"
        "        (frees its space in the image; its memory state is not kept)\n"
        "  /snapshot verify [<vm> [<name>]]          re-read the backup store, report damage\n"
        "  /snapshot drill <vm> [<name>]             boot a restore point apart and report\n"
        "        (a throwaway VM without network; the original is never touched)\n"
        "  /snapshot usage [<vm>|<host>]             storage used, free space, when it fills\n"
        "  /snapshot offsite [status|copy|verify]    the backup store's copy in object storage\n"
        "  /snapshot offsite undelete <vm> <name>    bring a deleted restore point back from it\n"
        "  /snapshot unlock <vm>                     admins: see what holds a VM, end its lock\n"
        "  /snapshot schedule add <name> <vm|glob|all> <when> [--tz Zone] [--channel C]\n"
        "        [--incremental | --verify | --drill] [--archive]\n"
        "      --incremental: restore points in the backup store; --verify: re-read the store;\n"
        "      --archive: retention moves full snapshots to the store instead of deleting;\n"
        "      --drill: restore drills of the VMs not drilled for 30 days, one at a time\n"
        "        [--keep-last N --keep-daily N --keep-weekly N --keep-monthly N ...]\n"
        "        [--include-manual] [--safety-keep-last N] [--safety-keep-days D]\n"
        "      when: daily HH:MM | weekly <mon..sun> HH:MM | monthly <1-28> HH:MM\n"
        "            | cron '<min> <hour> <day> <month> <weekday>'\n"
        "  /snapshot schedule list | remove <id|name> | run <id|name>\n"
        "  /snapshot help                            this text\n"
        "  <vm> may name its host first, as hv1/web-01 (needed where several hosts have web-01)"
    ),
    RESTORE: (
        "Usage:\n"
        "  /restore <vm> <name> [--no-safety-snapshot]\n"
        "  /restore <vm>                             choose one of the VM's snapshots first\n"
        "  /restore <vm> <name> --as <new-vm>        a copy of an incremental as a new VM\n"
        "  Replaces the VM's current state with the snapshot, after you type the VM's name.\n"
        "  A safety snapshot of the current state is taken first unless you turn it off.\n"
        "  Incremental and archived snapshots restore the disks (no memory: the VM boots);\n"
        "  a VM that no longer exists is defined again: /restore <deleted-vm> <name>."
    ),
    PRUNE: (
        "Usage:\n"
        "  /prune <vm|all> [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
        "         [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--dry-run]\n"
        "         [--include-manual] [--safety-keep-last N] [--safety-keep-days D]\n"
        "  Shows which snapshots the policy keeps and deletes, and why; nothing is deleted\n"
        "  until you confirm. Held snapshots are kept; manual ones too unless you give\n"
        "  --include-manual; safety snapshots (taken before restores) keep the newest 3 and\n"
        "  any not older than 14 days unless set otherwise; a VM's last snapshot is never\n"
        "  deleted. Example: /prune web-01 --keep-last 3 --keep-daily 7 --keep-weekly 4"
    ),
}


NAMING_ADVICE = (
    f"Snapshot names: up to {LABEL_MAX_LENGTH} characters, no spaces, no '/', not starting "
    "with '.' or '-', not all digits. Say what and when: before-upgrade-2025-12-16, "
    "clean-install, pre-migration."
)


def usage(command: str) -> str:
    """The usage text of a command."""
    return USAGE[command]


def help_text(command: str) -> str:
    """Help: usage plus naming advice."""
    return usage(command) + ("\n\n" + NAMING_ADVICE if command == SNAPSHOT else "")


def usage_error_text(error: UsageError) -> str:
    """A grammar error and the usage of its command."""
    if error.command is None:
        return (
            f"{literal(error.problem)}. Commands: /snapshot, /restore, /prune (try /snapshot help)."
        )
    return f"{literal(error.problem)}.\n{usage(error.command)}"
