"""The only layer that wires the others together: the daemon, its jobs, staff actions."""
