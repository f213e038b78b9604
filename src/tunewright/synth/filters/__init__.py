"""Quality filters for generated rows; each reports what it would remove and why."""
