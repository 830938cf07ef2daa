"""Ingest: syslog (UDP, TCP, TLS) and the HTTP log API -> RawBatch on logs.raw.

`framing` splits byte streams into lines, `syslog_udp` / `syslog_tcp` receive, `batcher`
publishes batches, `service` is the `ingest` component; `http_body`, `idempotency` and
`tokens` serve POST /api/v1/logs.
"""
