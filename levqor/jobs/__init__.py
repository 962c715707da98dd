"""The durable job queue: runs, workers, retries, dead letters, the scheduler."""
