"""The catalogue: snapshot metadata, the operations audit trail and VM locks, in tortoise-orm."""
