"""The catalogue on tortoise-orm: one store per aggregate, each implementing its ports.

snapshots.py      snapshot records and their holds (``SnapshotStore``, ``HoldStore``)
operations.py     the operations audit trail and the per-VM locks, syncs' included
confirmations.py  confirmations, each claimed once
schedules.py      schedules and their runs (``ScheduleCatalogue``, ``ScheduleStore``, ``RunStore``)
leases.py         the scheduler's leadership lease, with its fencing token
clock.py          this host's clock and the database's
store.py          ``TortoiseCatalogue``: all of them in one object
db.py, models.py  opening the database, migrating it; the tables
"""
