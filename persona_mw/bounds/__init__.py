"""Tiered bounds: the policy engine, detectors and the relationship-seeking scorer."""
