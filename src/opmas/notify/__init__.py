"""The notifier: findings and actions sent to email, Slack and webhook channels, digested."""
