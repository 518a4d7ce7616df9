"""libvirt adapter. ``_sync`` modules hold the only code that imports ``libvirt``."""
