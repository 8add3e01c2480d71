"""What the service tells operators about itself: logs and the per-request middleware."""
