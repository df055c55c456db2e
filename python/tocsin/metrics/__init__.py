"""What other tools scrape: the per-check metrics of an organisation in the Prometheus
text exposition format (`exposition`) and as OTLP JSON (`otlp`), the server's own
operational metrics (`operational`), and status and uptime badges as SVG (`badges`).
Pure rendering over plain values: the API gathers the values (api/metrics.py,
api/badges.py); see docs/metrics.md."""
