"""Lifeboat: a multi-cloud resilience controller for Kubernetes."""

__version__ = "0.1.0"
