"""Pipeline workers: parse, every agent's rules and the event store in one pass per line."""
