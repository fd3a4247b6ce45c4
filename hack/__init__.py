"""Repository tooling, run from a checkout (``python -m hack.generate``, ``make manifests``):
what generates the CRDs, the install bundle, the chart's CRDs and RBAC, the monitoring
manifests and the CRD reference from their sources. Never part of the product, which never
imports it."""
