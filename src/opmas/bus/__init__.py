"""The NATS JetStream bus: `connect` (Bus), `subjects` (every name), `streams` (create, report),
`publish` (PubAck-confirmed publishes), `consume` (PullConsumer: ack, retry, dead-letter).
"""
