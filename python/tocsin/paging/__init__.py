"""Paging: reaching a person. Contact methods and notification rules (`contacts`), the
delivery of pages through the outbox (`pager`), escalation policies stepped on the
engine's timing wheel (`escalation`, `policies`), and the incidents that other tools
send in through integration keys (`inbound_formats`, `inbound`)."""
