"""Scheduled snapshots and retention (its own issue); nothing runs from here yet."""
