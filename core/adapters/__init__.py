"""Adapters that implement the core's ports with real technology."""
