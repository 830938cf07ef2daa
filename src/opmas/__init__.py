"""OPMAS: watches fleets of OpenWRT routers through their logs and proposes the fix."""

__version__ = "0.1.0"
