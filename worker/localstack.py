"""Moved to worker.harness.servers; this name stays for the modules that still import it here."""

from worker.harness.servers import free_port

__all__ = ["free_port"]
