"""snapbot's migrations and then one the database refuses halfway (test_migrations.py)."""
