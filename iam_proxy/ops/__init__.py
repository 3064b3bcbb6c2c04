"""Operations: Prometheus metrics, health and readiness on the admin listener."""
