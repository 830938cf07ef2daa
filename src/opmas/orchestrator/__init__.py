"""The orchestrator: findings stored and correlated into incidents; playbooks applied."""
