"""The HTTP API: health, readiness, metrics now; resource routes arrive with later issues."""
