"""Scheduled snapshots and retention, run inside the bot's event loop.

timing.py    when a schedule fires; what is due, missed or to catch up at a moment
runs.py      one run: snapshot each VM, prune by policy, measure, build the report
service.py   apscheduler 3 jobs rebuilt from the database, the leader lease, hold reminders
"""
