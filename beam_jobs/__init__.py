"""Pipeline entry points (console scripts and `python -m beam_jobs.<job>`)."""
