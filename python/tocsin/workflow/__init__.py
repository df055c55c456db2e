"""The organisation's work around incidents: playbooks and their runs, war rooms,
postmortems, lifecycle watches and SLO alerts (docs/architecture.md)."""
