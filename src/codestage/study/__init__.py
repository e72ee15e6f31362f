"""Study orchestration: the runner (steps, caching, resume) and the report."""
