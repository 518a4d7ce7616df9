"""Use cases over the ports: snapshots, operations under lock, reconciliation."""
