"""Governance: bias, explainability, audit, lineage and documentation."""
