"""Providers for sites that are Kubernetes clusters."""
