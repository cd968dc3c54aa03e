"""Pure planning: key mapping, filters, part sizes, the copy/skip diff and sharding (no Ray, no SDK)."""
