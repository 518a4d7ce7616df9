"""Whether another client works on a VM, judged from libvirt's control state: a momentary
monitor query (another request listing the same VM) must not refuse a snapshot as busy, while
a real job must be answered busy at once."""

from __future__ import annotations

import libvirt

from core.adapters.libvirt.hypervisor import OCCUPIED_BUSY_AFTER_MS, control_busy

OK = libvirt.VIR_DOMAIN_CONTROL_OK
JOB = libvirt.VIR_DOMAIN_CONTROL_JOB
OCCUPIED = libvirt.VIR_DOMAIN_CONTROL_OCCUPIED
ERROR = libvirt.VIR_DOMAIN_CONTROL_ERROR


class Scripted:
    """controlInfo answers in turn (the last one repeats), and a clock the sleeps advance."""

    def __init__(self, *answers: list[int]) -> None:
        self.answers = list(answers)
        self.reads = 0
        self.slept = 0.0

    def read(self) -> list[int]:
        self.reads += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def sleep(self, seconds: float) -> None:
        self.slept += seconds


def test_a_query_that_ends_at_once_is_not_busy() -> None:
    control = Scripted([OCCUPIED, 0, 3], [OK, 0, 0])
    assert control_busy(control.read, control.sleep) is False
    assert control.reads == 2
    assert control.slept <= 0.05


def test_an_async_job_is_busy_at_once() -> None:
    control = Scripted([JOB, 0, 0])
    assert control_busy(control.read, control.sleep) is True
    assert control.slept == 0


def test_a_monitor_command_that_lasts_is_busy_within_about_a_second() -> None:
    class Growing(Scripted):
        def read(self) -> list[int]:
            self.reads += 1
            return [OCCUPIED, 0, 200 + int(self.slept * 1000)]

    control = Growing()
    assert control_busy(control.read, control.sleep) is True
    assert control.slept <= (OCCUPIED_BUSY_AFTER_MS - 200) / 1000 + 0.01


def test_a_command_already_long_running_is_busy_without_waiting() -> None:
    control = Scripted([OCCUPIED, 0, OCCUPIED_BUSY_AFTER_MS + 5])
    assert control_busy(control.read, control.sleep) is True
    assert control.slept == 0


def test_short_queries_one_after_another_are_not_busy_and_the_wait_is_bounded() -> None:
    control = Scripted([OCCUPIED, 0, 10])
    assert control_busy(control.read, control.sleep) is False
    assert control.slept <= 2 * OCCUPIED_BUSY_AFTER_MS / 1000 + 0.06


def test_a_broken_monitor_is_busy() -> None:
    control = Scripted([ERROR, 0, 0])
    assert control_busy(control.read, control.sleep) is True
