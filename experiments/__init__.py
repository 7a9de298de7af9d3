"""What users touch: experiment specs, the runner, results, reports and the CLI."""
