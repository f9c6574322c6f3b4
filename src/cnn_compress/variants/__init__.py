"""Resolve params.yaml into named variants, one config file per variant and stage."""
