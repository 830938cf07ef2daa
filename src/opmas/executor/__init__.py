"""The executor: runs approved actions on routers over SSH, as signed webhooks or notifications."""
