"""snapbot's core: the domain, its ports, the libvirt and database adapters, and the services."""
