"""OPMAS: watches fleets of OpenWRT routers through their logs and proposes the fix."""

import warnings

__version__ = "0.1.0"

# asyncssh still names DSA key types at import; cryptography 48+ warns about DSA on every
# such access. OPMAS never uses DSA keys, so the warning only adds noise for users.
warnings.filterwarnings("ignore", message="DSA is deprecated", module=r"asyncssh(\.|$)")
