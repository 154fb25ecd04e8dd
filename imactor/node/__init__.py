"""Processes: the node supervisor (master) and the workers it runs."""
