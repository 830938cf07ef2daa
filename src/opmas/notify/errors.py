"""The notifier's delivery failure, shared by every channel protocol."""

from __future__ import annotations

from opmas.errors import OpmasError


class DeliveryError(OpmasError):
    """A message could not be delivered on a channel; the text says why and never holds
    a secret (SMTP password, Slack URL, webhook secret)."""


class ChannelCrash(DeliveryError):
    """A channel raised something unexpected (a bug, a value the protocol library refused):
    its notifications fail at once instead of being retried. The text has the secret masked."""
