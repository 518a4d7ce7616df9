"""Running one audited, exclusive operation on a VM.

``OperationRunner.run`` is the only way a mutating use case touches a VM: it takes the VM's
database lock (refusing with "busy" when another operation holds it), records every stage,
heartbeats while it works, and ends the record in exactly one terminal status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace

from core.domain.operation import (
    Actor,
    Operation,
    OperationKind,
    OperationStatus,
    ProgressCallback,
    Stage,
)
from core.domain.snapshot import Snapshot
from core.domain.vm import Vm
from core.errors import CoreError, HypervisorError
from core.ports import Catalogue, Clock, OperationObserver

logger = logging.getLogger(__name__)
# One INFO line per operation end, under a name operators can route on its own.
ended_log = logging.getLogger("snapbot.operations")

HEARTBEAT_SECONDS = 10.0


def process_owner() -> str:
    """Identify this process in lock rows: host, pid and a token unique to this start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class QuietObserver:
    """The observer when nobody watches: metrics are optional."""

    def stage_finished(self, operation: Operation, stage: Stage, seconds: float) -> None:
        pass

    def operation_finished(self, operation: Operation, seconds: float) -> None:
        pass


@dataclass
class Refusal:
    """What ``OperationRunner.refusals_audited`` records with a refusal."""

    vm_uuid: str = ""


@dataclass
class OperationHandle:
    """What a use case uses while it holds the VM: stage reports, details, the outcome text.

    Each stage and each ``record`` is one commit carrying the stage and all of the details
    (``details`` holds them whole, so nothing is read before a write); facts ``note``d are
    written with the next of those, or with the operation's end."""

    operation: Operation
    catalogue: Catalogue
    progress: ProgressCallback
    outcome: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    observer: OperationObserver = field(default_factory=QuietObserver)
    # The record of the snapshot this operation made: added with the operation's end, in the
    # same transaction (a crash before it leaves the name in ``details`` for the recovery).
    made: Snapshot | None = None
    _current: tuple[Stage, float] | None = None
    _unwritten: bool = False

    async def stage(self, stage: Stage, **details: object) -> None:
        """Record ``stage`` with ``details`` (and any noted before) in one write, then report
        it. A failing progress display never fails the operation."""
        self.details.update(details)
        await self.catalogue.record_progress(
            self.operation.id,
            stage=stage,
            details=self.details if details or self._unwritten else None,
        )
        self._unwritten = False
        await self.entered(stage)

    async def entered(self, stage: Stage) -> None:
        """Report a stage already recorded (the first, written with the operation itself)."""
        self.end_stage()
        self._current = (stage, time.monotonic())
        try:
            await self.progress(stage)
        except Exception:
            logger.exception("progress callback failed for operation %s", self.operation.id)

    def end_stage(self) -> None:
        """Tell the observer how long the current stage took (a stage lasts until the next)."""
        if self._current is not None:
            stage, began = self._current
            self._current = None
            try:
                self.observer.stage_finished(self.operation, stage, time.monotonic() - began)
            except Exception:
                logger.exception("operation observer failed for operation %s", self.operation.id)

    async def record(self, **details: object) -> None:
        """Persist facts needed to reconcile this operation if the process dies, now."""
        self.details.update(details)
        await self.catalogue.record_progress(self.operation.id, details=self.details)
        self._unwritten = False

    def note(self, **details: object) -> None:
        """Keep facts a recovery needs only once the next stage begins (that stage's write
        carries them, before its libvirt call); the operation's end writes any left."""
        self.details.update(details)
        self._unwritten = True

    @property
    def unwritten(self) -> dict[str, object] | None:
        """All of the details, when some were noted since the last write; else None."""
        return self.details if self._unwritten else None


class OperationRunner:
    """Creates operations and runs them under the VM lock."""

    def __init__(
        self,
        catalogue: Catalogue,
        clock: Clock,
        owner: str,
        observer: OperationObserver | None = None,
        slots: Callable[[Vm], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._clock = clock
        self.owner = owner
        self.observer: OperationObserver = observer or QuietObserver()
        # One of the VM's host's operation slots, held for the whole operation where hosts
        # limit how many run at once (``Fleet.slot``); None: no limit.
        self._slots = slots

    def new_operation(
        self,
        kind: OperationKind,
        actor: Actor,
        *,
        vm_uuid: str,
        vm_name: str,
        label: str | None = None,
        details: Mapping[str, object] | None = None,
    ) -> Operation:
        """A fresh RUNNING operation record (not yet stored)."""
        return Operation(
            id=uuid.uuid4().hex,
            kind=kind,
            vm_uuid=vm_uuid,
            vm_name=vm_name,
            requested_by=actor.user,
            via=actor.via,
            status=OperationStatus.RUNNING,
            started_at=self._clock.now(),
            snapshot_label=label,
            details=dict(details or {}),
            channel=actor.channel,
            team=actor.team,
        )

    async def reject(
        self,
        kind: OperationKind,
        actor: Actor,
        vm_name: str,
        error: CoreError,
        *,
        vm_uuid: str = "",
    ) -> None:
        """Audit a request refused before it could take the VM's lock."""
        await self._record_refusal(
            self.new_operation(kind, actor, vm_uuid=vm_uuid, vm_name=vm_name), error
        )

    async def record_summary(
        self,
        kind: OperationKind,
        actor: Actor,
        vm_name: str,
        *,
        ok: bool,
        outcome: str,
        vm_uuid: str = "",
    ) -> None:
        """The final record of a request that ran other operations (a confirmed prune of a VM:
        each deletion is an operation of its own): one terminal row however little it did."""
        op = self.new_operation(kind, actor, vm_uuid=vm_uuid, vm_name=vm_name)
        ended = replace(
            op,
            status=OperationStatus.SUCCEEDED if ok else OperationStatus.FAILED,
            finished_at=self._clock.now(),
            outcome=outcome,
        )
        await self._catalogue.record_finished(ended)
        self.ended(ended)

    async def _record_refusal(self, op: Operation, error: CoreError) -> None:
        ended = replace(
            op, status=OperationStatus.REJECTED, finished_at=self._clock.now(), error=str(error)
        )
        await self._catalogue.record_finished(ended)
        self.ended(ended)

    def ended(self, op: Operation) -> None:
        """The operation's last word outside the catalogue: its log line and its metrics. Also
        for operations ended elsewhere (reconciled after a crash, unlocked by hand)."""
        finished = op.finished_at or self._clock.now()
        seconds = max(0.0, (finished - op.started_at).total_seconds())
        fields = {
            "operation_id": op.id,
            "kind": op.kind.value,
            "vm": op.vm_name,
            "status": op.status.value,
            "outcome": op.outcome if op.error is None else op.error,
            "duration_seconds": round(seconds, 3),
            "requested_by": op.requested_by,
            "via": op.via,
        }
        ended_log.info(
            "operation %s %s %s: %s (%.1f s)",
            op.id,
            op.kind.value,
            op.vm_name,
            op.status.value,
            seconds,
            extra={"snapbot": fields},
        )
        try:
            self.observer.operation_finished(op, seconds)
        except Exception:
            logger.exception("operation observer failed for operation %s", op.id)

    @asynccontextmanager
    async def refusals_audited(
        self, kind: OperationKind, actor: Actor, vm_name: str
    ) -> AsyncIterator[Refusal]:
        """Audit a ``CoreError`` raised in the block (checks made before the VM's lock is
        taken: the name, the VM, the right) as a refused ``kind`` request, and re-raise it. Set
        ``vm_uuid`` on what it yields once the VM is known."""
        refusal = Refusal()
        try:
            yield refusal
        except CoreError as exc:
            await self.reject(kind, actor, vm_name, exc, vm_uuid=refusal.vm_uuid)
            raise

    @asynccontextmanager
    async def run(
        self,
        kind: OperationKind,
        vm: Vm,
        actor: Actor,
        progress: ProgressCallback,
        *,
        label: str | None = None,
        details: Mapping[str, object] | None = None,
        stage: Stage | None = None,
    ) -> AsyncIterator[OperationHandle]:
        """Hold ``vm`` for the duration of the block; ``stage``, the first, is recorded with
        the operation (no write of its own) and reported once the VM is held.

        A ``CoreError`` that is not a hypervisor failure means nothing was attempted: the
        operation ends REJECTED. A hypervisor failure ends it FAILED. Cancellation (the process
        is stopping) leaves it RUNNING on purpose: the libvirt call may still be going on in its
        thread, and only the start-up reconciliation can tell what really happened.
        """
        op = self.new_operation(
            kind, actor, vm_uuid=vm.uuid, vm_name=vm.name, label=label, details=details
        )
        async with contextlib.AsyncExitStack() as slot:
            if self._slots is not None:
                # Taken before the VM's lock: a request waiting for its host never holds it.
                try:
                    await slot.enter_async_context(self._slots(vm))
                except CoreError as exc:
                    await self._record_refusal(op, exc)
                    raise
            async with self._locked(op, progress, stage) as handle:
                yield handle

    @asynccontextmanager
    async def _locked(
        self, op: Operation, progress: ProgressCallback, stage: Stage | None
    ) -> AsyncIterator[OperationHandle]:
        try:
            await self._catalogue.begin_operation(replace(op, stage=stage), self.owner)
        except CoreError as exc:
            await self._record_refusal(op, exc)
            raise
        handle = OperationHandle(
            op, self._catalogue, progress, details=dict(op.details), observer=self.observer
        )
        beat = asyncio.create_task(self._heartbeat(op.id), name=f"heartbeat-{op.id}")
        try:
            if stage is not None:
                await handle.entered(stage)
            yield handle
        except HypervisorError as exc:
            await self._finish(handle, OperationStatus.FAILED, error=str(exc))
            raise
        except CoreError as exc:
            await self._finish(handle, OperationStatus.REJECTED, error=str(exc))
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._finish(handle, OperationStatus.FAILED, error=f"internal error: {exc!r}")
            raise
        else:
            await self._finish(handle, OperationStatus.SUCCEEDED, outcome=handle.outcome)
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _finish(
        self,
        handle: OperationHandle,
        status: OperationStatus,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> None:
        op = handle.operation
        handle.end_stage()
        # Shielded: the record must become terminal even if the caller is being cancelled.
        # One transaction: the details noted since the last stage, the record of the snapshot
        # the operation made, the terminal status and the lock's release.
        await asyncio.shield(
            self._catalogue.end_operation(
                op.id,
                status,
                outcome=outcome,
                error=error,
                details=handle.unwritten,
                made=handle.made,
            )
        )
        self.ended(
            replace(op, status=status, finished_at=self._clock.now(), outcome=outcome, error=error)
        )

    async def _heartbeat(self, op_id: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._catalogue.heartbeat(op_id)
            except Exception:
                logger.exception("heartbeat failed for operation %s", op_id)
