"""The event store: parsed events from logs.parsed.> into PostgreSQL `events`, in batches."""
