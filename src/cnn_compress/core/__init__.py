"""The ground floor: errors, atomic writes, registries, config coercion, stage plumbing."""
